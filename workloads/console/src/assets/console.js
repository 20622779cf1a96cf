// io360 moderation console. Talks only to the admin API on this origin, with the admin token
// the moderator typed in (kept in sessionStorage: gone when the tab closes). Every piece of
// text from the API is put in the page with textContent, never as HTML.
'use strict';

const TOKEN = 'io360.admin.token';
const ACTOR = 'io360.admin.actor';
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && problem.title) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN) || ''}` };
  const actor = sessionStorage.getItem(ACTOR);
  if (actor) headers['X-IO360-Actor'] = actor;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!res.ok) {
    if (res.status === 401 || (res.status === 403 && data && /admin-token/.test(data.type || ''))) {
      logout('The admin token was refused; log in again.');
    }
    throw new ApiError(res.status, data);
  }
  return data;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function say(message, isError = false) {
  const s = $('#status');
  s.textContent = message;
  s.classList.toggle('error', isError);
}

function when(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

// ---- login ----

function logout(message) {
  sessionStorage.removeItem(TOKEN);
  $('#app').hidden = true;
  $('#logout').hidden = true;
  $('#who').textContent = '';
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  $('#token').focus();
}

async function login(ev) {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN, $('#token').value.trim());
  const actor = $('#actor').value.trim();
  if (actor) sessionStorage.setItem(ACTOR, actor); else sessionStorage.removeItem(ACTOR);
  try {
    await api('GET', '/api/v1/admin/queue?limit=1');
  } catch (e) {
    logout(e.status === 403 || e.status === 401 ? 'That admin token is not valid.' : e.message);
    return;
  }
  $('#token').value = '';
  enter();
}

function enter() {
  $('#login').hidden = true;
  $('#app').hidden = false;
  $('#logout').hidden = false;
  const actor = sessionStorage.getItem(ACTOR);
  $('#who').textContent = actor ? `acting as ${actor}` : 'acting as admin';
  select('queue');
}

// ---- tabs ----

const loaders = {};

function select(name, focus = false) {
  for (const tab of $$('[role=tab]')) {
    const on = tab.id === `tab-${name}`;
    tab.setAttribute('aria-selected', on);
    tab.tabIndex = on ? 0 : -1;
    $(`#${tab.getAttribute('aria-controls')}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  say('');
  if (loaders[name]) loaders[name]();
}

function tabKeys(ev) {
  const tabs = $$('[role=tab]');
  const i = tabs.indexOf(document.activeElement);
  if (i < 0) return;
  let j = null;
  if (ev.key === 'ArrowRight') j = (i + 1) % tabs.length;
  if (ev.key === 'ArrowLeft') j = (i - 1 + tabs.length) % tabs.length;
  if (ev.key === 'Home') j = 0;
  if (ev.key === 'End') j = tabs.length - 1;
  if (j !== null) {
    ev.preventDefault();
    select(tabs[j].id.slice(4), true);
  }
}

// ---- comments ----

async function act(action, id) {
  const calls = {
    approve: () => api('POST', `/api/v1/admin/comments/${id}/approve`),
    reject: () => api('POST', `/api/v1/admin/comments/${id}/reject`),
    delete: () => api('DELETE', `/api/v1/admin/comments/${id}`),
    ban: () => api('POST', '/api/v1/admin/bans', { comment: id }),
  };
  return calls[action]();
}

const pastTense = { approve: 'approved', reject: 'rejected', delete: 'deleted', ban: 'banned the author of' };

function commentItem(stored, actions, selectable) {
  const c = stored.comment;
  const li = el('li', { tabindex: 0, 'data-id': c.id });
  const head = el('div', { class: 'meta' });
  if (selectable) {
    head.append(el('input', { type: 'checkbox', class: 'pick', 'aria-label': `Select comment ${c.id}` }), ' ');
  }
  head.append(`#${c.id} by ${c.author || 'anonymous'}`);
  if (stored.email) head.append(` <${stored.email}>`);
  head.append(` on ${c.thread}, ${when(c.created)}, ${c.status}`);
  if (stored.remote) head.append(`, from ${stored.remote}`);
  li.append(head, el('div', { class: 'text', text: c.text || '(deleted)' }));
  const bar = el('div', { class: 'actions' });
  for (const a of actions) {
    bar.append(el('button', {
      type: 'button', 'data-action': a, text: a[0].toUpperCase() + a.slice(1) + (a === 'ban' ? ' author' : ''),
      onclick: () => runOne(a, c.id, li),
    }));
  }
  li.append(bar);
  return li;
}

