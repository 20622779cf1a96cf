// The moderation console in headless Chromium against a real `io360 up` (moderation: all):
// log in with the admin token, approve a held comment with the keyboard, see it appear on
// the page, and read its audit line. Everything listens and is dialled on 127.0.0.1 only.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function io360Binary() {
  if (process.env.IO360_BIN) return process.env.IO360_BIN;
  execFileSync('cargo', ['build', '-q', '-p', 'io360'], { cwd: repo, stdio: 'inherit' });
  return join(process.env.CARGO_TARGET_DIR || join(repo, 'target'), 'debug', 'io360');
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

async function waitReady(url, proc) {
  for (let i = 0; i < 1200; i++) {
    if (proc.exitCode !== null) throw new Error(`io360 exited with ${proc.exitCode}:\n${proc.output}`);
    try { if ((await fetch(url)).ok) return; } catch (_) { /* not yet */ }
    await sleep(100);
  }
  throw new Error(`${url} never became ready:\n${proc.output}`);
}

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

let io; let dir; let proc; let token;
const browsers = [];

async function browser() {
  const profile = mkdtempSync(join(tmpdir(), 'io360-console-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1100, height: 1000 },
  });
  const page = context.pages()[0] || (await context.newPage());
  browsers.push({ context, profile });
  return page;
}

