// The admin panel in headless Chromium: sign in, watch live figures, open a channel, look up.
// Environment: ADMIN_PASSWORD, SCREENSHOT (a PNG of the panel), plus lib.mjs's.
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';

import {API, apiOk, cspViolations, launch, newPage, unique} from './lib.mjs';

let browser;
let page;
let violations;
const room = unique('room');
const user = unique('ursula');

before(async () => {
  browser = await launch();
  page = await newPage(browser, 'admin');
  violations = cspViolations(page);
  await page.setViewportSize({width: 1280, height: 900});
});

after(async () => {
  await browser?.close();
});

test('a wrong password is refused on the sign-in page', async () => {
  await page.goto(`${API}/admin`);
  assert.equal(new URL(page.url()).pathname, '/admin/login');
  await page.fill('#password', 'not it');
  await page.click('#login button');
  await page.locator('#error', {hasText: 'Wrong user name or password'}).waitFor();
});

test('signing in shows live totals per shard', async () => {
  await page.fill('#password', process.env.ADMIN_PASSWORD);
  await page.click('#login button');
  await page.waitForURL(`${API}/admin`);
  await page.locator('#shards tbody tr').nth(1).waitFor();
  const before = Number(await page.textContent('#total-connections'));
  await apiOk('POST', '/channel_config', {[room]: {store_history: true, notify_presence: true}});
  await apiOk('POST', '/connect', {username: user, channels: [room], user_state: {plan: 'pro'}});
  await page.waitForFunction((before) =>
    Number(document.getElementById('total-connections').textContent) > before, before);
});

test('messages per second follow what is published', async () => {
  const items = Array.from({length: 20}, (_, n) => ({channel: room, user, message: {n}}));
  for (let round = 0; round < 4; round++) {
    await apiOk('POST', '/message', items);
    await new Promise((resolve) => setTimeout(resolve, 600));
  }
  await page.waitForFunction(() => Number(document.getElementById('total-rate').textContent) > 0);
});

test('a channel opens to its members, settings and history', async () => {
  await page.fill('#channel-filter', room);
  await page.click(`#channels tr[data-channel="${room}"]`);
  const detail = page.locator('#channels tr.detail');
  await detail.locator('.members li', {hasText: user}).waitFor();
  await detail.locator('pre', {hasText: '"store_history": true'}).waitFor();
  await detail.locator('.history li', {hasText: '{"n":19}'}).first().waitFor();
});

test('the lookup finds a user with its connections', async () => {
  await page.fill('#lookup-q', user);
  await page.click('#lookup button');
  await page.locator('#lookup-result pre', {hasText: '"plan": "pro"'}).waitFor();
  await page.locator('#lookup-result td', {hasText: room}).waitFor();
  await page.screenshot({path: process.env.SCREENSHOT, fullPage: true});
});

test('signing out returns to the sign-in page', async () => {
  await page.click('#sign-out');
  await page.waitForURL(`${API}/admin/login`);
  const response = await page.request.get(`${API}/admin/channels.json`);
  assert.equal(response.status(), 403);
});

test('nothing on the pages breaks their Content-Security-Policy', () => {
  assert.deepEqual(violations, []);
});
