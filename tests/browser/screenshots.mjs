// Takes the README's screenshots of the demo post with comments, light and dark, into
// docs/screenshots/. Run: `node tests/browser/screenshots.mjs` (uses IO360_BIN or builds io360).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { startUp, browser, api, repo, sleep } from './harness.mjs';

const out = join(repo, 'docs', 'screenshots');
mkdirSync(out, { recursive: true });
const io = await startUp();
try {
  const thread = '/posts/hello/';
  const path = `/api/v1/comments?thread=${encodeURIComponent(thread)}`;
  const first = await api(io.url, 'POST', path, {
    author: 'Ada',
    text: 'The page loaded **instantly**, and the comments were already there. Nice touch for readers without JavaScript.',
  });
  await api(io.url, 'POST', path, {
    author: 'Grace',
    parent: first.json.comment.id,
    text: 'Agreed. And when comments are paused, the page still works: only the form waits.',
  });
  await api(io.url, 'POST', path, {
    author: 'Linus',
    website: 'https://example.org',
    text: 'Markdown works too:\n\n```\nio360 up --site ./public\n```',
  });
  await api(io.url, 'POST', `/api/v1/comments/${first.json.comment.id}/vote`, { value: 1 });
  await sleep(1500);
  for (const scheme of ['light', 'dark']) {
    const b = await browser({ colorScheme: scheme });
    await b.page.goto(`${io.url}${thread}`);
    await b.page.waitForSelector('#io360-thread .io360-form');
    await b.page.fill('#io360-thread input[name=author]', 'You');
    await b.page.fill('#io360-thread textarea[name=text]', 'Writing a reply with *Markdown*…');
    await sleep(300);
    await b.page.screenshot({ path: join(out, `widget-${scheme}.png`), fullPage: true });
    await b.close();
  }
  console.log(`screenshots in ${out}`);
} finally {
  await io.stop();
}
