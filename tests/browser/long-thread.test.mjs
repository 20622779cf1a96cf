// A thread longer than a page shows: the page carries its first comments, how many there are
// and a link to the rest; the widget loads the rest on demand and still shows new ones live.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startUp, browser, api, sleep } from './harness.mjs';

const THREAD = '/posts/always-up/';
const N = 450;
let io;
let b;

before(async () => {
  io = await startUp();
  const path = `/api/v1/comments?thread=${encodeURIComponent(THREAD)}`;
  for (let i = 0; i < N; i += 50) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + 50); j++) batch.push(api(io.url, 'POST', path, { text: `Long thread comment ${j}` }));
    for (const r of await Promise.all(batch)) assert.equal(r.status, 201);
  }
});

after(async () => {
  if (b) await b.close().catch(() => {});
  if (io) await io.stop();
});

test('the page shows the first comments, the count and a link to the rest', async () => {
  let html = '';
  for (let i = 0; i < 100 && !html.includes(`${N} comments`); i++) {
    html = await (await fetch(`${io.url}${THREAD}`)).text();
    await sleep(100);
  }
  assert.ok(html.includes(`${N} comments`), 'the snapshot counts every comment');
  assert.equal((html.match(/<li /g) || []).length, 200);
  assert.match(html, /class="io360-more"><a href="\/api\/v1\/comments\?thread=%2Fposts%2Falways%2Dup%2F" data-rest="250">/);
});

test('the widget loads more on demand and shows new comments live', async () => {
  b = await browser();
  await b.page.goto(io.url + THREAD);
  await b.page.waitForSelector('#io360-thread .io360-form');
  const count = () => b.page.locator('#io360-thread .io360-list > li.io360-comment').count();
  const more = b.page.locator('#io360-thread button.io360-more');
  assert.equal(await count(), 200);
  assert.equal(await b.page.textContent('#io360-thread .io360-count'), `${N} comments`);
  assert.equal(await more.textContent(), 'Show 250 more comments');
  await more.click();
  await b.page.waitForFunction(() => document.querySelectorAll('#io360-thread .io360-list > li.io360-comment').length === 400);
  assert.equal(await more.textContent(), 'Show 50 more comments');
  await more.click();
  await b.page.waitForFunction((n) => document.querySelectorAll('#io360-thread .io360-list > li.io360-comment').length === n, N);
  assert.ok(await more.isHidden());
  assert.ok(await b.page.isVisible('#io360-thread .io360-body:has-text("Long thread comment 449")'));

  // A comment posted now appears at once, though it is past the first page.
  await sleep(500);
  const text = `Arrived live ${Date.now()}`;
  const r = await api(io.url, 'POST', `/api/v1/comments?thread=${encodeURIComponent(THREAD)}`, { text });
  assert.equal(r.status, 201);
  await b.page.waitForSelector(`#io360-thread .io360-body:has-text("${text}")`, { timeout: 5000 });
});

test('a reader who never asks for more still sees new comments live', async () => {
  const c = await browser();
  try {
    await c.page.goto(io.url + THREAD);
    await c.page.waitForSelector('#io360-thread .io360-form');
    await sleep(500);
    const text = `Seen without more ${Date.now()}`;
    const r = await api(io.url, 'POST', `/api/v1/comments?thread=${encodeURIComponent(THREAD)}`, { text });
    assert.equal(r.status, 201);
    await c.page.waitForSelector(`#io360-thread .io360-body:has-text("${text}")`, { timeout: 5000 });
    assert.ok(await c.page.isVisible('#io360-thread button.io360-more'));
  } finally {
    await c.close();
  }
});