async function runOne(action, id, li) {
  try {
    await act(action, id);
    say(`${pastTense[action]} comment ${id}`);
    if (action !== 'ban' && li && li.closest('#queue-list')) {
      const next = li.nextElementSibling || li.previousElementSibling;
      li.remove();
      if (next) next.focus();
    }
    if (action === 'delete' && li && li.closest('#search-list')) {
      $('.text', li).textContent = '(deleted)';
    }
  } catch (e) {
    say(`Could not ${action} comment ${id}: ${e.message}`, true);
  }
}

async function loadQueue() {
  const list = $('#queue-list');
  try {
    const data = await api('GET', '/api/v1/admin/queue?limit=200');
    list.replaceChildren(...data.comments.map((c) => commentItem(c, ['approve', 'reject', 'delete', 'ban'], true)));
    $('#queue-all').checked = false;
    if (!data.comments.length) list.append(el('li', { class: 'meta', text: 'Nothing is waiting for moderation.' }));
  } catch (e) {
    say(`Could not load the queue: ${e.message}`, true);
  }
}
loaders.queue = loadQueue;

async function bulk(action) {
  const picked = $$('#queue-list li').filter((li) => $('.pick', li) && $('.pick', li).checked);
  if (!picked.length) { say('Select comments first (x or the checkboxes).', true); return; }
  let ok = 0;
  const failed = [];
  for (const li of picked) {
    const id = Number(li.dataset.id);
    try { await act(action, id); ok += 1; li.remove(); } catch (e) { failed.push(`${id} (${e.message})`); }
  }
  say(`${pastTense[action]} ${ok} comment(s)` + (failed.length ? `; failed: ${failed.join(', ')}` : ''), failed.length > 0);
}

function queueKeys(ev) {
  const li = ev.target.closest('li[data-id]');
  if (!li || ev.target.tagName === 'BUTTON' || ev.target.tagName === 'INPUT') return;
  const key = ev.key;
  if (key === 'j' || key === 'ArrowDown') { ev.preventDefault(); (li.nextElementSibling || li).focus(); }
  else if (key === 'k' || key === 'ArrowUp') { ev.preventDefault(); (li.previousElementSibling || li).focus(); }
  else if (key === 'x' || key === ' ') { ev.preventDefault(); const p = $('.pick', li); if (p) p.checked = !p.checked; }
  else if (key === 'a') runOne('approve', Number(li.dataset.id), li);
  else if (key === 'r') runOne('reject', Number(li.dataset.id), li);
  else if (key === 'd') runOne('delete', Number(li.dataset.id), li);
}

// ---- search ----

let searchParams = null;
let searchBefore = null;

async function search(more = false) {
  if (!more) { searchParams = new URLSearchParams(); searchBefore = null; }
  const form = $('#search-form');
  if (!more) {
    for (const [k, v] of new FormData(form)) if (v.trim()) searchParams.set(k, v.trim());
  }
  const q = new URLSearchParams(searchParams);
  q.set('limit', '50');
  if (searchBefore) q.set('before', String(searchBefore));
  try {
    const data = await api('GET', `/api/v1/admin/comments?${q}`);
    const items = data.comments.map((c) => commentItem(c, c.comment.status === 'deleted' ? [] : ['delete', 'ban'], false));
    if (more) $('#search-list').append(...items); else $('#search-list').replaceChildren(...items);
    searchBefore = data.comments.length ? data.comments[data.comments.length - 1].comment.id : null;
    $('#search-more').hidden = data.comments.length < 50;
    say(`${$('#search-list').children.length} comment(s) found`);
  } catch (e) {
    say(`Search failed: ${e.message}`, true);
  }
}

// ---- threads ----

// Enter in the thread field looks the thread up; the buttons close or reopen it.
async function threadAction(ev) {
  ev.preventDefault();
  const action = ev.submitter ? ev.submitter.value : 'show';
  const thread = new FormData(ev.target).get('thread').trim();
  const q = `?thread=${encodeURIComponent(thread)}`;
  try {
    const meta = action === 'show'
      ? await api('GET', `/api/v1/admin/threads${q}`)
      : await api('POST', `/api/v1/admin/threads/${action}${q}`);
    const page = meta.title ? `“${meta.title}” (${meta.thread})` : meta.thread;
    const state = action === 'show' ? 'is' : 'is now';
    $('#thread-result').textContent =
      `${page} ${state} ${meta.closed ? 'closed' : 'open'} (${meta.count} comments).`;
    if (action !== 'show') say(`${action === 'close' ? 'Closed' : 'Reopened'} ${thread}`);
  } catch (e) {
    say(`Could not ${action === 'show' ? 'look up' : action} ${thread}: ${e.message}`, true);
  }
}