before(async () => {
  const bin = io360Binary();
  const port = await freePort();
  dir = mkdtempSync(join(tmpdir(), 'io360-console-'));
  io = `http://127.0.0.1:${port}`;
  proc = spawn(bin, ['up', '--addr', `127.0.0.1:${port}`, '--data-dir', join(dir, 'data')], {
    // Webhooks on, to a receiver on 127.0.0.1 (so private addresses are allowed), retried fast.
    env: { ...process.env, IO360_LOG: 'warn', IO360_NO_RATE_LIMITS: 'true', IO360_MODERATION: 'all',
      IO360_WEBHOOKS: 'true', IO360_WEBHOOK_ALLOW_PRIVATE: 'true', IO360_WEBHOOK_RETRY_MS: '300' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.output = '';
  proc.stdout.on('data', (d) => { proc.output += d; });
  proc.stderr.on('data', (d) => { proc.output += d; });
  await waitReady(`${io}/api/v1/status`, proc);
  token = readFileSync(join(dir, 'data', 'admin-token'), 'utf8').trim();
});

after(async () => {
  for (const b of browsers) {
    await b.context.close();
    rmSync(b.profile, { recursive: true, force: true });
  }
  if (proc && proc.exitCode === null) {
    const done = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await done;
  }
  rmSync(dir, { recursive: true, force: true });
});

// The console, logged in with the admin token by the login form.
async function loggedIn() {
  const admin = await browser();
  await admin.goto(`${io}/admin`);
  await admin.fill('#token', token);
  await admin.click('#login-form button[type=submit]');
  await admin.waitForSelector('#app:not([hidden])');
  return admin;
}

async function postHeld(text) {
  const res = await fetch(`${io}/api/v1/comments?thread=${encodeURIComponent('/posts/always-up/')}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ text, author: 'Reader Rae' }),
  });
  assert.equal(res.status, 201);
  const body = await res.json();
  assert.equal(body.comment.status, 'pending');
  return body.comment.id;
}

test('log in, approve a held comment with the keyboard, see it on the page, read its audit line', async () => {
  const text = `Held for review ${Date.now()}`;
  const id = await postHeld(text);

  const reader = await browser();
  await reader.goto(`${io}/posts/always-up/`);
  await reader.waitForSelector('#io360-thread .io360-form');
  assert.equal(await reader.locator(`.io360-body:has-text("${text}")`).count(), 0, 'held comments are not shown');

  const admin = await browser();
  await admin.goto(`${io}/admin`);
  // A wrong token is refused and the console says so.
  await admin.fill('#token', 'not-the-admin-token-at-all');
  await admin.press('#token', 'Enter');
  await admin.waitForSelector('#login-error:has-text("not valid")');
  // Log in with the keyboard only.
  await admin.fill('#token', token);
  await admin.press('#token', 'Tab');
  await admin.keyboard.type('Mona');
  await admin.keyboard.press('Enter');
  await admin.waitForSelector('#app:not([hidden])');
  assert.equal(await admin.textContent('#who'), 'acting as Mona');

  const row = admin.locator(`#queue-list li[data-id="${id}"]`);
  await row.waitFor();
  assert.match(await row.textContent(), new RegExp(text));
  await row.focus();
  await admin.keyboard.press('a');
  await admin.waitForSelector('#status:has-text("approved comment")');
  await row.waitFor({ state: 'detached' });

  // The reader sees it without reloading (the approval is a live update)...
  await reader.waitForSelector(`#io360-thread .io360-body:has-text("${text}")`, { timeout: 30000 });
  // ...and a fresh visitor sees it in the page too.
  const fresh = await browser();
  await fresh.goto(`${io}/posts/always-up/`);
  await fresh.waitForSelector(`#io360-thread .io360-body:has-text("${text}")`, { timeout: 30000 });

  // The audit trail, reached from the tab list with the arrow keys.
  await admin.focus('#tab-queue');
  await admin.keyboard.press('End');
  assert.equal(await admin.getAttribute('#tab-audit', 'aria-selected'), 'true');
  const line = admin.locator('#audit-rows tr', { hasText: 'comment.approved' }).filter({ hasText: `#${id}` });
  for (let i = 0; i < 50 && (await line.count()) === 0; i++) {
    await sleep(200);
    await admin.click('#audit-form button[type=submit]');
  }
  assert.equal(await line.count(), 1);
  const cells = await line.locator('td').allTextContents();
  assert.equal(cells[1], 'comment.approved');
  assert.equal(cells[2], 'admin:Mona');
  assert.equal(cells[3], '/posts/always-up/');
  const posted = admin.locator('#audit-rows tr', { hasText: 'comment.posted' }).filter({ hasText: `#${id}` });
  assert.equal(await posted.locator('td').nth(2).textContent(), 'Reader Rae');
});

test('bulk reject from the queue and the suspension timeline', async () => {
  const a = await postHeld(`spam one ${Date.now()}`);
  const b = await postHeld(`spam two ${Date.now()}`);
  const admin = await loggedIn();
  await admin.locator(`#queue-list li[data-id="${b}"]`).waitFor();
  for (const id of [a, b]) await admin.check(`#queue-list li[data-id="${id}"] .pick`);
  await admin.click('[data-bulk=reject]');
  await admin.waitForSelector('#status:has-text("rejected 2 comment(s)")');
  const queue = await (await fetch(`${io}/api/v1/admin/queue`, { headers: { authorization: `Bearer ${token}` } })).json();
  assert.ok(!queue.comments.some((c) => c.comment.id === a || c.comment.id === b));

  await admin.click('#tab-suspension');
  await admin.fill('#suspension-form input[name=reason]', 'maintenance window');
  await admin.click('#suspension-form button[value=suspend]');
  await admin.waitForSelector('#suspension-state:has-text("suspended")');
  const status = await (await fetch(`${io}/api/v1/status`)).json();
  assert.equal(status.suspended, true);
  await admin.click('#suspension-form button[value=resume]');
  await admin.waitForSelector('#suspension-state:has-text("live")');
  // The resume reaches the trail through the logger's batching: wait for the whole entry.
  const whole = /manual: maintenance window — suspended by admin, resumed by admin/;
  let entry = admin.locator('#timeline li', { hasText: whole });
  for (let i = 0; i < 50 && (await entry.count()) === 0; i++) {
    await sleep(200);
    await admin.click('#tab-suspension');
  }
  assert.match(await entry.first().textContent(), whole);
});

test('add a webhook in the console, and read its delivery log: a failure, then the retry that went through', async () => {
  // A receiver that checks signatures as a site's would, and fails the first request.
  const secret = 'whsec_console-test-secret-0123';
  const got = [];
  const rx = createHttpServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const ts = req.headers['io360-webhook-timestamp'];
      const mac = createHmac('sha256', secret).update(`${ts}.`).update(body).digest();
      const sig = Buffer.from((req.headers['io360-webhook-signature'] || '').replace(/^v1=/, ''), 'hex');
      const signed = sig.length === mac.length && timingSafeEqual(sig, mac);
      const fresh = Math.abs(Date.now() / 1000 - Number(ts)) <= 300;
      got.push({ signed, fresh, event: JSON.parse(body) });
      res.statusCode = !signed || !fresh ? 400 : got.length === 1 ? 500 : 204;
      res.end();
    });
  });
  await new Promise((ok) => rx.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${rx.address().port}/hook`;
  try {
    const admin = await loggedIn();
    await admin.click('#tab-webhooks');
    // The Webhooks tab sits before Import; the audit trail stays the last tab.
    const tabs = await admin.locator('[role=tab]').allTextContents();
    assert.deepEqual(tabs.slice(-3), ['Webhooks', 'Import', 'Audit trail']);

    // Refused input says why.
    await admin.fill('#webhook-form input[name=url]', 'ftp://hooks.example.org/in');
    await admin.check('#webhook-events input[value="comment.held"]');
    await admin.click('#webhook-form button[type=submit]');
    await admin.waitForSelector('#status.error:has-text("http")');

    await admin.fill('#webhook-form input[name=url]', url);
    await admin.check('#webhook-events input[value="comment.held"]');
    await admin.fill('#webhook-form input[name=secret]', secret);
    await admin.click('#webhook-form button[type=submit]');
    await admin.waitForSelector(`#webhook-secret:has-text("${secret}")`);
    await admin.waitForSelector(`#webhook-list li:has-text("${url}")`);

    const id = await postHeld(`Held for the webhook ${Date.now()}`);
    for (let i = 0; i < 100 && got.length < 2; i++) await sleep(100);
    assert.equal(got.length, 2, 'one failure, one retry');
    assert.ok(got.every((g) => g.signed && g.fresh));
    assert.equal(got[1].event.type, 'comment.held');
    assert.equal(got[1].event.comment.id, id);
    assert.equal(got[0].event.id, got[1].event.id, 'the retry carries the same delivery id');

    const sent = admin.locator('#deliveries-rows tr.sent');
    for (let i = 0; i < 50 && (await sent.count()) === 0; i++) {
      await sleep(200);
      await admin.click(`#webhook-list li:has-text("${url}") button:has-text("Delivery log")`);
    }
    const rows = await admin.locator('#deliveries-rows tr').evaluateAll((trs) =>
      trs.map((tr) => Array.from(tr.cells).map((td) => td.textContent)));
    assert.equal(rows.length, 2, JSON.stringify(rows));
    // Newest first: the retry that went through, then the failure.
    assert.deepEqual(rows.map((r) => [r[1], r[3], r[4], r[5]]),
      [['comment.held', '2', 'sent', '204'], ['comment.held', '1', 'retrying', '500']]);
    assert.match(rows[1][7], /500/);
    assert.match(rows[0][6], /^\d+ ms$/);
  } finally {
    rx.close();
  }
});

test('look up an imported page by its thread: the console shows the title the import kept, then closes it', async () => {
  const thread = `/imported/${Date.now()}/`;
  const file = [
    JSON.stringify({ format: 'io360-export', version: 1 }),
    JSON.stringify({ type: 'thread', thread, closed: false, title: 'Moving <day> & more' }),
  ].join('\n') + '\n';
  const res = await fetch(`${io}/api/v1/admin/import?from=io360`, {
    method: 'POST', headers: { authorization: `Bearer ${token}` }, body: file,
  });
  assert.equal(res.status, 200, await res.text());

  const admin = await loggedIn();
  await admin.click('#tab-threads');
  // Enter in the field looks the thread up; the title shows as text, not markup.
  await admin.fill('#thread-form input[name=thread]', thread);
  await admin.press('#thread-form input[name=thread]', 'Enter');
  await admin.waitForSelector('#thread-result:has-text("Moving")');
  assert.equal(await admin.textContent('#thread-result'), `“Moving <day> & more” (${thread}) is open (0 comments).`);
  await admin.click('#thread-form button[value=close]');
  await admin.waitForSelector('#thread-result:has-text("is now closed")');
  assert.match(await admin.textContent('#thread-result'), /^“Moving <day> & more”/);
});
