// The embed widget in headless Chromium against `io360 up` serving the demo site.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startUp, browser, api, sleep } from './harness.mjs';

let io;
const opened = [];

before(async () => {
  io = await startUp();
});

after(async () => {
  for (const b of opened) await b.close().catch(() => {});
  if (io) await io.stop();
});

async function open(path, opts) {
  const b = await browser(opts);
  opened.push(b);
  await b.page.goto(io.url + path);
  await b.page.waitForSelector('#io360-thread .io360-form');
  return b;
}

async function post(page, text, name) {
  if (name !== undefined) await page.fill('#io360-thread input[name=author]', name);
  await page.fill('#io360-thread textarea[name=text]', text);
  await page.click('#io360-thread button[type=submit]');
}

test('one browser posts, the other sees it live within 2 s', async () => {
  const a = await open('/posts/hello/');
  const b = await open('/posts/hello/');
  // Let b's live request get under way before a posts.
  await sleep(500);
  const text = `Live hello ${Date.now()}`;
  await post(a.page, text, 'Ann');
  await a.page.waitForSelector(`#io360-thread .io360-body:has-text("${text}")`, { timeout: 5000 });
  const seenAt = Date.now();
  await b.page.waitForSelector(`#io360-thread .io360-body:has-text("${text}")`, { timeout: 2000 });
  assert.ok(Date.now() - seenAt <= 2000);
  // The live region tells screen readers.
  const live = await b.page.textContent('#io360-thread [aria-live=polite].io360-sr');
  assert.match(live, /New comment from Ann/);
});

test('the snapshot is in the page before any script runs, and the widget takes it over', async () => {
  const text = `Snapshot me ${Date.now()}`;
  const r = await api(io.url, 'POST', '/api/v1/comments?thread=%2Fposts%2Falways-up%2F', { text, author: 'Sam' });
  assert.equal(r.status, 201);
  // The frontend refreshes snapshots in the background; give it a moment.
  let html = '';
  for (let i = 0; i < 50 && !html.includes(text); i++) {
    await fetch(`${io.url}/posts/always-up/`);
    await sleep(200);
    html = await (await fetch(`${io.url}/posts/always-up/`)).text();
  }
  assert.ok(html.includes(text), 'the server-rendered page carries the comment');
  const b = await browser();
  opened.push(b);
  await b.context.route('**/embed.js', (route) => route.abort());
  await b.page.goto(`${io.url}/posts/always-up/`);
  assert.ok(await b.page.isVisible(`.io360-snapshot .io360-body:has-text("${text}")`), 'readable without the widget');
  await b.context.unroute('**/embed.js');
  const c = await open('/posts/always-up/');
  await c.page.waitForSelector(`.io360 .io360-body:has-text("${text}")`);
  assert.equal(await c.page.locator('.io360-snapshot').count(), 0, 'the widget replaced the snapshot');
});

test('reply, edit, delete and vote', async () => {
  const a = await open('/posts/hello/');
  const parentText = `Parent ${Date.now()}`;
  await post(a.page, parentText, 'Pat');
  const parent = a.page.locator('li.io360-comment', { has: a.page.locator(`.io360-body:has-text("${parentText}")`) }).first();
  await parent.waitFor();
  const parentId = await parent.getAttribute('data-id');

  // Reply: the form moves under the comment, keyboard focus goes to the text.
  await parent.locator(':scope > article .io360-reply').click();
  assert.equal(await a.page.evaluate(() => document.activeElement.name), 'text');
  await a.page.waitForSelector(`#io360-c-${parentId} > .io360-form`);
  const replyText = `Reply ${Date.now()}`;
  await post(a.page, replyText);
  const reply = a.page.locator(`#io360-c-${parentId} .io360-replies li.io360-comment`, { has: a.page.locator(`.io360-body:has-text("${replyText}")`) });
  await reply.waitFor();
  const replyId = await reply.getAttribute('data-id');
  const fromApi = await api(io.url, 'GET', '/api/v1/comments?thread=%2Fposts%2Fhello%2F');
  assert.equal(fromApi.json.comments.find((c) => String(c.id) === replyId).parent, Number(parentId));

  // Edit own comment inside the window.
  await reply.locator(':scope > article .io360-edit').click();
  await a.page.fill('.io360-edit-text', `${replyText} (fixed)`);
  await a.page.click('.io360-editor .io360-primary');
  await a.page.waitForSelector(`#io360-c-${replyId} .io360-body:has-text("(fixed)")`);
  await a.page.waitForSelector(`#io360-c-${replyId} .io360-edited`);

  // Vote: once counts, twice is refused with a clear message.
  const up = a.page.locator(`#io360-c-${parentId} > article .io360-up`);
  await up.click();
  await a.page.waitForFunction((id) => document.querySelector(`#io360-c-${id} > article .io360-up`).textContent.includes('1'), parentId);
  assert.equal(await up.getAttribute('aria-pressed'), 'true');
  await up.click();
  await a.page.waitForSelector(`#io360-c-${parentId} > article .io360-message:has-text("already voted")`);

  // Another reader sees none of the author controls.
  const b = await open('/posts/hello/');
  await b.page.waitForSelector(`#io360-c-${replyId}`);
  assert.equal(await b.page.locator(`#io360-c-${replyId} .io360-edit`).count(), 0);

  // Delete: the reply goes; the parent stays.
  await a.page.click(`#io360-c-${replyId} .io360-delete`);
  await a.page.waitForSelector(`#io360-c-${replyId}`, { state: 'detached' });
  await b.page.waitForSelector(`#io360-c-${replyId}`, { state: 'detached', timeout: 5000 });
  assert.ok(await a.page.isVisible(`#io360-c-${parentId}`));
});

