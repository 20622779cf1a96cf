// The widget's "Email me replies" box: offered only where the site sends email, and posting
// with it asks the logic API for a subscription (confirmed by email first, as the API does).
// The mail server is a loopback port nothing listens on: nothing here is ever sent anywhere.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startUp, browser, freePort, sleep } from './harness.mjs';

let withMail;
let without;
const opened = [];

before(async () => {
  const smtp = await freePort();
  withMail = await startUp({
    env: {
      IO360_SMTP_URL: `smtp://127.0.0.1:${smtp}`,
      IO360_NOTIFY_FROM: 'Comments <comments@site.test>',
      IO360_PUBLIC_URL: 'http://127.0.0.1',
    },
  });
  without = await startUp();
});

after(async () => {
  for (const b of opened) await b.close().catch(() => {});
  if (withMail) await withMail.stop();
  if (without) await without.stop();
});

async function open(io, path) {
  const b = await browser();
  opened.push(b);
  await b.page.goto(io.url + path);
  await b.page.waitForSelector('#io360-thread .io360-form');
  return b;
}

test('a site that sends email offers the box, and a post with it asks for a subscription', async () => {
  const { page } = await open(withMail, '/posts/hello/');
  await page.waitForSelector('#io360-thread .io360-notify:not([hidden])');
  // The address field appears once a choice is made.
  assert.equal(await page.isVisible('#io360-thread input[name=email]'), false);
  await page.selectOption('#io360-thread select[name=notify]', 'replies');
  await page.waitForSelector('#io360-thread input[name=email]:visible');

  // Without an address, nothing is posted.
  await page.fill('#io360-thread textarea[name=text]', `Tell me of replies ${Date.now()}`);
  await page.click('#io360-thread button[type=submit]');
  await page.waitForSelector('#io360-thread .io360-message:has-text("address")');

  const email = `reader-${Date.now()}@site.test`;
  await page.fill('#io360-thread input[name=email]', email);
  const [req] = await Promise.all([
    page.waitForRequest((r) => r.method() === 'POST' && r.url().includes('/api/v1/comments?')),
    page.click('#io360-thread button[type=submit]'),
  ]);
  const sent = JSON.parse(req.postData());
  assert.equal(sent.notify, 'replies');
  assert.equal(sent.email, email);
  const res = await req.response();
  assert.equal(res.status(), 201, await res.text());
  await page.waitForSelector('#io360-thread .io360-message:has-text("confirm")');
  assert.equal(await page.inputValue('#io360-thread select[name=notify]'), '');

  // The subscription is recorded (off the post's path), waiting for its confirmation.
  let subs = [];
  for (let i = 0; i < 50 && subs.length === 0; i++) {
    const r = await fetch(`${withMail.url}/api/v1/admin/authors/export`, {
      method: 'POST',
      headers: { authorization: `Bearer ${withMail.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ email }),
    });
    assert.equal(r.status, 200);
    subs = (await r.json()).subscriptions;
    if (!subs.length) await sleep(200);
  }
  assert.equal(subs.length, 1);
  assert.equal(subs[0].confirmed, false);
  assert.equal(subs[0].scope.kind, 'replies');
});

test('a site without email shows no box and sends no address', async () => {
  const { page } = await open(without, '/posts/hello/');
  const [req] = await Promise.all([
    page.waitForRequest((r) => r.method() === 'POST' && r.url().includes('/api/v1/comments?')),
    (async () => {
      // The status answer has come back by the time the form is usable.
      await sleep(1000);
      await page.fill('#io360-thread textarea[name=text]', `No email here ${Date.now()}`);
      await page.click('#io360-thread button[type=submit]');
    })(),
  ]);
  assert.equal(await page.isVisible('#io360-thread .io360-notify'), false);
  const sent = JSON.parse(req.postData());
  assert.equal(sent.notify, undefined);
  assert.equal(sent.email, undefined);
});
