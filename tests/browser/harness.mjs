// Shared plumbing for io360's browser tests: build and start io360, launch Debian's Chromium.
// Everything listens and is dialled on 127.0.0.1 only.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

let built = null;

/** The io360 binary: $IO360_BIN, or built now with cargo. */
export function io360Binary() {
  if (process.env.IO360_BIN) return process.env.IO360_BIN;
  if (built) return built;
  execFileSync('cargo', ['build', '-q', '-p', 'io360'], { cwd: repo, stdio: 'inherit' });
  const target = process.env.CARGO_TARGET_DIR || join(repo, 'target');
  built = join(target, 'debug', 'io360');
  return built;
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `url` answers 200 (or throws after `ms`). */
export async function waitReady(url, ms = 60000, proc = null) {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (proc && ended(proc)) throw new Error(`process exited with ${proc.exitCode} before ${url} was ready`);
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch (_) { /* not yet */ }
    await sleep(100);
  }
  throw new Error(`${url} not ready within ${ms} ms`);
}

function run(args, env) {
  const proc = spawn(io360Binary(), args, {
    env: { ...process.env, IO360_LOG: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.output = '';
  proc.stdout.on('data', (d) => { proc.output += d; });
  proc.stderr.on('data', (d) => { proc.output += d; });
  return proc;
}

/** Whether a child process has ended (by exit or by signal). */
export const ended = (proc) => proc.exitCode !== null || proc.signalCode !== null;

async function stopProc(proc) {
  if (ended(proc)) return;
  const done = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
  await done;
  clearTimeout(t);
}

/** Starts `io360 up` on a free loopback port with its own data directory. */
export async function startUp({ env = {}, args = [] } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'io360-browser-'));
  const url = `http://127.0.0.1:${port}`;
  const proc = run(['up', '--addr', `127.0.0.1:${port}`, '--data-dir', join(dir, 'data'), ...args], {
    IO360_NO_RATE_LIMITS: 'true',
    ...env,
  });
  try {
    await waitReady(`${url}/readyz`, 120000, proc);
  } catch (e) {
    throw new Error(`${e.message}\n${proc.output}`);
  }
  const adminToken = readFileSync(join(dir, 'data', 'admin-token'), 'utf8').trim();
  return {
    url,
    proc,
    adminToken,
    async stop() {
      await stopProc(proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let tierKeys = null;

/** The tiers' keyring and credentials (`io360 tier-keys`), made once per test process. */
function tierKeysDir() {
  if (tierKeys) return tierKeys;
  tierKeys = mkdtempSync(join(tmpdir(), 'io360-tier-keys-'));
  execFileSync(io360Binary(), ['tier-keys', '--out', tierKeys], { stdio: 'ignore' });
  process.on('exit', () => rmSync(tierKeys, { recursive: true, force: true }));
  return tierKeys;
}

/** Starts one tier as its own process (`io360 serve <tier>`), with its credential and the
    keyring, as the tiers of one cluster share them. */
export async function startTier(tier, { env = {}, args = [] } = {}) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const keys = tierKeysDir();
  const proc = run(['serve', tier, '--addr', `127.0.0.1:${port}`, ...args], {
    IO360_TIER_KEYS_FILE: join(keys, 'keys'),
    IO360_TIER_TOKEN_FILE: join(keys, `${tier}.token`),
    ...env,
  });
  try {
    await waitReady(`${url}/healthz`, 120000, proc);
  } catch (e) {
    throw new Error(`${e.message}\n${proc.output}`);
  }
  return { url, proc, stop: () => stopProc(proc) };
}

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** A fresh browser (its own empty profile, so its own storage). */
export async function browser({ colorScheme = 'light' } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'io360-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    colorScheme,
    viewport: { width: 900, height: 1100 },
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on('dialog', (d) => d.accept());
  return {
    context,
    page,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Calls the API directly, as a script would. */
export async function api(base, method, path, body, headers = {}) {
  const res = await fetch(base + path, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
  return { status: res.status, headers: res.headers, json, text };
}