test('markdown preview shows the server rendering', async () => {
  const a = await open('/posts/hello/');
  await a.page.fill('#io360-thread textarea[name=text]', 'some **bold** move');
  await a.page.click('#io360-thread .io360-form .io360-secondary');
  await a.page.waitForSelector('#io360-thread .io360-preview strong:has-text("bold")');
});

test('suspension: paused state, no polling loop, draft kept and restored', async () => {
  const a = await open('/posts/hello/');
  const draft = `Unsent draft ${Date.now()}`;
  await a.page.fill('#io360-thread textarea[name=text]', draft);
  const set = (suspended) =>
    api(io.url, 'PUT', '/api/v1/admin/suspension', { suspended, reason: 'maintenance' }, { authorization: `Bearer ${io.adminToken}` });
  assert.equal((await set(true)).status, 200);
  try {
    // Sending the draft meets the suspension. The page may have learnt of it first through
    // its held poll and disabled the button, so the form is submitted directly rather than
    // by a click that would wait for the button.
    await a.page.$eval('#io360-thread .io360-form', (f) => f.requestSubmit());
    await a.page.waitForSelector('#io360-thread .io360-paused:not([hidden])');
    assert.ok(await a.page.isDisabled('#io360-thread button[type=submit]'));
    assert.equal(await a.page.inputValue('#io360-thread textarea[name=text]'), draft);

    // While paused, one held poll waits for the resumption: no polling loop.
    let polls = 0;
    a.page.on('request', (r) => { if (r.url().includes('/v1/poll')) polls++; });
    await sleep(2500);
    assert.ok(polls <= 1, `${polls} polls in 2.5 s while paused`);

    // A reload starts paused (the page says so) and restores the draft.
    await sleep(3500); // the frontend reads the status every 3 s
    await a.page.reload();
    await a.page.waitForSelector('#io360-thread .io360-paused:not([hidden])');
    assert.match(await (await fetch(`${io.url}/posts/hello/`)).text(), /data-suspended="true"/);
    assert.equal(await a.page.inputValue('#io360-thread textarea[name=text]'), draft);
  } finally {
    assert.equal((await set(false)).status, 200);
  }
  // Back: the widget notices by itself and lets the draft go out.
  await a.page.waitForSelector('#io360-thread .io360-paused', { state: 'hidden', timeout: 30000 });
  await a.page.click('#io360-thread button[type=submit]');
  await a.page.waitForSelector(`#io360-thread .io360-body:has-text("${draft}")`);
});