// ---- suspension ----

async function loadSuspension() {
  try {
    const s = await api('GET', '/api/v1/admin/suspension');
    $('#suspension-state').textContent = s.suspended
      ? `Comments are suspended (${s.reason || 'Manual'}) since ${when(s.since)}${s.message ? `: ${s.message}` : ''}.`
      : 'Comments are live.';
    $('#suspension-operator').hidden = !s.operator;
    for (const b of $$('#suspension-form button, #suspension-form input')) b.disabled = !!s.operator;
  } catch (e) {
    say(`Could not read the suspension: ${e.message}`, true);
  }
  loadTimeline();
}
loaders.suspension = loadSuspension;

async function suspend(ev) {
  ev.preventDefault();
  const suspended = (ev.submitter ? ev.submitter.value : 'suspend') === 'suspend';
  const reason = new FormData(ev.target).get('reason').trim();
  try {
    await api('PUT', '/api/v1/admin/suspension', reason ? { suspended, reason } : { suspended });
    say(suspended ? 'Comments suspended.' : 'Comments resumed.');
  } catch (e) {
    say(`Could not change the suspension: ${e.message}`, true);
  }
  loadSuspension();
}

async function loadTimeline() {
  const list = $('#timeline');
  try {
    const page = await api('GET', '/api/v1/admin/events?kind=comments.suspended,comments.resumed&limit=200');
    const events = page.events.slice().reverse();
    const spans = [];
    for (const e of events) {
      if (e.kind === 'comments.suspended') {
        if (!spans.length || spans[spans.length - 1].end !== undefined) spans.push({ start: e });
      } else if (spans.length && spans[spans.length - 1].end === undefined) {
        spans[spans.length - 1].end = e;
      }
    }
    list.replaceChildren(...spans.reverse().map(({ start, end }) => {
      const from = new Date(start.time);
      const li = el('li', {});
      const why = [start.reason, start.detail].filter(Boolean).join(': ');
      if (end) {
        const mins = Math.max(0, Math.round((new Date(end.time) - from) / 60000));
        li.textContent = `${when(start.time)} → ${when(end.time)} (${mins} min), ${why} — suspended by ${start.actor}, resumed by ${end.actor}`;
      } else {
        li.append(el('span', { class: 'open', text: `${when(start.time)} → now` }), `, ${why} — suspended by ${start.actor}`);
      }
      return li;
    }));
    if (!spans.length) list.append(el('li', { class: 'meta', text: 'No suspensions recorded.' }));
  } catch (e) {
    list.replaceChildren(el('li', { class: 'error', text: e.status === 503 ? 'The audit trail is unavailable right now.' : e.message }));
  }
}

// ---- bans ----

async function loadBans() {
  try {
    const b = await api('GET', '/api/v1/admin/bans');
    $('#ban-authors').replaceChildren(...b.authors.map((a) => el('li', {},
      `${a.label}, since ${when(a.since)} `,
      el('button', { type: 'button', text: 'Lift', onclick: () => unban('author', a.key) }))));
    $('#ban-ranges').replaceChildren(...b.ranges.map((r) => el('li', {},
      `${r.cidr}, since ${when(r.since)} `,
      el('button', { type: 'button', text: 'Lift', onclick: () => unban('range', r.cidr) }))));
  } catch (e) {
    say(`Could not load the bans: ${e.message}`, true);
  }
}
loaders.bans = loadBans;

async function ban(ev, field) {
  ev.preventDefault();
  const value = new FormData(ev.target).get(field).trim();
  try {
    await api('POST', '/api/v1/admin/bans', { [field]: value });
    ev.target.reset();
    say(`Banned ${field === 'range' ? value : 'that author'}.`);
  } catch (e) {
    say(`Could not ban: ${e.message}`, true);
  }
  loadBans();
}

async function unban(field, value) {
  try {
    await api('DELETE', `/api/v1/admin/bans?${field}=${encodeURIComponent(value)}`);
    say('Ban lifted.');
  } catch (e) {
    say(`Could not lift the ban: ${e.message}`, true);
  }
  loadBans();
}

// ---- audit trail ----

let auditParams = null;
let auditNext = null;

function auditRow(e) {
  const details = [e.reason, e.detail, e.count ? `×${e.count}` : null, e.address ? `from ${e.address}` : null]
    .filter(Boolean).join(', ');
  return el('tr', {},
    el('td', { text: when(e.time) }), el('td', { text: e.kind }), el('td', { text: e.actor }),
    el('td', { text: e.thread || '' }), el('td', { text: e.comment ? `#${e.comment}` : '' }),
    el('td', { text: details }));
}

