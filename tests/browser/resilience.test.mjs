// Pages stay up when logic dies, and the widget works from another, allowed origin.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTier, startUp, browser, api, sleep, ended } from './harness.mjs';

const cleanups = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
});

test('a page loads, with its comments, after logic is killed', async () => {
  const data = mkdtempSync(join(tmpdir(), 'io360-store-'));
  cleanups.push(async () => rmSync(data, { recursive: true, force: true }));
  const store = await startTier('store', { args: ['--data-dir', data] });
  cleanups.push(store.stop);
  const logic = await startTier('logic', { args: ['--store-url', store.url, '--no-rate-limits'] });
  cleanups.push(logic.stop);
  const front = await startTier('frontend', { args: ['--logic-url', logic.url, '--snapshot-refresh-ms', '200'] });
  cleanups.push(front.stop);

  const text = `Survives logic ${Date.now()}`;
  const r = await api(front.url, 'POST', '/api/v1/comments?thread=%2Fposts%2Fhello%2F', { text, author: 'Kim' });
  assert.equal(r.status, 201, r.text);
  let html = '';
  for (let i = 0; i < 100 && !html.includes(text); i++) {
    html = await (await fetch(`${front.url}/posts/hello/`)).text();
    await sleep(100);
  }
  assert.ok(html.includes(text), 'snapshot taken while logic was up');

  logic.proc.kill('SIGKILL');
  await new Promise((r) => (ended(logic.proc) ? r() : logic.proc.once('exit', r)));

  const b = await browser();
  cleanups.push(b.close);
  const res = await b.page.goto(`${front.url}/posts/hello/`);
  assert.equal(res.status(), 200);
  assert.ok(await b.page.isVisible(`#io360-thread .io360-body:has-text("${text}")`));
  assert.equal(await b.page.textContent('h1'), 'Hello, io360');
  // The widget took over what the page had and keeps it while the API is unreachable.
  await b.page.waitForSelector('#io360-thread .io360-form');
  await sleep(1000);
  assert.ok(await b.page.isVisible(`#io360-thread .io360-body:has-text("${text}")`));
  const css = await fetch(`${front.url}/style.css`);
  assert.equal(css.status, 200);
});

test('the widget works embedded on another, allowed origin, and not on others', async () => {
  // The two sites listen before io360 starts, on ports the kernel picks as they bind: a port
  // found free first and bound later could be taken in between by one of io360's sockets.
  let page = '';
  const ports = [];
  for (let i = 0; i < 2; i++) {
    const s = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(page);
    });
    await new Promise((r) => s.listen(0, '127.0.0.1', r));
    ports.push(s.address().port);
    cleanups.push(() => new Promise((r) => { s.close(r); s.closeAllConnections(); }));
  }
  const [allowedPort, otherPort] = ports;
  const io = await startUp({ env: { IO360_ALLOWED_ORIGINS: `http://127.0.0.1:${allowedPort}` } });
  cleanups.push(io.stop);
  page = `<!doctype html><html><head><meta charset="utf-8"><title>Elsewhere</title></head><body>
<h1>A blog on another origin</h1>
<section id="io360-thread" data-thread="/elsewhere/post"></section>
<script src="${io.url}/embed.js" defer></script></body></html>`;

  const b = await browser();
  cleanups.push(b.close);
  await b.page.goto(`http://127.0.0.1:${allowedPort}/`);
  await b.page.waitForSelector('#io360-thread .io360-form');
  const text = `From afar ${Date.now()}`;
  await b.page.fill('#io360-thread textarea[name=text]', text);
  await b.page.click('#io360-thread button[type=submit]');
  await b.page.waitForSelector(`#io360-thread .io360-body:has-text("${text}")`);
  const listed = await api(io.url, 'GET', '/api/v1/comments?thread=%2Felsewhere%2Fpost');
  assert.ok(listed.json.comments.some((c) => c.text === text));
  assert.equal(await b.page.locator('link[href$="/embed.css"]').count(), 1, 'the stylesheet came along');

  const c = await browser();
  cleanups.push(c.close);
  await c.page.goto(`http://127.0.0.1:${otherPort}/`);
  await c.page.waitForSelector('#io360-thread .io360-form');
  await c.page.fill('#io360-thread textarea[name=text]', 'should not go through');
  await c.page.click('#io360-thread button[type=submit]');
  await c.page.waitForSelector('#io360-thread .io360-form .io360-message:has-text("Could not reach")');
  const again = await api(io.url, 'GET', '/api/v1/comments?thread=%2Felsewhere%2Fpost');
  assert.ok(!again.json.comments.some((x) => x.text === 'should not go through'));
});

test('a page whose live connection fails asks whether comments were paused before backing off', async () => {
  // As on Kubernetes when comments are suspended: the suspension is set, and longpoll (here
  // one that cannot ask logic, so the page cannot learn it live) stops.
  const data = mkdtempSync(join(tmpdir(), 'io360-store-'));
  cleanups.push(async () => rmSync(data, { recursive: true, force: true }));
  const admin = `admin-${Date.now()}-token-for-the-test`;
  const store = await startTier('store', { args: ['--data-dir', data] });
  cleanups.push(store.stop);
  const logic = await startTier('logic', { args: ['--store-url', store.url, '--no-rate-limits'], env: { IO360_ADMIN_TOKEN: admin } });
  cleanups.push(logic.stop);
  const sync = await startTier('sync', { args: ['--store-url', store.url] });
  cleanups.push(sync.stop);
  const longpoll = await startTier('longpoll', { args: ['--sync-url', sync.url] });
  cleanups.push(longpoll.stop);
  const front = await startTier('frontend', { args: ['--logic-url', logic.url, '--longpoll-url', longpoll.url] });
  cleanups.push(front.stop);

  const b = await browser();
  cleanups.push(b.close);
  await b.page.goto(`${front.url}/posts/hello/`);
  await b.page.waitForSelector('#io360-thread .io360-form');
  const draft = `Draft as longpoll goes ${Date.now()}`;
  await b.page.fill('#io360-thread textarea[name=text]', draft);
  // Let the page's poll be held.
  await sleep(1500);
  const failed = [];
  b.page.on('requestfailed', (r) => { if (r.url().includes('/v1/poll')) failed.push(Date.now()); });
  b.page.on('response', (r) => { if (r.url().includes('/v1/poll') && r.status() >= 500) failed.push(Date.now()); });

  const r = await api(front.url, 'PUT', '/api/v1/admin/suspension', { suspended: true, reason: 'maintenance' }, { authorization: `Bearer ${admin}` });
  assert.equal(r.status, 200, r.text);
  await sleep(300);
  assert.ok(await b.page.isHidden('#io360-thread .io360-paused'), 'this longpoll cannot tell the page');
  const at = Date.now();
  longpoll.proc.kill('SIGKILL');
  await b.page.waitForSelector('#io360-thread .io360-paused:not([hidden])', { timeout: 5000 });
  assert.ok(Date.now() - at <= 5000);
  // Learned from the status check after the first failure, not after a backed-off retry.
  assert.equal(failed.length, 1, `${failed.length} failed polls before the paused state showed`);
  assert.equal(await b.page.inputValue('#io360-thread textarea[name=text]'), draft);
  assert.ok(await b.page.isDisabled('#io360-thread button[type=submit]'));
});
