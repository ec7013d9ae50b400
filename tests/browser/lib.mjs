// Shared pieces of the browser tests: headless Chromium, a signed shardcast API, waiting.
// pytest (tests/browser.py) runs each *.e2e.mjs with `node --test` and passes, in the
// environment, SHARDCAST_API (http://127.0.0.1:port) and SHARDCAST_SECRET, plus per-test extras.
import {createHmac, createHash} from 'node:crypto';

import {chromium} from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // Pages that page.route() makes up have no address space of their own: let them reach
  // the loopback server as a page on a real origin would reach a public one.
  '--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,'
    + 'BlockInsecurePrivateNetworkRequests',
];
export const API = process.env.SHARDCAST_API;
export const SECRET = process.env.SHARDCAST_SECRET;

export function launch() {
  return chromium.launch({executablePath: CHROMIUM, args: CHROMIUM_ARGS});
}

/** A new page whose console errors and page errors are echoed, for failing runs. */
export async function newPage(browser, name = 'page') {
  const page = await browser.newPage();
  page.setDefaultTimeout(10000);
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') {
      console.log(`[${name} console.${message.type()}] ${message.text()}`);
    }
  });
  page.on('pageerror', (error) => console.log(`[${name} pageerror] ${error.message}`));
  return page;
}

/** The Content-Security-Policy violations `page` reports from now on (a live list). */
export function cspViolations(page) {
  const found = [];
  page.on('console', (message) => {
    if (message.text().includes('Content Security Policy')) found.push(message.text());
  });
  return found;
}

function b64url(bytes) {
  return Buffer.from(bytes).toString('base64url');
}

/** The Channelstream (itsdangerous TimestampSigner) signature of "channelstream". */
export function signCompat(secret = SECRET, now = Date.now() / 1000) {
  let seconds = Math.floor(now);
  const stampBytes = [];
  while (seconds > 0) {
    stampBytes.unshift(seconds & 0xff);
    seconds = Math.floor(seconds / 256);
  }
  const message = `channelstream.${b64url(stampBytes)}`;
  const key = createHash('sha1').update(`itsdangerous.Signersigner${secret}`).digest();
  return `${message}.${b64url(createHmac('sha1', key).update(message).digest())}`;
}

/** Call the shardcast API as a backend does; resolves to [status, decoded body]. */
export async function api(method, path, body) {
  const response = await fetch(API + path, {
    method,
    headers: {'content-type': 'application/json', 'x-channelstream-secret': signCompat()},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return [response.status, text ? JSON.parse(text) : null];
}

/** Like api(), but any status but 200 throws. */
export async function apiOk(method, path, body) {
  const [status, answer] = await api(method, path, body);
  if (status !== 200) {
    throw new Error(`${method} ${path} answered ${status}: ${JSON.stringify(answer)}`);
  }
  return answer;
}

export function unique(prefix) {
  return `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Poll `probe` (sync or async) until it returns a truthy value; throw after `timeout` ms. */
export async function waitFor(probe, what, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(50);
  }
}
