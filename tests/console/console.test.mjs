// The moderation console in headless Chromium against a real `io360 up` (moderation: all):
// log in with the admin token, approve a held comment with the keyboard, see it appear on
// the page, and read its audit line. Everything listens and is dialled on 127.0.0.1 only.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
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
    env: { ...process.env, IO360_LOG: 'warn', IO360_NO_RATE_LIMITS: 'true', IO360_MODERATION: 'all' },
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
  const admin = await browser();
  await admin.goto(`${io}/admin`);
  await admin.fill('#token', token);
  await admin.click('#login-form button[type=submit]');
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
