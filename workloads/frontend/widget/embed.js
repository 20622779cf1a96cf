/*
 * io360 comment widget.
 *
 * One script tag and one marked element:
 *   <section id="io360-thread" data-thread="/posts/hello"></section>
 *   <script src="https://comments.example.org/embed.js" defer></script>
 *
 * On a page that lists posts, mark where each post's comment count goes, and the same script
 * keeps every count live over one connection (see `Counts`):
 *   <a href="/posts/hello/">Hello</a> <span data-io360-count="/posts/hello/"></span>
 *
 * The widget takes over the comments the server already rendered into the element (so the
 * page does not flash), catches up with what changed since, then long-polls for new events.
 * Options go in `window.io360Config` before the script: `api` (base URL of the comment
 * server; default: where this script came from), `strings` (replacement texts for another
 * language), `css: false` (bring your own stylesheet),
 * `liveCounts: false` (fill counts once, without a live connection), `notifications: false`
 * (never offer "Email me replies", even on a site that sends email).
 */
(() => {
  'use strict';

  const script = document.currentScript;
  const config = Object.assign({}, window.io360Config || {});
  const scriptOrigin = script && script.src ? new URL(script.src, location.href).origin : location.origin;
  const base = String(config.api || (script && script.dataset.api) || scriptOrigin).replace(/\/+$/, '');

  const STRINGS = {
    count0: 'No comments yet',
    count1: '1 comment',
    countN: '{n} comments',
    more: 'Show {n} more comments',
    loading: 'Loading…',
    name: 'Name (optional)',
    comment: 'Comment',
    hint: 'Markdown works: *italic*, **bold**, [link](https://example.org), `code`.',
    leaveEmpty: 'Leave this field empty',
    post: 'Post comment',
    posting: 'Posting…',
    preview: 'Preview',
    write: 'Write',
    previewEmpty: 'Nothing to preview yet.',
    reply: 'Reply',
    replyingTo: 'Replying to {name}',
    cancelReply: 'Cancel reply',
    edit: 'Edit',
    save: 'Save',
    cancel: 'Cancel',
    delete: 'Delete',
    confirmDelete: 'Delete this comment? This cannot be undone.',
    deleted: 'This comment was deleted.',
    deletedAuthor: 'deleted',
    anonymous: 'Anonymous',
    edited: '(edited)',
    upvote: 'Upvote',
    downvote: 'Downvote',
    alreadyVoted: 'You already voted on this comment.',
    held: 'Held for moderation: only you can see it until a moderator approves it.',
    paused: 'Comments are paused for now. Existing comments stay readable, and your draft is kept in this browser.',
    closed: 'Comments are closed.',
    rateLimited: 'You are commenting too fast. Try again in {s} seconds.',
    tooLong: 'Your comment is too long: {title}',
    empty: 'Write something first.',
    editWindowClosed: 'The time to edit or delete this comment is over.',
    rejected: 'Your comment was refused: {title}',
    unavailable: 'Comments are unavailable right now. Try again in a moment; your draft is kept.',
    network: 'Could not reach the comment server. Your draft is kept.',
    newComment: 'New comment from {name}',
    posted: 'Your comment was posted.',
    notifyLabel: 'Email me',
    notifyNone: 'nothing',
    notifyReplies: 'replies to my comment',
    notifyThread: 'every new comment here',
    email: 'Email (never shown)',
    emailNeeded: 'Give the address to email first.',
    notifyPending: 'Check your inbox: a message asks you to confirm.',
    failed: 'Something went wrong: {title}',
  };
  const S = Object.assign({}, STRINGS, config.strings || {});
  const t = (key, vars) =>
    String(S[key] == null ? key : S[key]).replace(/\{(\w+)\}/g, (_, k) => (vars && vars[k] != null ? vars[k] : ''));

  /* Storage may be blocked (privacy modes): the widget then simply forgets. */
  const storage = {
    key: (k) => `io360:${base}:${k}`,
    get(k, fallback) {
      try {
        const v = localStorage.getItem(this.key(k));
        return v == null ? fallback : JSON.parse(v);
      } catch (_) {
        return fallback;
      }
    },
    set(k, v) {
      try {
        localStorage.setItem(this.key(k), JSON.stringify(v));
      } catch (_) { /* storage full or blocked */ }
    },
    del(k) {
      try {
        localStorage.removeItem(this.key(k));
      } catch (_) { /* blocked */ }
    },
  };

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  /* Exponential backoff with full jitter: a random wait up to the capped exponential. */
  const backoff = (attempt, baseMs, capMs) => Math.random() * Math.min(capMs, baseMs * 2 ** attempt);
  const slug = (problem) => String((problem && problem.type) || '').split('/').pop();
  const newKey = () =>
    window.crypto && crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(36).slice(2)}`;

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids) if (kid != null) el.append(kid);
    return el;
  }

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && problem.title) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
    }
  }

  async function api(method, path, body, headers) {
    const init = { method, headers: Object.assign({}, headers), credentials: 'omit', mode: 'cors' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(base + path, init);
    let data = null;
    try {
      data = await res.json();
    } catch (_) { /* empty or not JSON */ }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }

  function describe(err) {
    if (!(err instanceof ApiError)) return t('network');
    const p = err.problem;
    switch (slug(p)) {
      case 'rate-limited':
        return t('rateLimited', { s: p.retryAfter || 60 });
      case 'comments-suspended':
        return t('paused');
      case 'thread-closed':
        return t('closed');
      case 'edit-window-closed':
      case 'edit-token-invalid':
        return t('editWindowClosed');
      case 'already-voted':
        return t('alreadyVoted');
      case 'spam-rejected':
      case 'banned-word':
      case 'too-many-links':
        return t('rejected', { title: p.title || '' });
      case 'invalid-field':
        if (p.field === 'text' && /at most/.test(p.title || '')) return t('tooLong', { title: p.title });
        if (p.field === 'text' && /empty/.test(p.title || '')) return t('empty');
        return p.title || t('failed', { title: err.status });
      case 'tier-unavailable':
      case 'overloaded':
        return t('unavailable');
      default:
        return err.status >= 500 ? t('unavailable') : t('failed', { title: p.title || err.status });
    }
  }

  let instances = 0;
  /* Top-level comments shown at first, and added by each "show more". */
  const PAGE = 200;

  class Thread {
    constructor(root) {
      this.n = ++instances;
      this.root = root;
      const snap = root.querySelector('.io360-snapshot');
      // NFC, as the API requires: one thread for one name, however the page encoded it.
      this.thread = String(root.dataset.thread || (snap && snap.dataset.thread) || location.pathname).normalize('NFC');
      this.comments = new Map();
      this.seq = 0;
      /* Long threads: top-level comments shown, how many the snapshot left out, and the
         position after which every comment arrived live (and is shown whatever the limit). */
      this.limit = PAGE;
      this.rest = 0;
      this.total = 0;
      this.liveAfter = Infinity;
      this.closed = false;
      this.suspended = false;
      this.pauseNote = '';
      this.replyTo = null;
      this.editing = null;
      this.idempotencyKey = null;
      this.stopped = false;
      this.started = false;
      this.arrived = [];
      this.poller = null;
      this.own = storage.get(`own:${this.thread}`, {});
      this.votes = storage.get(`votes:${this.thread}`, {});
      const hydrated = snap && snap.dataset.state === 'ready' && this.hydrate(snap);
      if (snap && snap.dataset.suspended === 'true') {
        this.suspended = true;
        const note = snap.querySelector('.io360-paused');
        this.pauseNote = note ? note.textContent : '';
      }
      this.build();
      this.render();
      this.start(hydrated);
    }

    /* Reads the server's snapshot back into comments, so the first render shows the same. */
    hydrate(snap) {
      this.seq = Number(snap.dataset.head) || 0;
      this.closed = snap.dataset.closed === 'true';
      const more = snap.querySelector('.io360-more a');
      const count = snap.querySelector('.io360-count');
      this.rest = more ? Number(more.dataset.rest) || 0 : 0;
      this.total = count ? Number(count.dataset.count) || 0 : 0;
      for (const li of snap.querySelectorAll('li.io360-comment')) {
        const art = li.querySelector(':scope > article');
        if (!art) continue;
        const who = art.querySelector('.io360-author');
        const deleted = li.classList.contains('io360-deleted');
        const votes = art.querySelector('.io360-votes');
        const time = art.querySelector('time');
        const body = art.querySelector('.io360-body');
        this.comments.set(Number(li.dataset.id), {
          id: Number(li.dataset.id),
          seq: Number(li.dataset.seq),
          parent: li.dataset.parent ? Number(li.dataset.parent) : null,
          author: !who || who.classList.contains('io360-anonymous') ? null : who.textContent,
          website: who && who.tagName === 'A' ? who.getAttribute('href') : null,
          html: deleted || !body ? '' : body.innerHTML,
          created: time ? time.getAttribute('datetime') : '',
          modified: null,
          status: deleted ? 'deleted' : 'approved',
          votes: { up: Number(votes && votes.dataset.up) || 0, down: Number(votes && votes.dataset.down) || 0 },
        });
      }
      return true;
    }

    build() {
      const id = (k) => `io360-${k}-${this.n}`;
      this.live = h('div', { class: 'io360-sr', 'aria-live': 'polite', role: 'status' });
      this.pausedEl = h('p', { class: 'io360-paused', role: 'status', hidden: true });
      this.closedEl = h('p', { class: 'io360-closed', hidden: true, text: t('closed') });
      this.countEl = h('h2', { class: 'io360-count' });
      this.list = h('ol', { class: 'io360-list' });

      this.authorInput = h('input', { id: id('author'), name: 'author', autocomplete: 'name', maxlength: 100 });
      this.text = h('textarea', { id: id('text'), name: 'text', rows: 4, required: true, 'aria-describedby': id('hint') });
      this.honeypot = h('input', { id: id('homepage'), name: 'homepage', tabindex: -1, autocomplete: 'off' });
      this.previewEl = h('div', { class: 'io360-preview io360-body', hidden: true, 'aria-live': 'polite' });
      this.previewBtn = h('button', { type: 'button', class: 'io360-secondary', 'aria-pressed': 'false', onclick: () => this.togglePreview() }, t('preview'));
      this.submitBtn = h('button', { type: 'submit', class: 'io360-primary' }, t('post'));
      this.formMsg = h('p', { class: 'io360-message', role: 'alert' });
      this.replyingEl = h('p', { class: 'io360-replying', hidden: true });
      // Shown once the server says it sends email (the status answer's `notifications`).
      this.notifySelect = h('select', { id: id('notify'), name: 'notify' },
        h('option', { value: '' }, t('notifyNone')),
        h('option', { value: 'replies' }, t('notifyReplies')),
        h('option', { value: 'thread' }, t('notifyThread')));
      this.emailInput = h('input', { id: id('email'), name: 'email', type: 'email', autocomplete: 'email', maxlength: 254 });
      this.emailField = h('div', { class: 'io360-field', hidden: true }, h('label', { for: id('email') }, t('email')), this.emailInput);
      this.notifyEl = h('div', { class: 'io360-notify', hidden: true },
        h('div', { class: 'io360-field' }, h('label', { for: id('notify') }, t('notifyLabel')), this.notifySelect),
        this.emailField);
      this.notifySelect.addEventListener('change', () => {
        this.emailField.hidden = !this.notifySelect.value;
        if (this.notifySelect.value && !this.emailInput.value) this.emailInput.focus();
      });
      this.form = h(
        'form',
        { class: 'io360-form', novalidate: true, onsubmit: (e) => { e.preventDefault(); this.post(); } },
        this.replyingEl,
        h('div', { class: 'io360-field' }, h('label', { for: id('author') }, t('name')), this.authorInput),
        h('div', { class: 'io360-hp', 'aria-hidden': 'true' }, h('label', { for: id('homepage') }, t('leaveEmpty')), this.honeypot),
        h('div', { class: 'io360-field' }, h('label', { for: id('text') }, t('comment')), this.text,
          h('small', { id: id('hint'), class: 'io360-hint' }, t('hint'))),
        this.notifyEl,
        this.previewEl,
        h('div', { class: 'io360-buttons' }, this.previewBtn, this.submitBtn),
        this.formMsg,
      );
      const draft = storage.get(`draft:${this.thread}`, null);
      this.authorInput.value = storage.get('author', '') || '';
      if (draft && draft.text) this.text.value = draft.text;
      const saveDraft = () => {
        if (this.text.value) storage.set(`draft:${this.thread}`, { text: this.text.value, parent: this.replyTo });
        else storage.del(`draft:${this.thread}`);
        if (this.previewEl.hidden === false) this.togglePreview(false);
      };
      this.text.addEventListener('input', saveDraft);
      this.authorInput.addEventListener('change', () => storage.set('author', this.authorInput.value.trim()));
      this.text.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); this.post(); }
        if (e.key === 'Escape' && this.replyTo != null) { e.preventDefault(); this.setReply(null); }
      });
      this.formHome = h('div', { class: 'io360-form-home' }, this.form);

      this.moreBtn = h('button', { type: 'button', class: 'io360-secondary io360-more', hidden: true, onclick: () => this.showMore() });
      this.el = h('div', { class: 'io360' }, this.live, this.pausedEl, this.closedEl, this.countEl, this.formHome, this.list, this.moreBtn);
      this.root.replaceChildren(this.el);
      if (draft && draft.parent != null) this.replyTo = draft.parent;
    }

    /* Comments shown: approved ones, own held ones, and tombstones above visible replies. */
    visibleTree() {
      const kids = new Map();
      const all = [...this.comments.values()].sort((a, b) => a.id - b.id);
      for (const c of all) {
        const p = c.parent != null && this.comments.has(c.parent) ? c.parent : null;
        if (!kids.has(p)) kids.set(p, []);
        kids.get(p).push(c);
      }
      const visible = (c) =>
        c.status === 'approved' ||
        (c.status === 'pending' && this.own[c.id]) ||
        (c.status === 'deleted' && (kids.get(c.id) || []).some(visible));
      return { kids, visible };
    }

    render() {
      const active = document.activeElement;
      const activeEditing = this.editing && active && active.classList && active.classList.contains('io360-edit-text');
      const sel = activeEditing ? [active.selectionStart, active.selectionEnd] : null;
      const formFocused = this.form.contains(active) ? active : null;

      const { kids, visible } = this.visibleTree();
      let approved = [...this.comments.values()].filter((c) => c.status === 'approved').length;
      if (this.rest) approved = Math.max(approved, this.total);
      this.countEl.textContent = approved === 0 ? t('count0') : approved === 1 ? t('count1') : t('countN', { n: approved });
      this.closedEl.hidden = !this.closed;
      this.pausedEl.hidden = !this.suspended;
      this.pausedEl.textContent = this.pauseNote || t('paused');
      this.submitBtn.disabled = this.suspended || this.closed || this.busy === true;
      this.form.hidden = this.closed;

      const renderList = (parent) => {
        const out = [];
        for (const c of kids.get(parent) || []) {
          if (!visible(c)) continue;
          const li = this.renderComment(c);
          const sub = renderList(c.id);
          if (sub.length) li.append(h('ol', { class: 'io360-replies' }, ...sub));
          out.push(li);
        }
        return out;
      };
      // The first `limit` top-level comments, and every one that arrived while reading.
      const top = (kids.get(null) || []).filter(visible);
      const shown = top.filter((c, i) => i < this.limit || c.seq > this.liveAfter);
      const hidden = this.rest + top.length - shown.length;
      kids.set(null, shown);
      this.list.replaceChildren(...renderList(null));
      this.moreBtn.hidden = hidden <= 0;
      if (!this.moreBusy) this.moreBtn.textContent = t('more', { n: hidden });

      // The one form lives at the top, or under the comment being replied to.
      const target = this.replyTo != null && this.list.querySelector(`#io360-c-${this.replyTo} > article`);
      if (target) {
        if (this.form.parentNode !== target.parentNode || this.form.previousSibling !== target) target.after(this.form);
        const c = this.comments.get(this.replyTo);
        this.replyingEl.replaceChildren(
          t('replyingTo', { name: (c && c.author) || t('anonymous') }), ' ',
          h('button', { type: 'button', class: 'io360-link', onclick: () => this.setReply(null) }, t('cancelReply')),
        );
        this.replyingEl.hidden = false;
      } else {
        if (this.replyTo != null && !this.comments.has(this.replyTo)) this.replyTo = null;
        if (this.form.parentNode !== this.formHome) this.formHome.append(this.form);
        this.replyingEl.hidden = true;
      }
      if (this.arrived.length) {
        this.live.textContent = this.arrived.map((c) => t('newComment', { name: c.author || t('anonymous') })).join('. ');
        this.arrived = [];
      }
      if (formFocused && document.activeElement !== formFocused) formFocused.focus();
      if (activeEditing) {
        const box = this.list.querySelector('.io360-edit-text');
        if (box) {
          box.focus();
          box.setSelectionRange(sel[0], sel[1]);
        }
      }
    }

    renderComment(c) {
      const own = this.own[c.id];
      const mine = own && Date.now() < own.until;
      const deleted = c.status === 'deleted';
      const classes = ['io360-comment'];
      if (deleted) classes.push('io360-deleted');
      if (c.status === 'pending') classes.push('io360-pending');
      if (own) classes.push('io360-own');
      const li = h('li', { class: classes.join(' '), id: `io360-c-${c.id}`, 'data-id': c.id, 'data-seq': c.seq, 'data-parent': c.parent == null ? '' : c.parent, tabindex: -1 });
      const name = deleted ? t('deletedAuthor') : c.author && c.author.trim() ? c.author : t('anonymous');
      const anon = deleted || !(c.author && c.author.trim());
      const authorClass = anon ? 'io360-author io360-anonymous' : 'io360-author';
      const author = !deleted && c.website && /^https?:\/\//i.test(c.website.trim())
        ? h('a', { class: authorClass, href: c.website, rel: 'nofollow ugc noopener' }, name)
        : h('span', { class: authorClass }, name);
      const header = h('header', { class: 'io360-meta' }, author, ' ',
        h('a', { class: 'io360-permalink', href: `#io360-c-${c.id}` }, h('time', { datetime: c.created }, String(c.created || '').slice(0, 10))));
      if (c.modified && !deleted) header.append(' ', h('span', { class: 'io360-edited' }, t('edited')));
      const art = h('article', { class: 'io360-card' }, header);
      if (this.editing && this.editing.id === c.id) {
        art.append(this.renderEditor(c));
      } else {
        const body = h('div', { class: 'io360-body' });
        if (deleted) body.append(h('p', {}, h('em', {}, t('deleted'))));
        else body.innerHTML = c.html; // sanitized by the server when the comment was written
        art.append(body);
      }
      if (c.status === 'pending') art.append(h('p', { class: 'io360-note' }, t('held')));
      if (!deleted) {
        const voted = this.votes[c.id];
        const footer = h('footer', { class: 'io360-actions' },
          h('button', { type: 'button', class: 'io360-vote io360-up', 'aria-pressed': String(voted === 1), 'aria-label': `${t('upvote')} (${c.votes.up})`, onclick: () => this.vote(c.id, 1) }, '▲ ', String(c.votes.up)),
          h('button', { type: 'button', class: 'io360-vote io360-down', 'aria-pressed': String(voted === -1), 'aria-label': `${t('downvote')} (${c.votes.down})`, onclick: () => this.vote(c.id, -1) }, '▼ ', String(c.votes.down)));
        if (!this.closed && c.status === 'approved') footer.append(h('button', { type: 'button', class: 'io360-link io360-reply', onclick: () => this.setReply(c.id) }, t('reply')));
        if (mine && !(this.editing && this.editing.id === c.id)) {
          footer.append(
            h('button', { type: 'button', class: 'io360-link io360-edit', onclick: () => this.startEdit(c.id) }, t('edit')),
            h('button', { type: 'button', class: 'io360-link io360-delete', onclick: () => this.remove(c.id) }, t('delete')));
        }
        art.append(footer);
      }
      const note = this.notes && this.notes.get(c.id);
      if (note) art.append(h('p', { class: 'io360-message', role: 'alert' }, note));
      li.append(art);
      return li;
    }

    renderEditor(c) {
      const box = h('textarea', { class: 'io360-edit-text', rows: 4, 'aria-label': t('edit') });
      box.value = this.editing.text;
      box.addEventListener('input', () => { this.editing.text = box.value; });
      box.addEventListener('keydown', (e) => {
        if (e.key === 'Escape') { e.preventDefault(); this.editing = null; this.render(); this.focusComment(c.id); }
        if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); this.saveEdit(c.id); }
      });
      return h('div', { class: 'io360-editor' }, box,
        h('div', { class: 'io360-buttons' },
          h('button', { type: 'button', class: 'io360-secondary', onclick: () => { this.editing = null; this.render(); this.focusComment(c.id); } }, t('cancel')),
          h('button', { type: 'button', class: 'io360-primary', onclick: () => this.saveEdit(c.id) }, t('save'))));
    }

    note(id, message) {
      if (!this.notes) this.notes = new Map();
      if (message) this.notes.set(id, message);
      else this.notes.delete(id);
      this.render();
    }

    focusComment(id) {
      const li = this.list.querySelector(`#io360-c-${id}`);
      if (li) li.focus({ preventScroll: false });
    }

    setReply(id) {
      this.replyTo = id;
      if (this.text.value) storage.set(`draft:${this.thread}`, { text: this.text.value, parent: id });
      this.render();
      this.text.focus();
    }

    upsert(c) {
      const prev = this.comments.get(c.id);
      if (prev && prev.seq > c.seq) return;
      this.comments.set(c.id, c);
      // Someone else's comment became visible: tell screen readers after the next render.
      if (c.status === 'approved' && !(prev && prev.status === 'approved') && !this.own[c.id] && this.started) {
        this.arrived.push(c);
      }
      const own = this.own[c.id];
      if (own && c.status !== 'pending' && own.pending) {
        own.pending = undefined;
        this.saveOwn();
      }
    }

    saveOwn() {
      const now = Date.now();
      for (const [id, o] of Object.entries(this.own)) if (o.until < now && !o.pending) delete this.own[id];
      storage.set(`own:${this.thread}`, this.own);
    }

    /* ---- reading ---- */

    async start(hydrated) {
      // Own held comments are not in public answers: show them from this browser's memory.
      for (const o of Object.values(this.own)) if (o.pending && !this.comments.has(o.pending.id)) this.comments.set(o.pending.id, o.pending);
      const status = this.checkStatus();
      try {
        await this.catchUp(hydrated ? this.seq : 0, !hydrated);
      } catch (_) { /* the snapshot, if any, stays; polling will retry */ }
      this.started = true;
      this.liveAfter = this.seq;
      this.render();
      await status;
      // Polled while paused too: longpoll answers the poll at once when comments resume.
      this.poll();
    }

    /* Shows the next top-level comments, loading the whole thread first when the snapshot
       held only its start. */
    async showMore() {
      if (this.moreBusy) return;
      this.moreBusy = true;
      this.moreBtn.textContent = t('loading');
      try {
        if (this.rest) {
          await this.catchUp(0, true);
          this.rest = 0;
        }
        this.limit += PAGE;
      } catch (_) { /* the button stays; a later click retries */ }
      this.moreBusy = false;
      this.render();
    }

    /* Loads every change after `after` (a whole reload when `reset`). */
    async catchUp(after, reset) {
      const thread = encodeURIComponent(this.thread);
      let from = after;
      const fresh = reset ? new Map() : null;
      for (;;) {
        const page = await api('GET', `/api/v1/comments?thread=${thread}&after=${from}&limit=1000`);
        for (const c of page.comments) {
          if (fresh) fresh.set(c.id, c);
          else this.upsert(c);
        }
        this.closed = !!page.closed;
        const last = page.comments.length ? page.comments[page.comments.length - 1].seq : page.head;
        if (last >= page.head || last <= from) {
          if (fresh) {
            for (const o of Object.values(this.own)) if (o.pending && !fresh.has(o.pending.id)) fresh.set(o.pending.id, o.pending);
            this.comments = fresh;
          }
          this.seq = Math.max(reset ? 0 : this.seq, page.head);
          return;
        }
        from = last;
      }
    }

    async checkStatus() {
      try {
        const asked = this.stateAt;
        const s = await api('GET', '/api/v1/status');
        // Learned something newer meanwhile (a live event, a refused post): this answer is older.
        if (asked === this.stateAt) this.setSuspended(!!s.suspended, s.message);
        if (s.notifications && config.notifications !== false) this.notifyEl.hidden = false;
      } catch (_) { /* unknown: assume the last known state */ }
    }

    setSuspended(on, message) {
      this.stateAt = (this.stateAt || 0) + 1;
      const was = this.suspended;
      this.suspended = on;
      this.pauseNote = on && message ? message : '';
      this.render();
      if (!on === !was) return;
      // The held poll said what this page believed: poll again saying what it knows now.
      if (this.poller) this.poller.abort();
      if (!this.started) return; // start() begins polling once the thread is loaded
      if (!on) this.catchUp(this.seq, false).catch(() => {}).then(() => this.render());
      this.poll();
    }

    /* While paused with no live connection (on Kubernetes longpoll is scaled to zero): only a
       status check now and then. */
    async watchSuspension() {
      if (this.watching) return;
      this.watching = true;
      for (let i = 0; this.suspended && !this.stopped; i++) {
        await sleep(5000 + backoff(Math.min(i, 3), 2500, 20000));
        await this.checkStatus();
      }
      this.watching = false;
    }

    async poll() {
      if (this.polling) return;
      this.polling = true;
      let failures = 0;
      const thread = encodeURIComponent(this.thread);
      let statusAt = Date.now();
      while (!this.stopped) {
        // A longpoll that cannot ask logic says nothing of suspensions: ask now and then.
        if (Date.now() - statusAt > 30000) {
          statusAt = Date.now();
          await this.checkStatus();
        }
        const paused = this.suspended;
        // `suspended` says what this page believes, so longpoll answers at once when it knows
        // otherwise (an older longpoll refuses the parameter: then it is left out).
        const state = this.stateParam === false ? '' : `&suspended=${paused ? 1 : 0}`;
        const ctrl = new AbortController();
        this.poller = ctrl;
        const timer = setTimeout(() => ctrl.abort(), 70000);
        try {
          const res = await fetch(`${base}/v1/poll?thread=${thread}&since=${this.seq}${state}`, { signal: ctrl.signal, credentials: 'omit', mode: 'cors' });
          clearTimeout(timer);
          if (res.status === 204) { failures = 0; continue; }
          let body = null;
          try { body = await res.json(); } catch (_) { /* not JSON */ }
          if (!res.ok) throw new ApiError(res.status, body);
          failures = 0;
          await this.apply((body && body.events) || []);
        } catch (err) {
          clearTimeout(timer);
          if (this.stopped) break;
          if (paused !== this.suspended) continue; // the state changed meanwhile: poll with it
          if (err instanceof ApiError && err.status === 400 && err.problem && err.problem.field === 'suspended') {
            this.stateParam = false;
            continue;
          }
          failures++;
          const noLive = err instanceof ApiError && slug(err.problem) === 'live-unavailable';
          // The live connection failed: comments may have been paused (on Kubernetes longpoll
          // stops then). Ask before waiting, so the form does not stay open for nothing.
          // (Without a live tier at all, the answer is the same each time: ask only once.)
          if (!noLive || failures === 1) await this.checkStatus();
          if (this.suspended) {
            this.watchSuspension();
            break;
          }
          if (noLive) {
            // No live tier here: keep up by reading changes from the API instead.
            await sleep(1000 + backoff(0, 500, 500));
          } else {
            await sleep(backoff(failures, 500, 30000));
          }
          try {
            await this.catchUp(this.seq, false);
            this.render();
          } catch (e) {
            if (e instanceof ApiError && slug(e.problem) === 'comments-suspended') this.setSuspended(true);
          }
        }
      }
      this.polling = false;
    }

    async apply(events) {
      let changed = false;
      for (const ev of events.slice().sort((a, b) => a.seq - b.seq)) {
        // The state of the whole site, not a change of the thread (its `seq` is our own).
        if (ev.kind === 'suspended' || ev.kind === 'resumed') {
          this.setSuspended(ev.kind === 'suspended', ev.message);
          continue;
        }
        if (ev.kind === 'reset') {
          await this.catchUp(0, true);
          this.render();
          return;
        }
        if (ev.seq <= this.seq) continue; // seen already
        this.seq = ev.seq;
        changed = true;
        if (ev.kind === 'closed') this.closed = true;
        else if (ev.kind === 'reopened') this.closed = false;
        if (ev.comment) this.upsert(ev.comment);
      }
      if (changed) this.render();
    }

    /* ---- writing ---- */

    async togglePreview(force) {
      const show = force === undefined ? this.previewEl.hidden : force;
      this.previewBtn.setAttribute('aria-pressed', String(show));
      this.previewBtn.textContent = show ? t('write') : t('preview');
      if (!show) {
        this.previewEl.hidden = true;
        return;
      }
      const text = this.text.value.trim();
      this.previewEl.hidden = false;
      if (!text) {
        this.previewEl.textContent = t('previewEmpty');
        return;
      }
      try {
        const r = await api('POST', '/api/v1/preview', { text });
        this.previewEl.innerHTML = r.html; // sanitized by the server exactly as a post would be
      } catch (err) {
        this.previewEl.textContent = describe(err);
      }
    }

    async post() {
      if (this.busy || this.suspended || this.closed) return;
      const text = this.text.value;
      if (!text.trim()) {
        this.formMsg.textContent = t('empty');
        this.text.focus();
        return;
      }
      const author = this.authorInput.value.trim();
      if (author) storage.set('author', author);
      const body = { text, title: document.title };
      if (author) body.author = author;
      if (this.replyTo != null) body.parent = this.replyTo;
      if (this.honeypot.value) body.homepage = this.honeypot.value;
      const notify = this.notifyEl.hidden ? '' : this.notifySelect.value;
      if (notify) {
        const email = this.emailInput.value.trim();
        if (!email) {
          this.formMsg.textContent = t('emailNeeded');
          this.emailInput.focus();
          return;
        }
        body.notify = notify;
        body.email = email;
      }
      // A retry of the same comment reuses its key; a changed comment is a new request.
      const sent = JSON.stringify(body);
      if (!this.idempotencyKey || this.idempotencyBody !== sent) {
        this.idempotencyKey = newKey();
        this.idempotencyBody = sent;
      }
      this.busy = true;
      this.submitBtn.textContent = t('posting');
      this.formMsg.textContent = '';
      this.render();
      try {
        const r = await api('POST', `/api/v1/comments?thread=${encodeURIComponent(this.thread)}`, body, { 'Idempotency-Key': this.idempotencyKey });
        const c = r.comment;
        this.own[c.id] = { token: r.editToken, until: Date.parse(r.editableUntil) || Date.now() + 600000, text };
        if (c.status === 'pending') this.own[c.id].pending = c;
        this.saveOwn();
        this.upsert(c);
        this.idempotencyKey = null;
        this.text.value = '';
        storage.del(`draft:${this.thread}`);
        this.replyTo = null;
        this.togglePreview(false);
        this.formMsg.textContent = (c.status === 'pending' ? t('held') : t('posted')) + (notify ? ` ${t('notifyPending')}` : '');
        this.notifySelect.value = '';
        this.emailField.hidden = true;
        this.busy = false;
        this.render();
        this.focusComment(c.id);
      } catch (err) {
        this.busy = false;
        if (err instanceof ApiError && err.status < 500 && err.status !== 429) this.idempotencyKey = null;
        this.formMsg.textContent = describe(err);
        if (err instanceof ApiError && slug(err.problem) === 'comments-suspended') this.setSuspended(true, err.problem.detail);
        if (err instanceof ApiError && slug(err.problem) === 'thread-closed') this.closed = true;
        this.render();
      } finally {
        this.busy = false;
        this.submitBtn.textContent = t('post');
        this.submitBtn.disabled = this.suspended || this.closed;
      }
    }

    startEdit(id) {
      const own = this.own[id];
      if (!own) return;
      this.editing = { id, text: own.text || '' };
      this.render();
      const box = this.list.querySelector('.io360-edit-text');
      if (box) box.focus();
    }

    async authorized(id, method, body) {
      const own = this.own[id];
      try {
        const r = await api(method, `/api/v1/comments/${id}`, body, { Authorization: `Bearer ${own && own.token}` });
        this.note(id, '');
        return r;
      } catch (err) {
        if (err instanceof ApiError && err.status === 403) {
          delete this.own[id];
          this.saveOwn();
          this.editing = null;
        }
        this.note(id, describe(err));
        return null;
      }
    }

    async saveEdit(id) {
      if (!this.editing || this.editing.id !== id) return;
      const text = this.editing.text;
      const r = await this.authorized(id, 'PATCH', { text });
      if (!r) return;
      this.own[id].text = text;
      this.saveOwn();
      this.editing = null;
      this.upsert(r.comment);
      this.render();
      this.focusComment(id);
    }

    async remove(id) {
      if (!window.confirm(t('confirmDelete'))) return;
      const r = await this.authorized(id, 'DELETE');
      if (!r) return;
      delete this.own[id];
      this.saveOwn();
      this.upsert(r.comment);
      this.render();
    }

    async vote(id, value) {
      // Pressed at once: the live update of the count can arrive before this answer, and it
      // should already show the reader's own vote. Undone if the vote is refused.
      const before = this.votes[id];
      this.votes[id] = value;
      this.render();
      try {
        const r = await api('POST', `/api/v1/comments/${id}/vote`, { value });
        storage.set(`votes:${this.thread}`, this.votes);
        this.upsert(r.comment);
        this.note(id, '');
      } catch (err) {
        // Already voted (from another page, say): the vote stands, the earlier one if known.
        const voted = err instanceof ApiError && slug(err.problem) === 'already-voted';
        if (before !== undefined) this.votes[id] = before;
        else if (!voted) delete this.votes[id];
        storage.set(`votes:${this.thread}`, this.votes);
        this.note(id, describe(err));
      }
    }
  }

  /*
   * Count mode: every element marked `data-io360-count="/thread"` shows that thread's number
   * of comments, kept live. However many threads a page lists, it holds one long poll per 100
   * threads (the most one poll may name), never one per thread. A poll first names each thread
   * at the highest position, so the answer is a reset carrying every thread's head; from then
   * on, a thread with events has its count read again (in one request for all such threads).
   * `io360Config.liveCounts = false` fills the counts once and keeps no connection.
   */
  const POLL_THREADS = 100;
  const FAR = 9007199254740991; // 2^53-1, beyond any thread's head: answered with a reset

  class Counts {
    constructor(elements) {
      this.byThread = new Map();
      for (const el of elements) {
        const thread = String(el.dataset.io360Count || '').normalize('NFC');
        if (!thread) continue;
        if (!this.byThread.has(thread)) this.byThread.set(thread, []);
        this.byThread.get(thread).push(el);
      }
      this.threads = [...this.byThread.keys()];
      this.stopped = false;
      this.start();
    }

    show(counts) {
      for (const [thread, n] of Object.entries(counts || {})) {
        for (const el of this.byThread.get(thread) || []) {
          el.textContent = n === 0 ? t('count0') : n === 1 ? t('count1') : t('countN', { n });
          el.dataset.count = String(n);
        }
      }
    }

    async refresh(threads) {
      for (let i = 0; i < threads.length; i += 1000) {
        const r = await api('POST', '/api/v1/counts', { threads: threads.slice(i, i + 1000) });
        this.show(r && r.counts);
      }
    }

    async start() {
      try {
        await this.refresh(this.threads);
      } catch (_) { /* the page's own text stays; the polls below read the counts again */ }
      if (config.liveCounts === false) return;
      for (let i = 0; i < this.threads.length; i += POLL_THREADS) this.follow(this.threads.slice(i, i + POLL_THREADS));
    }

    /* One long poll following up to 100 threads. */
    async follow(threads) {
      const since = new Map(threads.map((th) => [th, FAR]));
      let failures = 0;
      while (!this.stopped) {
        const query = threads.map((th) => `thread=${encodeURIComponent(th)}&since=${since.get(th)}`).join('&');
        const ctrl = new AbortController();
        const timer = setTimeout(() => ctrl.abort(), 70000);
        try {
          const res = await fetch(`${base}/v1/poll?${query}`, { signal: ctrl.signal, credentials: 'omit', mode: 'cors' });
          clearTimeout(timer);
          if (res.status === 204) { failures = 0; continue; }
          let body = null;
          try { body = await res.json(); } catch (_) { /* not JSON */ }
          if (!res.ok) throw new ApiError(res.status, body);
          failures = 0;
          const changed = new Set();
          for (const ev of (body && body.events) || []) {
            if (!since.has(ev.thread) || ev.kind === 'suspended' || ev.kind === 'resumed') continue;
            const before = since.get(ev.thread);
            if (ev.kind === 'reset' || before === FAR || ev.seq > before) {
              since.set(ev.thread, ev.seq);
              changed.add(ev.thread);
            }
          }
          if (changed.size) await this.refresh([...changed]).catch(() => {});
        } catch (err) {
          clearTimeout(timer);
          if (this.stopped) break;
          // Comments suspended or the live tier away: the counts stay as they are, and the
          // poll comes back after a growing, jittered wait.
          failures++;
          await sleep(1000 + backoff(failures, 1000, 60000));
        }
      }
    }
  }

  function addStylesheet() {
    if (config.css === false) return;
    const href = `${base}/embed.css`;
    for (const l of document.querySelectorAll('link[rel="stylesheet"]')) if (l.href === href) return;
    document.head.append(h('link', { rel: 'stylesheet', href }));
  }

  function boot() {
    const marked = [...document.querySelectorAll('[data-io360-count]')].filter((el) => !el.io360);
    if (marked.length) {
      const counts = new Counts(marked);
      for (const el of marked) el.io360 = counts;
    }
    const root = document.getElementById('io360-thread');
    if (!root || root.io360) return;
    addStylesheet();
    root.io360 = new Thread(root);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
