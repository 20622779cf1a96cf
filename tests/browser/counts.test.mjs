// Count mode: a page listing posts shows each post's comment count, kept live over one
// connection per 100 threads, in headless Chromium against `io360 up`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startUp, browser, api } from './harness.mjs';

let io;
const opened = [];

before(async () => {
  io = await startUp({ env: { IO360_MODERATION: 'none' } });
});

after(async () => {
  for (const b of opened) await b.close().catch(() => {});
  if (io) await io.stop();
});

/** A browser whose long polls are tracked: every URL, and how many were open at most at once. */
async function tracked() {
  const b = await browser();
  opened.push(b);
  b.polls = [];
  b.open = 0;
  b.mostOpen = 0;
  const isPoll = (r) => new URL(r.url()).pathname === '/v1/poll';
  b.page.on('request', (r) => {
    if (!isPoll(r)) return;
    b.polls.push(r.url());
    b.open++;
    b.mostOpen = Math.max(b.mostOpen, b.open);
  });
  const done = (r) => { if (isPoll(r)) b.open--; };
  b.page.on('requestfinished', done);
  b.page.on('requestfailed', done);
  return b;
}

const post = (thread, text) =>
  api(io.url, 'POST', `/api/v1/comments?thread=${encodeURIComponent(thread)}`, { text, author: 'Counter' });

const countOf = (page, thread) =>
  page.$eval(`[data-io360-count="${thread}"]`, (el) => el.dataset.count ?? null);

async function waitCount(page, thread, n, timeout = 5000) {
  await page.waitForFunction(
    ([th, want]) => document.querySelector(`[data-io360-count="${th}"]`)?.dataset.count === String(want),
    [thread, n],
    { timeout },
  );
}

test('the demo index shows each post count and keeps both live over one poll', async () => {
  const hello = '/posts/hello/';
  const up = '/posts/always-up/';
  assert.equal((await post(hello, 'Counted before the page opened')).status, 201);
  const b = await tracked();
  await b.page.goto(io.url + '/');
  await waitCount(b.page, hello, 1);
  await waitCount(b.page, up, 0);
  assert.equal(await b.page.textContent(`[data-io360-count="${hello}"]`), '1 comment');
  assert.equal(await b.page.textContent(`[data-io360-count="${up}"]`), 'No comments yet');

  // Comments posted elsewhere show up in the counts without a reload.
  assert.equal((await post(up, 'First on this post')).status, 201);
  await waitCount(b.page, up, 1);
  assert.equal((await post(hello, 'Second here')).status, 201);
  assert.equal((await post(hello, 'Third here')).status, 201);
  await waitCount(b.page, hello, 3);
  assert.equal(await b.page.textContent(`[data-io360-count="${hello}"]`), '3 comments');

  // One connection followed both threads, every time.
  assert.ok(b.polls.length >= 2, `polls: ${b.polls.join(' ')}`);
  for (const url of b.polls) {
    const threads = new URL(url).searchParams.getAll('thread');
    assert.deepEqual(threads.sort(), [up, hello].sort(), url);
  }
  assert.equal(b.mostOpen, 1);
});

test('150 threads on one page are followed by two polls, and a count deep in the list updates', async () => {
  const threads = Array.from({ length: 150 }, (_, i) => `/list/post-${i}/`);
  const html = `<!doctype html><meta charset="utf-8"><title>list</title><ul>${threads
    .map((th) => `<li><a href="${th}">${th}</a> <span data-io360-count="${th}"></span></li>`)
    .join('')}</ul><script src="/embed.js" defer></script>`;
  const b = await tracked();
  // The list page is served by the test, on io360's origin; the script and the API are io360's.
  await b.page.route(`${io.url}/list/`, (route) => route.fulfill({ body: html, contentType: 'text/html' }));
  await b.page.goto(`${io.url}/list/`);
  await waitCount(b.page, threads[149], 0);
  // Both polls under way before the post, so the update arrives live, not by a first read.
  const until = Date.now() + 5000;
  while (b.open < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  assert.equal(b.open, 2, `open polls: ${b.open}`);
  assert.equal((await post(threads[120], 'Deep in the list')).status, 201);
  await waitCount(b.page, threads[120], 1);
  assert.equal(await countOf(b.page, threads[3]), '0');
  assert.equal(b.mostOpen, 2);
  const named = b.polls.map((u) => new URL(u).searchParams.getAll('thread').length);
  assert.ok(named.every((n) => n === 100 || n === 50), `threads per poll: ${named}`);
});