async function loadAudit(more = false) {
  if (!more || !auditParams) {
    auditParams = new URLSearchParams();
    auditNext = null;
    for (const [k, v] of new FormData($('#audit-form'))) {
      const val = v.trim();
      if (!val) continue;
      auditParams.set(k, (k === 'since' || k === 'until') ? new Date(val).toISOString() : val);
    }
  }
  const q = new URLSearchParams(auditParams);
  q.set('limit', '100');
  if (more && auditNext) q.set('before', auditNext);
  const notice = $('#audit-unavailable');
  try {
    const page = await api('GET', `/api/v1/admin/events?${q}`);
    notice.hidden = true;
    const rows = page.events.map(auditRow);
    if (more) $('#audit-rows').append(...rows); else $('#audit-rows').replaceChildren(...rows);
    auditNext = page.next || null;
    $('#audit-more').hidden = !auditNext;
  } catch (e) {
    notice.hidden = false;
    notice.textContent = e.status === 503
      ? 'The audit trail is unavailable right now (the logger is down). Moderation still works; try again shortly.'
      : `Could not read the audit trail: ${e.message}`;
    if (!more) $('#audit-rows').replaceChildren();
    $('#audit-more').hidden = true;
  }
}
loaders.audit = () => loadAudit(false);

// ---- webhooks ----

const KINDS = ['comment.created', 'comment.held', 'comment.approved', 'comment.edited',
  'comment.deleted', 'thread.closed', 'thread.reopened'];
let webhookShown = null;

function eventBoxes(kinds) {
  const box = $('#webhook-events');
  if ($$('input', box).length) return;
  for (const k of kinds) {
    box.append(el('label', {}, el('input', { type: 'checkbox', name: 'events', value: k }), ` ${k}`));
  }
}

async function loadWebhooks() {
  const off = $('#webhooks-off');
  try {
    const data = await api('GET', '/api/v1/admin/webhooks');
    off.hidden = true;
    eventBoxes(data.events || KINDS);
    $('#webhook-list').replaceChildren(...data.webhooks.map((w) => el('li', { 'data-id': w.id },
      `${w.url} — ${w.events.join(', ')} — ${w.waiting} waiting `,
      el('button', { type: 'button', text: 'Delivery log', onclick: () => loadDeliveries(w.id) }), ' ',
      el('button', { type: 'button', text: 'Remove', onclick: () => removeWebhook(w.id, w.url) }))));
    if (!data.webhooks.length) $('#webhook-list').append(el('li', { class: 'meta', text: 'No webhooks yet.' }));
    if (webhookShown && data.webhooks.some((w) => w.id === webhookShown)) loadDeliveries(webhookShown);
    else if (data.webhooks.length) loadDeliveries(data.webhooks[0].id);
    else $('#deliveries-rows').replaceChildren();
  } catch (e) {
    off.hidden = false;
    off.textContent = e.status === 404 && e.problem.type && /notifications-off/.test(e.problem.type)
      ? 'This site runs no notify tier: set IO360_WEBHOOKS=true (or a mail server) to use webhooks.'
      : `Could not load the webhooks: ${e.message}`;
    eventBoxes(KINDS);
  }
}
loaders.webhooks = loadWebhooks;

function deliveryRow(a) {
  return el('tr', { class: a.outcome },
    el('td', { text: when(new Date(a.at).toISOString()) }), el('td', { text: a.event }),
    el('td', { text: a.delivery }), el('td', { text: String(a.attempt) }),
    el('td', { text: a.outcome }), el('td', { text: a.status ? String(a.status) : '' }),
    el('td', { text: `${a.latency_ms} ms` }), el('td', { text: a.error || '' }));
}

async function loadDeliveries(id) {
  webhookShown = id;
  try {
    const log = await api('GET', `/api/v1/admin/webhooks/${encodeURIComponent(id)}/deliveries`);
    $('#deliveries-title').textContent = `Delivery log: ${log.webhook.url}`;
    $('#deliveries-rows').replaceChildren(...log.attempts.map(deliveryRow));
    if (!log.attempts.length) {
      $('#deliveries-rows').append(el('tr', {}, el('td', { colspan: 8, class: 'meta', text: 'No attempts yet.' })));
    }
  } catch (e) {
    say(`Could not read the delivery log: ${e.message}`, true);
  }
}