test('an open page learns of a suspension and a resumption within 5 s, its draft kept', async () => {
  const a = await open('/posts/hello/');
  const draft = `Typed while it paused ${Date.now()}`;
  await a.page.fill('#io360-thread textarea[name=text]', draft);
  // Let the page's held poll get under way: the news must come through it.
  await sleep(1000);
  const set = (suspended) =>
    api(io.url, 'PUT', '/api/v1/admin/suspension', { suspended, reason: 'maintenance' }, { authorization: `Bearer ${io.adminToken}` });
  let resumed = false;
  assert.equal((await set(true)).status, 200);
  try {
    const at = Date.now();
    await a.page.waitForSelector('#io360-thread .io360-paused:not([hidden])', { timeout: 5000 });
    assert.ok(Date.now() - at <= 5000);
    assert.ok(await a.page.isDisabled('#io360-thread button[type=submit]'));
    assert.equal(await a.page.inputValue('#io360-thread textarea[name=text]'), draft);
    assert.match(await a.page.textContent('#io360-thread .io360-paused'), /maintenance/);

    assert.equal((await set(false)).status, 200);
    resumed = true;
    const back = Date.now();
    await a.page.waitForSelector('#io360-thread .io360-paused', { state: 'hidden', timeout: 5000 });
    assert.ok(Date.now() - back <= 5000);
  } finally {
    if (!resumed) await set(false);
  }
  assert.equal(await a.page.inputValue('#io360-thread textarea[name=text]'), draft);
  await a.page.click('#io360-thread button[type=submit]');
  await a.page.waitForSelector(`#io360-thread .io360-body:has-text("${draft}")`, { timeout: 5000 });
  // Live delivery is back too: a comment from elsewhere shows up.
  const other = `After the pause ${Date.now()}`;
  await sleep(500);
  const r = await api(io.url, 'POST', '/api/v1/comments?thread=%2Fposts%2Fhello%2F', { text: other, author: 'Lee' });
  assert.equal(r.status, 201, r.text);
  await a.page.waitForSelector(`#io360-thread .io360-body:has-text("${other}")`, { timeout: 5000 });
});

test('XSS payloads posted as comments fire no dialog and run no script', async () => {
  const payloads = [
    '<script>window.__xss=1;alert(1)</script>',
    '<img src=x onerror="window.__xss=1;alert(1)">',
    '[click](javascript:window.__xss=1;alert(1))',
    '<svg onload="window.__xss=1;alert(1)"></svg>',
    '<a href="javascript:alert(1)">x</a>',
    '<iframe src="javascript:alert(1)"></iframe>',
    '<details open ontoggle="window.__xss=1;alert(1)">x</details>',
    '![x](x" onerror="window.__xss=1;alert(1))',
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '<style>body{background:url("javascript:alert(1)")}</style>',
    '"><script>alert(1)</script>',
    '<scr<script>ipt>alert(1)</script>',
  ];
  const thread = '/posts/always-up/';
  const path = `/api/v1/comments?thread=${encodeURIComponent(thread)}`;
  for (const text of payloads) {
    const r = await api(io.url, 'POST', path, {
      text,
      author: '"><img src=x onerror="window.__xss=1;alert(1)">',
      website: 'https://example.org/"><script>window.__xss=1;alert(1)</script>',
    });
    assert.equal(r.status, 201, `posting ${text}: ${r.text}`);
  }
  const bad = await api(io.url, 'POST', path, { text: 'site', website: 'javascript:alert(1)' });
  assert.equal(bad.status, 400, 'a javascript: website is refused');
  const b = await browser();
  opened.push(b);
  let dialogs = 0;
  b.page.on('dialog', () => { dialogs++; });
  // Through the widget too.
  await b.page.goto(`${io.url}${thread}`);
  await b.page.waitForSelector('#io360-thread .io360-form');
  await post(b.page, '<img src=y onerror="window.__xss=1;alert(2)"> typed', 'x');
  await b.page.waitForSelector('#io360-thread .io360-body:has-text("typed")');
  // Fresh load: snapshot plus widget.
  await sleep(1500);
  await b.page.reload();
  await b.page.waitForSelector('#io360-thread .io360-form');
  await sleep(1500);
  const bodies = await b.page.locator('#io360-thread .io360-body').count();
  assert.ok(bodies >= payloads.length, `comments rendered: ${bodies}`);
  assert.equal(dialogs, 0);
  assert.equal(await b.page.evaluate(() => window.__xss), undefined);
  assert.equal(await b.page.locator('#io360-thread a[href^="javascript:" i]').count(), 0);
  assert.equal(await b.page.locator('#io360-thread script, #io360-thread iframe, #io360-thread [onerror]').count(), 0);
});
