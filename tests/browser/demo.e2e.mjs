// `shardcast demo` in headless Chromium: two people chat through the demo app and shardcast.
// Environment: DEMO_URL (the demo page), SCREENSHOT (where to save a PNG of the chat).
import assert from 'node:assert/strict';
import {after, before, test} from 'node:test';

import {launch} from './lib.mjs';

const DEMO = process.env.DEMO_URL;
let browser;
let alice;
let bob;
const names = {alice: 'alice', bob: 'bob'};

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/** A person in a browser context of their own (their own demo session cookie). */
async function person(name) {
  const context = await browser.newContext({viewport: {width: 1280, height: 760}});
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  page.on('pageerror', (error) => console.log(`[${name} pageerror] ${error.message}`));
  await page.goto(DEMO);
  await page.fill('#username', name);
  await page.click('#signin-form button');
  await page.waitForSelector('#conn[data-state="live"]');
  return page;
}

/** The latest message with that text (a demo that keeps running keeps its history). */
function message(page, text) {
  return page.locator('#messages li.msg', {hasText: text}).last();
}

async function send(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

test('two people sign in and see each other in the lobby', async () => {
  alice = await person(names.alice);
  bob = await person(names.bob);
  await alice.locator(`#people li[data-user="${names.bob}"]`).waitFor();
  await bob.locator(`#people li[data-user="${names.alice}"]`).waitFor();
  await alice.locator('#messages li.notice', {hasText: `${names.bob} joined`}).waitFor();
});

test('a message from one arrives at the other', async () => {
  await send(alice, 'Hello Bob!');
  await message(bob, 'Hello Bob!').waitFor();
  await send(bob, 'Hi Alice, welcome to shardcast.');
  await message(alice, 'Hi Alice, welcome to shardcast.').waitFor();
});

test('a status change shows in the other one\'s presence list', async () => {
  await alice.selectOption('#status', 'away');
  await bob.locator(`#people li[data-user="${names.alice}"] .status`, {hasText: 'away'})
    .waitFor();
});

test('edits and deletes reach the other side; only your own messages have the buttons', async () => {
  await send(alice, 'A typo here');
  const mine = message(alice, 'A typo here');
  await message(bob, 'A typo here').waitFor();
  assert.equal(await message(bob, 'A typo here').locator('[data-action]').count(), 0);
  await mine.hover();
  await mine.locator('[data-action="edit"]').click();
  await alice.fill('#messages .edit-box', 'Fixed the typo');
  await alice.press('#messages .edit-box', 'Enter');
  await message(bob, 'Fixed the typo').locator('.edited').waitFor();
  const fixed = message(alice, 'Fixed the typo');
  await fixed.hover();
  await fixed.locator('[data-action="delete"]').click();
  await message(bob, 'Fixed the typo').waitFor({state: 'detached'});
});

test('rooms: joining one shows its history and tells those in it', async () => {
  await bob.click('#room-list li[data-room="random"]');
  await bob.click('#room-toggle');
  await send(bob, 'Anyone in random?');
  await message(bob, 'Anyone in random?').waitFor();
  await alice.click('#room-list li[data-room="random"]');
  await alice.click('#room-toggle');
  await message(alice, 'Anyone in random?').waitFor();   // from the room's history
  await bob.locator('#messages li.notice', {hasText: `${names.alice} joined`}).waitFor();
  await alice.click('#room-list li[data-room="lobby"]');
  await message(alice, 'Hi Alice, welcome to shardcast.').waitFor();
});

test('a newcomer gets the lobby history', async () => {
  const carol = await person('carol');
  await message(carol, 'Hello Bob!').waitFor();
  await message(carol, 'Hi Alice, welcome to shardcast.').waitFor();
  await carol.context().close();
});

test('screenshot of the chat', async () => {
  await bob.click('#room-list li[data-room="lobby"]');
  await send(bob, 'Looks good from here!');
  await message(alice, 'Looks good from here').waitFor();
  await alice.screenshot({path: process.env.SCREENSHOT});
});
