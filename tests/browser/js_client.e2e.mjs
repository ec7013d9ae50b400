// The browser client (/static/shardcast.js) in headless Chromium against a real server.
// The server is silent (no [] heartbeats) and collects connections idle for 3 s, so only the
// client's own heartbeats keep a websocket alive.
import assert from 'node:assert/strict';
import net from 'node:net';
import {after, before, test} from 'node:test';

import {API, api, apiOk, launch, newPage, sleep, unique, waitFor} from './lib.mjs';

const APP = 'http://app.test';
const POLL_ANSWER_LAG = 200;  // ms
const STREAM_PAUSE = 20;  // ms between streamed messages
const OFFLINE = 5000;  // ms the page's network is down in the resume tests
/** Spoils a ws_url: nothing listens on port 9, so the client falls back to long polling. */
const REFUSED_WS = (url) => url.replace(/:\d+\/ws/, ':9/ws');
let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

/**
 * A page on http://app.test whose backend (this script, through page.route) authorizes
 * everyone and relays to shardcast; `rewriteWsUrl` may spoil the websocket URL it hands out.
 * While `backend.down`, the page cannot reach it (page.route ignores setOffline).
 */
async function appPage({rewriteWsUrl = (url) => url} = {}) {
  const page = await newPage(browser);
  const backend = {connects: [], down: false};
  const relay = {
    '/api/connect': async (body) => {
      backend.connects.push(body);
      const answer = await apiOk('POST', '/connect', {
        username: body.username, channels: body.channels, conn_id: body.conn_id});
      return {...answer, ws_url: rewriteWsUrl(answer.ws_url)};
    },
    '/api/subscribe': (body) => apiOk('POST', '/subscribe', body),
    '/api/unsubscribe': (body) => apiOk('POST', '/unsubscribe', body),
  };
  await page.route(`${APP}/**`, async (route) => {
    const url = new URL(route.request().url());
    if (url.pathname === '/') {
      await route.fulfill({contentType: 'text/html', body: `<!doctype html><title>app</title>
        <script type="module">
          import {ShardcastConnection} from '${API}/static/shardcast.js';
          window.ShardcastConnection = ShardcastConnection;
        </script>`});
      return;
    }
    if (backend.down) {
      await route.abort('internetdisconnected');
      return;
    }
    const answer = await relay[url.pathname](route.request().postDataJSON());
    await route.fulfill({contentType: 'application/json', body: JSON.stringify(answer)});
  });
  await page.goto(`${APP}/`);
  await page.waitForFunction(() => window.ShardcastConnection);
  return {page, backend};
}

/** Make `window.conn` in the page with recorded events; `settings` override the defaults. */
async function startClient(page, settings) {
  await page.evaluate((settings) => {
    window.events = [];
    const record = (name) => (...args) => window.events.push([name, ...args]);
    window.conn = new window.ShardcastConnection({
      connectUrl: '/api/connect', subscribeUrl: '/api/subscribe',
      unsubscribeUrl: '/api/unsubscribe', heartbeatInterval: 1000, livenessTimeout: 60000,
      backoff: {initial: 200, factor: 2, max: 1000},
      onOpen: (event) => window.events.push(['open', event.transport]),
      onClose: () => window.events.push(['close']),
      onMessage: record('message'),
      onChannelsUpdate: record('channels'),
      onRecovery: record('recovery'),
      onRecoveryFailed: record('recoveryFailed'),
      ...settings,
    });
    window.conn.connect();
  }, settings);
}

function texts(page) {
  return page.evaluate(() => window.events.filter((e) => e[0] === 'message')
    .flatMap((e) => e[1]).filter((m) => m.type === 'message').map((m) => m.message.text));
}

function recoveryEvents(page) {
  return page.evaluate(() => window.events.filter((e) => e[0].startsWith('recovery')));
}

/** Whether the server still has the connection (unsubscribing from nothing it is in). */
async function isConnected(connId) {
  const [status] = await api('POST', '/unsubscribe', {conn_id: connId, channels: [unique('probe')]});
  return status === 200;
}

function say(channel, text) {
  return apiOk('POST', '/message', [{channel, user: 'backend', message: {text}}]);
}