async function addWebhook(ev) {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const body = { url: form.get('url').trim(), events: form.getAll('events') };
  const secret = form.get('secret').trim();
  if (secret) body.secret = secret;
  try {
    const w = await api('POST', '/api/v1/admin/webhooks', body);
    ev.target.reset();
    const shown = $('#webhook-secret');
    shown.hidden = false;
    shown.textContent = `Added ${w.url}. Its signing secret, shown this once: ${w.secret}`;
    webhookShown = w.id;
    say(`Added a webhook for ${w.url}`);
  } catch (e) {
    say(`Could not add the webhook: ${e.message}`, true);
  }
  loadWebhooks();
}

async function removeWebhook(id, url) {
  try {
    await api('DELETE', `/api/v1/admin/webhooks/${encodeURIComponent(id)}`);
    say(`Removed the webhook for ${url}`);
    if (webhookShown === id) webhookShown = null;
  } catch (e) {
    say(`Could not remove the webhook: ${e.message}`, true);
  }
  loadWebhooks();
}

// ---- wiring ----

// ---- import ----

function importLine(i) {
  if (!i) return 'No import since logic started.';
  const s = i.summary;
  const mib = (i.received / 1048576).toFixed(1);
  const counts = `${s.records} records, ${mib} MiB received: ${s.threads} threads, ${s.comments} comments, ` +
    `${s.imported} imported, ${s.skipped} already imported`;
  if (i.running) return `Importing ${i.format} (by ${i.actor}, since ${when(i.started)}): ${counts}`;
  if (i.error) return `The ${i.format} import by ${i.actor} stopped: ${i.error}`;
  return `The ${i.format} import by ${i.actor} finished in ${s.elapsed} s: ${counts}, ` +
    `${s.orphans} without their parent, ${s.closed} threads closed, ${s.titles ?? 0} page titles kept.`;
}

let importTimer = null;

async function loadImport() {
  clearTimeout(importTimer);
  try {
    const { import: i } = await api('GET', '/api/v1/admin/import');
    $('#import-progress').textContent = importLine(i);
    if (i && i.running && !$('#panel-import').hidden) importTimer = setTimeout(loadImport, 1000);
  } catch (e) {
    $('#import-progress').textContent = `Cannot read the import's progress: ${e.message}`;
  }
}
loaders.import = loadImport;

async function upload(ev) {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const file = form.get('file');
  const from = form.get('from');
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN) || ''}` };
  const actor = sessionStorage.getItem(ACTOR);
  if (actor) headers['X-IO360-Actor'] = actor;
  say(`Uploading ${file.name}…`);
  importTimer = setTimeout(loadImport, 1000);
  try {
    // The file is the body, sent as the browser reads it.
    const res = await fetch(`/api/v1/admin/import?from=${encodeURIComponent(from)}`, {
      method: 'POST', headers, body: file,
    });
    const data = await res.json().catch(() => null);
    if (!res.ok) throw new ApiError(res.status, data);
    say(`Imported ${file.name}: ${data.imported} comments written, ${data.skipped} already there.`);
  } catch (e) {
    say(`The import of ${file.name} failed: ${e.message}`, true);
  }
  loadImport();
}

document.addEventListener('DOMContentLoaded', () => {
  $('#login-form').addEventListener('submit', login);
  $('#logout').addEventListener('click', () => logout('Logged out.'));
  for (const tab of $$('[role=tab]')) tab.addEventListener('click', () => select(tab.id.slice(4)));
  $('nav[role=tablist]').addEventListener('keydown', tabKeys);
  $('#queue-refresh').addEventListener('click', loadQueue);
  $('#queue-all').addEventListener('change', (ev) => { for (const p of $$('#queue-list .pick')) p.checked = ev.target.checked; });
  for (const b of $$('[data-bulk]')) b.addEventListener('click', () => bulk(b.dataset.bulk));
  $('#queue-list').addEventListener('keydown', queueKeys);
  $('#search-form').addEventListener('submit', (ev) => { ev.preventDefault(); search(false); });
  $('#search-more').addEventListener('click', () => search(true));
  $('#thread-form').addEventListener('submit', threadAction);
  $('#suspension-form').addEventListener('submit', suspend);
  $('#ban-range-form').addEventListener('submit', (ev) => ban(ev, 'range'));
  $('#ban-email-form').addEventListener('submit', (ev) => ban(ev, 'email'));
  $('#audit-form').addEventListener('submit', (ev) => { ev.preventDefault(); loadAudit(false); });
  $('#audit-more').addEventListener('click', () => loadAudit(true));
  $('#import-form').addEventListener('submit', upload);
  $('#webhook-form').addEventListener('submit', addWebhook);
  const actor = sessionStorage.getItem(ACTOR);
  if (actor) $('#actor').value = actor;
  if (sessionStorage.getItem(TOKEN)) enter(); else $('#token').focus();
});
