// The API explorer (Swagger UI) in headless Chromium: "Try it out" on POST /info is refused
// without a signature, and answered once the admin is signed in (the page signs each request).
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';

import {API, cspViolations, launch, newPage} from './lib.mjs';

let browser;
let page;
let violations;

before(async () => {
  browser = await launch();
  page = await newPage(browser, 'explorer');
  violations = cspViolations(page);
});

after(async () => {
  await browser?.close();
});

/** Run GET /info from the explorer; resolves to the status code Swagger UI shows. */
async function tryInfo() {
  await page.goto(`${API}/api-explorer#/default/get_info`);
  const operation = page.locator('#operations-default-get_info');
  await operation.waitFor();
  if (!(await operation.locator('.execute').count())) {
    await operation.locator('.opblock-summary').first().click();
  }
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === `${API}/info`),
    operation.locator('.execute').click(),
  ]);
  await operation.locator('.live-responses-table .response-col_status').first().waitFor();
  return response.status();
}

test('without an admin session the request goes unsigned and is refused', async () => {
  await page.goto(`${API}/api-explorer`);
  await page.locator('#signing', {hasText: 'Sign in'}).waitFor();
  assert.equal(await tryInfo(), 403);
});

test('a signed-in admin gets each request signed, and answered', async () => {
  const login = await page.request.post(`${API}/admin/login`,
    {data: {user: 'admin', password: process.env.ADMIN_PASSWORD}});
  assert.equal(login.status(), 200);
  await page.goto(`${API}/api-explorer`);
  await page.locator('#signing', {hasText: 'Signed in as admin'}).waitFor();
  assert.equal(await tryInfo(), 200);
});

test('nothing on the page breaks its Content-Security-Policy', () => {
  assert.deepEqual(violations, []);
});