/** Posts to `channel` one message at a time and remembers the texts, in order. */
function messenger(channel) {
  const sent = [];
  const post = (text) => {
    sent.push(text);
    return say(channel, text);
  };
  return {
    sent,
    async burst(prefix, count) {
      for (let i = 0; i < count; i++) await post(`${prefix} ${i}`);
    },
    /** Post `${prefix} 0`, `${prefix} 1`, ... until the returned function is called. */
    stream(prefix) {
      let streaming = true;
      const done = (async () => {
        for (let i = 0; streaming; i++) {
          await post(`${prefix} ${i}`);
          await sleep(STREAM_PAUSE);
        }
      })();
      return () => {
        streaming = false;
        return done;
      };
    },
  };
}

/** /listen answers reach the page late, so what a websocket carries can overtake them. */
function delayPollAnswers(page) {
  return page.route(`${API}/listen?*`, async (route) => {
    const response = await route.fetch();
    await sleep(POLL_ANSWER_LAG);
    await route.fulfill({response});
  });
}

/** `window.pollsOnWebsocket`: polls the page starts while its client is on the websocket. */
function countPollsOnWebsocket(page) {
  return page.evaluate(() => {
    const fetch = window.fetch;
    window.pollsOnWebsocket = 0;
    window.fetch = (url, init) => {
      if (new URL(url, location.href).pathname === '/listen'
          && window.conn.transport === 'websocket') {
        window.pollsOnWebsocket += 1;
      }
      return fetch(url, init);
    };
  });
}

/**
 * A loopback TCP proxy in front of a shard's websocket port: `forward(wsUrl)` points the URL at
 * it; while `blocked`, it drops each connection as soon as it is made.
 */
class TcpGate {
  constructor() {
    this.blocked = true;
    this.refused = 0;
    this.target = null;
    this.sockets = new Set();
    this.server = net.createServer((client) => this._accept(client));
  }

  async listen() {
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return this;
  }

  forward(wsUrl) {
    const url = new URL(wsUrl);
    this.target = Number(url.port);
    url.port = String(this.server.address().port);
    return url.href;
  }

  _accept(client) {
    if (this.blocked) {
      this.refused += 1;
      client.destroy();
      return;
    }
    const upstream = net.connect(this.target, '127.0.0.1');
    for (const [from, to] of [[client, upstream], [upstream, client]]) {
      this.sockets.add(from);
      from.on('close', () => this.sockets.delete(from));
      from.pipe(to);
      from.on('error', () => to.destroy());
      from.on('close', () => to.destroy());
    }
  }

  /** Drop every connection made through the gate, and refuse new ones. */
  cut() {
    this.blocked = true;
    this.sockets.forEach((socket) => socket.destroy());
  }

  close() {
    this.server.close();
    this.cut();
  }
}

/**
 * An app page (see appPage) whose websocket goes to the server through an open TcpGate,
 * `gate`; with `transport` 'longpoll' its websockets are refused instead. Closed after `t`.
 */
async function gatedApp(t, transport = 'websocket') {
  const gate = await new TcpGate().listen();
  gate.blocked = false;
  const app = await appPage({rewriteWsUrl: transport === 'websocket'
    ? (url) => gate.forward(url) : REFUSED_WS});
  t.after(async () => {
    await app.page.close();
    gate.close();
  });
  return {...app, gate};
}

/**
 * A network drop of at least OFFLINE ms: the page of `app` (a gatedApp) reaches neither
 * shardcast nor its backend, and its websocket is cut; the network comes back once the server
 * has dropped the page's connection, so the client has to resume on a new one. `meanwhile`
 * runs while it is down.
 */
async function dropNetwork({page, backend, gate}, meanwhile = async () => {}) {
  const connId = await page.evaluate(() => window.conn.connectionId);
  const start = Date.now();
  // First: no reconnect may get through meanwhile.
  await page.context().setOffline(true);
  backend.down = true;
  gate.cut();  // going offline stalls an open websocket but does not close it
  await waitFor(async () => !(await isConnected(connId)), 'the server to drop the connection');
  await meanwhile();
  await sleep(OFFLINE - (Date.now() - start));
  gate.blocked = false;
  backend.down = false;
  await page.context().setOffline(false);
}

