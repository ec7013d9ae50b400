// A cluster node's admin panel in headless Chromium: every node, and Redis' health.
// Environment: ADMIN_PASSWORD, NODES (how many), plus lib.mjs's.
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';

import {API, cspViolations, launch, newPage} from './lib.mjs';

let browser;
let page;
let violations;

before(async () => {
  browser = await launch();
  page = await newPage(browser, 'admin-cluster');
  violations = cspViolations(page);
});

after(async () => {
  await browser?.close();
});

test('the panel lists every node and the Redis figures of this node\'s shards', async () => {
  await page.goto(`${API}/admin/login`);
  await page.fill('#password', process.env.ADMIN_PASSWORD);
  await page.click('#login button');
  await page.waitForURL(`${API}/admin`);
  const nodes = Number(process.env.NODES);
  await page.locator('#nodes tbody tr').nth(nodes - 1).waitFor();
  const ids = await page.locator('#nodes tbody tr td:first-child').allTextContents();
  assert.deepEqual(ids, Array.from({length: nodes}, (_, index) => `node${index}`));
  assert.equal(await page.textContent('#node-count'), String(nodes));
  await page.locator('#redis tbody tr').nth(1).waitFor();
  assert.match(await page.textContent('#redis tbody tr td:nth-child(2)'), / ms$/);
  assert.deepEqual(violations, []);
});