test('connects over the websocket of ws_url and receives messages', async () => {
  const {page} = await appPage();
  const room = unique('room');
  await startClient(page, {username: unique('alice'), channels: [room]});
  await waitFor(() => page.evaluate(() => window.conn.connected), 'the websocket to open');
  const state = await page.evaluate(() => ({transport: window.conn.transport,
    url: window.conn.websocket.url, channels: window.conn.channels}));
  assert.equal(state.transport, 'websocket');
  assert.match(state.url, /^ws:\/\/127\.0\.0\.1:\d+\/ws\?conn_id=/);
  assert.deepEqual(state.channels, [room]);
  await say(room, 'hello');
  await waitFor(async () => (await texts(page)).includes('hello'), 'the message');
  await page.close();
});

test('comes back after the server drops the connection, in the same channels', async () => {
  const {page, backend} = await appPage();
  const [room, extra] = [unique('room'), unique('extra')];
  await startClient(page, {username: unique('bob'), channels: [room]});
  await waitFor(() => page.evaluate(() => window.conn.connected), 'the websocket to open');
  await page.evaluate((extra) => window.conn.subscribe([extra]), extra);
  const connId = await page.evaluate(() => window.conn.connectionId);
  assert.equal(await apiOk('POST', '/disconnect', {conn_id: connId}), true);
  await waitFor(() => backend.connects.length === 2, 'a second connect call');
  assert.deepEqual(backend.connects[1].channels, [extra, room].sort());
  assert.equal(backend.connects[1].conn_id, connId);
  await waitFor(() => page.evaluate(() => window.conn.connected), 'the websocket to reopen');
  await say(extra, 'after reconnect');
  await waitFor(async () => (await texts(page)).includes('after reconnect'),
    'a message in the re-subscribed channel');
  const opens = await page.evaluate(() => window.events.filter((e) => e[0] === 'open').length);
  assert.equal(opens, 2);
  await page.close();
});

test('falls back to long polling /listen when websockets fail', async () => {
  const {page} = await appPage({rewriteWsUrl: REFUSED_WS});
  const room = unique('room');
  await startClient(page, {username: unique('carol'), channels: [room], serverUrl: API});
  await waitFor(() => page.evaluate(() => window.conn.transport === 'longpoll'),
    'the long-poll fallback');
  await say(room, 'by long poll');
  await waitFor(async () => (await texts(page)).includes('by long poll'),
    'a message by long poll');
  await page.close();
});

test('returns from long polling to the websocket once it opens, losing nothing', async (t) => {
  const gate = await new TcpGate().listen();
  t.after(() => gate.close());
  const {page, backend} = await appPage({rewriteWsUrl: (url) => gate.forward(url)});
  await delayPollAnswers(page);
  await countPollsOnWebsocket(page);
  const room = unique('room');
  await startClient(page, {username: unique('grace'), channels: [room], serverUrl: API,
    websocketRetry: {initial: 300, factor: 2, max: 600}});
  await waitFor(() => page.evaluate(() => window.conn.transport === 'longpoll'),
    'the long-poll fallback');
  const messages = messenger(room);
  await messages.burst('before', 5);
  await waitFor(async () => (await texts(page)).length === 5, 'messages by long poll');
  const attempts = await page.evaluate(() => window.conn.websocketAttempts);
  await waitFor(() => gate.refused >= attempts + 2, 'the client to retry the websocket');
  const connects = backend.connects.length;

  const stopStream = messages.stream('during');
  await sleep(300);
  gate.blocked = false;
  await waitFor(() => page.evaluate(() => window.conn.transport === 'websocket'),
    'the move back to the websocket');
  await sleep(300);
  await stopStream();
  await messages.burst('after', 5);

  await waitFor(async () => (await texts(page)).length >= messages.sent.length, 'every message');
  await sleep(1500);  // longer than the server holds a poll (1 s): a poll would have come back
  assert.deepEqual(await texts(page), messages.sent);  // each exactly once, in order
  const state = await page.evaluate(() => ({port: new URL(window.conn.websocket.url).port,
    opens: window.events.filter((e) => e[0] === 'open').map((e) => e[1]),
    closes: window.events.filter((e) => e[0] === 'close').length,
    pollsOnWebsocket: window.pollsOnWebsocket}));
  assert.equal(state.port, String(gate.server.address().port));
  assert.deepEqual(state.opens, ['longpoll', 'websocket']);
  assert.equal(state.closes, 0);
  assert.equal(state.pollsOnWebsocket, 0);
  assert.equal(backend.connects.length, connects);  // moved back without a new connect
  await page.close();
});

test('client heartbeats keep a connection alive; without them it is collected and reopened',
  async () => {
    const [{page: beating}, {page: silent, backend}] = await Promise.all([appPage(), appPage()]);
    await startClient(beating, {username: unique('dave')});
    await startClient(silent, {username: unique('erin'), heartbeats: false});
    for (const page of [beating, silent]) {
      await waitFor(() => page.evaluate(() => window.conn.connected), 'the websocket to open');
    }
    const beatingId = await beating.evaluate(() => window.conn.connectionId);
    await waitFor(() => backend.connects.length >= 2,
      'the silent client to be collected and connect again', 15000);
    assert.equal(await beating.evaluate(() => window.events.filter((e) => e[0] === 'open').length), 1);
    assert.equal(await isConnected(beatingId), true);
    await beating.close();
    await silent.close();
  });

test('disconnect() removes the connection at once and does not reconnect', async () => {
  const {page, backend} = await appPage();
  await startClient(page, {username: unique('frank'), serverUrl: API});
  await waitFor(() => page.evaluate(() => window.conn.connected), 'the websocket to open');
  const connId = await page.evaluate(() => window.conn.connectionId);
  assert.equal(await page.evaluate(() => window.conn.disconnect()), true);
  await waitFor(async () => !(await isConnected(connId)), 'the server to forget it', 3000);
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.equal(backend.connects.length, 1);
  await page.close();
});

for (const transport of ['websocket', 'longpoll']) {
  test(`over ${transport}: the network drops for 5 s while messages are posted; the page `
    + 'shows every message once, in order', async (t) => {
    const app = await gatedApp(t, transport);
    const {page, backend} = app;
    const room = unique('room');
    await apiOk('POST', '/channel_config', {[room]: {store_history: true, history_size: 1000}});
    await startClient(page, {username: unique('ivan'), channels: [room], serverUrl: API});
    await waitFor(() => page.evaluate((wanted) => window.conn.transport === wanted, transport),
      `the ${transport}`);
    const messages = messenger(room);
    await messages.burst('before', 3);
    await waitFor(async () => (await texts(page)).length === 3, 'the first messages');
    const connects = backend.connects.length;

    const stopStream = messages.stream('during');
    t.after(stopStream);
    await dropNetwork(app);
    await waitFor(async () => backend.connects.length > connects
      && await page.evaluate(() => window.conn.connected), 'the client to come back');
    await sleep(300);
    await stopStream();
    await messages.burst('after', 3);

    await waitFor(async () => (await texts(page)).length >= messages.sent.length,
      'every message', 15000);
    await sleep(1000);
    assert.deepEqual(await texts(page), messages.sent);  // each exactly once, in order
    assert.deepEqual(await page.evaluate(() => window.events.filter((e) => e[0] === 'open')
      .map((e) => e[1])), [transport, transport]);
    const recoveries = await recoveryEvents(page);  // it resumed with its positions
    assert.deepEqual(recoveries.map(([name, statuses]) => [name, statuses[room].recovered]),
      [['recovery', true]]);
  });
}

test('when history does not reach back far enough, onRecoveryFailed is called with where the '
  + 'channel is now, and later messages still arrive', async (t) => {
  const app = await gatedApp(t);
  const {page} = app;
  const room = unique('room');
  await apiOk('POST', '/channel_config', {[room]: {store_history: true, history_size: 2}});
  await startClient(page, {username: unique('judy'), channels: [room]});
  await waitFor(() => page.evaluate(() => window.conn.connected), 'the websocket to open');
  const messages = messenger(room);
  await messages.burst('before', 3);
  await waitFor(async () => (await texts(page)).length === 3, 'the first messages');
  const {epoch} = await page.evaluate((room) => window.conn.positions[room], room);

  await dropNetwork(app, () => messages.burst('missed', 5));
  await waitFor(async () => (await recoveryEvents(page)).length, 'the recovery');
  await messages.burst('after', 2);
  await waitFor(async () => (await texts(page)).length >= 5, 'the later messages');
  await sleep(500);

  assert.deepEqual(await recoveryEvents(page), [
    ['recovery', {[room]: {recovered: false, epoch, offset: 8}}],
    ['recoveryFailed', room, {epoch, offset: 8}],
  ]);
  // What history still had of the gap is not handed over: the app reloads up to offset 8.
  assert.deepEqual(await texts(page), ['before 0', 'before 1', 'before 2', 'after 0', 'after 1']);
  assert.deepEqual(await page.evaluate((room) => window.conn.positions[room], room),
    {epoch, offset: 10});
});
