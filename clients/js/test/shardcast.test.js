import assert from 'node:assert/strict';
import {describe, test} from 'node:test';

import ShardcastConnection, {ChannelStreamConnection, RequestError} from '../shardcast.js';
import {FakeClock, deferred, fakeFetch, fakeWebSocketClass, settle} from './fakes.js';

const CONN_ID = '5f0c1a52-6d5e-4d39-9d0a-0d6f2d1c7a11';
const WS_URL = `ws://127.0.0.1:8101/ws?conn_id=${CONN_ID}`;
const WS_OFFSETS = `${WS_URL}&offsets=1`;  // what the client opens: ws_url asking for positions

/** A client (of ``Client``) wired to fakes; `routes` add to or replace the default backend
 *  answers. */
function setup(routes = {}, settings = {}, Client = ShardcastConnection) {
  const clock = new FakeClock();
  const WebSocket = fakeWebSocketClass();
  const connectAnswer = (call) => ({body: {
    conn_id: CONN_ID, username: call.body.username, channels: [...call.body.channels].sort(),
    ws_url: WS_URL}});
  const fetch = fakeFetch({'/connect': connectAnswer, ...routes});
  const events = [];
  const client = new Client({
    username: 'alice', connectUrl: '/connect', serverUrl: 'http://api',
    environment: {WebSocket, fetch, ...clock, random: () => 0.5},
    onMessage: (frame) => events.push(['message', frame]),
    onOpen: (event) => events.push(['open', event.transport]),
    onClose: () => events.push(['close']),
    onChannelsUpdate: (channels) => events.push(['channels', channels]),
    ...settings,
  });
  return {client, clock, WebSocket, fetch, events, sockets: WebSocket.sockets};
}

async function connected(routes, settings, Client) {
  const world = setup(routes, settings, Client);
  await world.client.connect();
  world.sockets.at(-1).open();
  return world;
}

describe('connect', () => {
  test('posts username and channels to connectUrl and opens the ws_url it answers', async () => {
    const {client, fetch, sockets, events} = setup();
    client.channels = ['b', 'a'];
    const answer = await client.connect();
    assert.equal(answer.conn_id, CONN_ID);
    assert.deepEqual(fetch.calls[0].body, {username: 'alice', channels: ['b', 'a']});
    assert.equal(fetch.calls[0].method, 'POST');
    assert.equal(sockets.length, 1);
    assert.equal(sockets[0].url, WS_OFFSETS);
    sockets[0].open();
    assert.equal(client.connected, true);
    assert.equal(client.connectionId, CONN_ID);
    assert.deepEqual(events, [['channels', ['a', 'b']], ['open', 'websocket']]);
  });

  test('mutators can change the request before it is sent', async () => {
    const {client, fetch} = setup();
    client.addMutator('connect', (request) => {
      request.headers['X-CSRF'] = 'token';
      request.body.extra = 1;
    });
    await client.connect();
    assert.equal(fetch.calls[0].headers['X-CSRF'], 'token');
    assert.equal(fetch.calls[0].body.extra, 1);
    assert.throws(() => client.addMutator('nope', () => {}), /unknown mutator type/);
  });

  test('falls back to websocketUrl when the answer has no ws_url', async () => {
    const {client, sockets} = setup({'/connect': () => ({body: {conn_id: CONN_ID, channels: []}})},
      {websocketUrl: 'ws://old/ws'});
    await client.connect();
    assert.equal(sockets[0].url, `ws://old/ws?conn_id=${CONN_ID}&offsets=1`);
  });

  test('a failed connect rejects, reports and retries later', async () => {
    let fail = true;
    const {client, clock, sockets} = setup({'/connect': () => (fail
      ? {status: 403, body: {error: 'no'}}
      : {body: {conn_id: CONN_ID, channels: [], ws_url: WS_URL}})});
    const errors = [];
    client.onConnectError = (error) => errors.push(error);
    await assert.rejects(client.connect(), (error) => error instanceof RequestError
      && error.status === 403 && error.body.error === 'no');
    assert.equal(errors.length, 1);
    fail = false;
    await clock.advance(1000);
    assert.equal(sockets.length, 1);
  });
});

describe('messages and heartbeats', () => {
  test('frames go to onMessage and the Channelstream-style callback; [] does not', async () => {
    class Legacy extends ShardcastConnection {
      listenMessageCallback(frame) { this.legacy = frame; }
    }
    const clock = new FakeClock();
    const WebSocket = fakeWebSocketClass();
    const fetch = fakeFetch({'/connect': () => ({body: {conn_id: CONN_ID, channels: [],
      ws_url: WS_URL}})});
    const client = new Legacy({connectUrl: '/connect', environment: {WebSocket, fetch, ...clock}});
    const received = [];
    client.onMessage = (frame) => received.push(frame);
    await client.connect();
    WebSocket.sockets[0].open();
    WebSocket.sockets[0].receive([]);
    const envelope = {type: 'message', channel: 'a', message: {text: 'hi'}};
    WebSocket.sockets[0].receive([envelope]);
    assert.deepEqual(received, [[envelope]]);
    assert.deepEqual(client.legacy, [envelope]);
  });

  test('sends {"type": "heartbeat"} every heartbeatInterval while open', async () => {
    const {clock, sockets} = await connected({}, {heartbeatInterval: 1000});
    await clock.advance(3500);
    assert.deepEqual(sockets[0].sent, Array(3).fill('{"type":"heartbeat"}'));
  });

  test('a silent websocket is dropped after livenessTimeout; [] keeps it alive', async () => {
    const {clock, sockets, events} = await connected({}, {livenessTimeout: 3000});
    await clock.advance(2500);
    sockets[0].receive([]);
    await clock.advance(2500);
    assert.equal(sockets[0].closedWith, null);
    await clock.advance(600);
    assert.equal(sockets[0].closedWith, 4000);
    assert.deepEqual(events.at(-1), ['close']);
  });
});

describe('reconnect', () => {
  test('a lost websocket comes back through connect, with its conn_id and channels', async () => {
    const {client, clock, fetch, sockets, events} = await connected();
    client.channels = ['room', 'x'];
    sockets[0].drop();
    assert.equal(client.connected, false);
    assert.deepEqual(events.at(-1), ['close']);
    await clock.advance(370);
    assert.equal(fetch.calls.length, 1);
    await clock.advance(10);  // the first delay: 500 / 2 + random() * 500 / 2 = 375 ms
    assert.equal(fetch.calls.length, 2);
    assert.deepEqual(fetch.calls[1].body,
      {username: 'alice', channels: ['room', 'x'], conn_id: CONN_ID});
    sockets[1].open();
    assert.equal(client.connected, true);
  });

  test('backoff grows exponentially, is capped, jittered, and resets after an open', async () => {
    const {client, clock, fetch} = setup({'/connect': () => ({status: 503, body: null})},
      {backoff: {initial: 100, factor: 2, max: 1000}});
    await client.connect().catch(() => {});
    const delays = [];
    for (let i = 0; i < 6; i++) {
      delays.push(clock.pending()[0]);
      await clock.advance(clock.pending()[0]);
    }
    // random() = 0.5: each delay is 3/4 of its ceiling 100, 200, 400, 800, 1000, 1000
    assert.deepEqual(delays, [75, 150, 300, 600, 750, 750]);
    assert.equal(fetch.calls.length, 7);
  });

  test('disconnect() stops reconnecting and tells the server', async () => {
    const {client, clock, fetch, sockets} = await connected({'http://api/disconnect': () => ({body: true})});
    const answer = await client.disconnect();
    assert.equal(answer, true);
    const call = fetch.calls.at(-1);
    assert.equal(call.url, `http://api/disconnect?conn_id=${CONN_ID}`);
    assert.deepEqual(call.body, {conn_id: CONN_ID});
    assert.equal(sockets[0].closedWith, 1000);
    await clock.advance(60000);
    assert.equal(sockets.length, 1);
    assert.equal(client.connected, false);
  });
});

describe('long polling', () => {
  test('websockets that never open twice make the client poll /listen', async () => {
    const polls = [];
    const {client, clock, sockets, events} = setup({'http://api/listen': (call) => {
      const answer = deferred();
      polls.push({call, answer});
      return answer.promise;
    }});
    await client.connect();
    sockets[0].fail();
    await clock.advance(clock.pending()[0]);
    sockets[1].fail();
    await clock.advance(clock.pending()[0]);
    assert.equal(sockets.length, 2);
    assert.equal(client.transport, 'longpoll');
    assert.equal(polls.length, 1);
    assert.equal(polls[0].call.url, `http://api/listen?conn_id=${CONN_ID}&offsets=1`);
    const envelope = {type: 'message', channel: 'a', message: {n: 1}};
    polls[0].answer.resolve({body: [envelope]});
    await settle();
    assert.deepEqual(events.filter((e) => e[0] === 'message'), [['message', [envelope]]]);
    assert.equal(polls.length, 2);
    polls[1].answer.resolve({body: []});
    await settle();
    assert.equal(polls.length, 3);
  });

  test('without a long-poll URL the client keeps trying the websocket', async () => {
    const {client, clock, sockets} = setup({}, {serverUrl: ''});
    await client.connect();
    for (let i = 0; i < 4; i++) {
      sockets.at(-1).fail();
      await clock.advance(clock.pending()[0]);
    }
    assert.equal(sockets.length, 5);
    sockets.at(-1).open();
    assert.equal(client.transport, 'websocket');
  });

  test('a 401 from /listen (connection gone) connects again', async () => {
    let polls = 0;
    const {client, clock, fetch} = setup({'http://api/listen': () => {
      polls += 1;
      return polls === 1 ? {status: 401, body: {conn_id: ['Unknown connection']}} : deferred().promise;
    }}, {noWebsocket: true});
    await client.connect();
    await settle();
    await clock.advance(clock.pending()[0]);
    const connects = fetch.calls.filter((call) => call.path === '/connect');
    assert.equal(connects.length, 2);
    assert.equal(polls, 2);
  });
});

/** A client that fell back to long polling; `polls` are the /listen calls, answered at will. */
async function polling(settings, routes) {
  const polls = [];
  const world = setup({'http://api/listen': (call) => {
    const answer = deferred();
    polls.push({call, answer});
    return answer.promise;
  }, ...routes}, {websocketRetry: {initial: 1000, factor: 2, max: 4000}, ...settings});
  await world.client.connect();
  for (let i = 0; i < world.client.websocketAttempts; i++) {
    world.sockets.at(-1).fail();
    await world.clock.advance(world.clock.pending()[0]);
  }
  assert.equal(world.client.transport, 'longpoll');
  return {...world, polls};
}

const envelope = (n) => ({type: 'message', channel: 'a', uuid: `u${n}`, message: {n}});

describe('moving back to the websocket', () => {
  test('while long polling, the websocket is tried again with capped, jittered backoff',
    async () => {
      const {clock, sockets, polls} = await polling();
      const delays = [];
      for (let i = 0; i < 4; i++) {
        delays.push(clock.pending()[0]);
        const before = sockets.length;
        await clock.advance(clock.pending()[0]);
        assert.equal(sockets.length, before + 1);
        assert.equal(sockets.at(-1).url, WS_OFFSETS);
        sockets.at(-1).fail();
        await settle();
      }
      // random() = 0.5: each delay is 3/4 of its ceiling 1000, 2000, 4000, 4000
      assert.deepEqual(delays, [750, 1500, 3000, 3000]);
      assert.equal(polls.length, 1);  // the long poll went on meanwhile
    });

  test('once the websocket opens, the poll in flight is the last; its answer comes first',
    async () => {
      const {client, clock, sockets, polls, events} = await polling({heartbeatInterval: 1000});
      await clock.advance(clock.pending()[0]);
      const socket = sockets.at(-1);
      socket.open();
      socket.receive([envelope(2)]);  // the shard sent these after answering the poll
      assert.equal(client.transport, 'longpoll');
      polls[0].answer.resolve({body: [envelope(1)]});
      await settle();
      socket.receive([envelope(3)]);
      assert.deepEqual(events.slice(-4), [['message', [envelope(1)]], ['open', 'websocket'],
        ['message', [envelope(2)]], ['message', [envelope(3)]]]);
      assert.equal(events.filter((e) => e[0] === 'close').length, 0);
      assert.equal(client.transport, 'websocket');
      assert.equal(client.websocket, socket);
      await clock.advance(2500);
      assert.equal(polls.length, 1);
      assert.deepEqual(socket.sent, Array(2).fill('{"type":"heartbeat"}'));
    });

  test('a poll that fails after the websocket opened still hands over to it', async () => {
    const {client, clock, sockets, polls, fetch} = await polling();
    const calls = fetch.calls.length;
    await clock.advance(clock.pending()[0]);
    sockets.at(-1).open();
    polls[0].answer.reject(new TypeError('network'));
    await settle();
    assert.equal(client.transport, 'websocket');
    await clock.advance(10000);
    assert.equal(fetch.calls.length, calls);  // neither a reconnect nor another poll
  });

  test('a websocket closed before the poll was answered gives delivery back to the poll',
    async () => {
      const {client, clock, sockets, polls, events} = await polling();
      await clock.advance(clock.pending()[0]);
      const socket = sockets.at(-1);
      socket.open();
      socket.receive([envelope(1)]);
      socket.drop(1000);  // the poll reached the shard after the websocket and took over
      assert.deepEqual(events.at(-1), ['message', [envelope(1)]]);
      polls[0].answer.resolve({body: [envelope(2)]});
      await settle();
      assert.deepEqual(events.at(-1), ['message', [envelope(2)]]);
      assert.equal(client.transport, 'longpoll');
      assert.equal(polls.length, 2);
      assert.deepEqual(clock.pending(), [1500]);  // and tries again later
    });

  test('a websocket that never opens is given up after livenessTimeout', async () => {
    const {clock, sockets} = await polling({livenessTimeout: 3000});
    await clock.advance(clock.pending()[0]);
    const socket = sockets.at(-1);
    await clock.advance(2900);
    assert.equal(socket.closedWith, null);
    await clock.advance(100);
    assert.equal(socket.closedWith, 1000);
    assert.deepEqual(clock.pending(), [1500]);
  });

  test('disconnect() stops the tries and closes the websocket being tried', async () => {
    const {client, clock, sockets} = await polling({},
      {'http://api/disconnect': () => ({body: true})});
    await clock.advance(clock.pending()[0]);
    const socket = sockets.at(-1);
    await client.disconnect();
    assert.equal(socket.closedWith, 1000);
    await clock.advance(60000);
    assert.equal(sockets.at(-1), socket);
  });

  test('websocketRetry: null stays on long polling', async () => {
    const {clock, sockets} = await polling({websocketRetry: null});
    await clock.advance(60000);
    assert.equal(sockets.length, 2);
  });
});

/** A channel message at a position, as shardcast sends it to a client that asked for them. */
const positioned = (channel, epoch, offset) => ({type: 'message', channel,
  uuid: `${channel}-${epoch}-${offset}`, epoch, offset, message: {n: offset}});
const messagesOf = (events) => events.filter((e) => e[0] === 'message').flatMap((e) => e[1]);
const sinceOf = (url) => JSON.parse(new URL(url).searchParams.get('since'));

/** Drop the websocket and let the client connect again; resolves to the new socket. */
async function reconnected({clock, sockets}) {
  sockets.at(-1).drop();
  await clock.advance(clock.pending()[0]);
  return sockets.at(-1);
}

describe('positions and resume', () => {
  test('after a drop the new websocket asks to resume from the last position of each channel',
    async () => {
      const world = await connected({}, {channels: ['a', 'b']});
      world.sockets[0].receive([positioned('a', 'e1', 1), positioned('b', 'e7', 4)]);
      world.sockets[0].receive([positioned('a', 'e1', 2), {type: 'presence', channel: 'b'}]);
      const socket = await reconnected(world);
      assert.equal(world.fetch.calls.at(-1).body.conn_id, CONN_ID);
      assert.equal(socket.url.split('&')[0], WS_URL);
      assert.deepEqual(sinceOf(socket.url),
        {a: {epoch: 'e1', offset: 2}, b: {epoch: 'e7', offset: 4}});
      assert.deepEqual(world.client.positions, sinceOf(socket.url));
    });

  test('a message already handed over is dropped, on any transport; a new epoch starts over',
    async () => {
      const world = await connected({}, {channels: ['a']});
      world.sockets[0].receive([positioned('a', 'e1', 1), positioned('a', 'e1', 2)]);
      const socket = await reconnected(world);
      socket.open();
      socket.receive([positioned('a', 'e1', 2), positioned('a', 'e1', 3)]);
      socket.receive([positioned('a', 'e1', 1)]);
      socket.receive([positioned('a', 'e2', 1)]);
      assert.deepEqual(messagesOf(world.events).map((m) => [m.epoch, m.offset]),
        [['e1', 1], ['e1', 2], ['e1', 3], ['e2', 1]]);
      assert.equal(world.events.filter((e) => e[0] === 'message').length, 3);  // none empty
      assert.deepEqual(world.client.positions, {a: {epoch: 'e2', offset: 1}});
    });

  test('recovered: false calls onRecoveryFailed and moves the position to what the server has',
    async () => {
      class App extends ShardcastConnection {
        recoveryFailedCallback(channel, position) { this.legacy = [channel, position]; }
      }
      const failed = [];
      const recoveries = [];
      const world = await connected({}, {channels: ['a', 'b'],
        onRecoveryFailed: (channel, position) => failed.push([channel, position]),
        onRecovery: (statuses) => recoveries.push(statuses)}, App);
      world.sockets[0].receive([positioned('a', 'e1', 3), positioned('b', 'e1', 5)]);
      const socket = await reconnected(world);
      socket.open();
      const statuses = {a: {recovered: false, epoch: 'e1', offset: 9},
        b: {recovered: true, epoch: 'e1', offset: 6}};
      socket.receive([{type: 'recovery', channels: statuses}]);
      assert.deepEqual(failed, [['a', {epoch: 'e1', offset: 9}]]);
      assert.deepEqual(world.client.legacy, failed[0]);
      assert.deepEqual(recoveries, [statuses]);
      socket.receive([positioned('a', 'e1', 8), positioned('b', 'e1', 6)]);
      socket.receive([positioned('a', 'e1', 10)]);
      assert.deepEqual(messagesOf(world.events).map((m) => m.uuid),
        ['a-e1-3', 'b-e1-5', 'b-e1-6', 'a-e1-10']);  // no recovery envelope among them
    });

  test('a channel the server no longer has (epoch null) is forgotten', async () => {
    const failed = [];
    const world = await connected({}, {channels: ['a'],
      onRecoveryFailed: (channel, position) => failed.push([channel, position])});
    world.sockets[0].receive([positioned('a', 'e1', 3)]);
    const socket = await reconnected(world);
    socket.open();
    socket.receive([{type: 'recovery', channels: {a: {recovered: false, epoch: null, offset: 0}}}]);
    assert.deepEqual(failed, [['a', {epoch: null, offset: 0}]]);
    assert.deepEqual(world.client.positions, {});
    assert.equal((await reconnected(world)).url, WS_OFFSETS);
  });

  test('long polling resumes on its first poll only; the websocket taking over asks for offsets',
    async () => {
      const positions = {a: {epoch: 'e1', offset: 4}};  // saved by an earlier page
      const {clock, sockets, polls, events} = await polling({channels: ['a'], positions});
      assert.deepEqual(sockets.map((socket) => sinceOf(socket.url)), [positions, positions]);
      assert.deepEqual(sinceOf(polls[0].call.url), positions);
      polls[0].answer.resolve({body: [
        {type: 'recovery', channels: {a: {recovered: true, epoch: 'e1', offset: 5}}},
        positioned('a', 'e1', 5)]});
      await settle();
      assert.equal(polls[1].call.url, `http://api/listen?conn_id=${CONN_ID}&offsets=1`);
      await clock.advance(clock.pending()[0]);
      const socket = sockets.at(-1);
      assert.equal(socket.url, WS_OFFSETS);
      socket.open();
      socket.receive([positioned('a', 'e1', 6), positioned('a', 'e1', 7)]);
      polls[1].answer.resolve({body: [positioned('a', 'e1', 6)]});  // the seam, repeated
      await settle();
      assert.deepEqual(messagesOf(events).map((m) => m.offset), [5, 6, 7]);
    });

  test('unsubscribing forgets the channel\'s position', async () => {
    const world = await connected({'/unsubscribe': () => ({body: {channels: ['a']}})},
      {channels: ['a', 'b'], unsubscribeUrl: '/unsubscribe'});
    world.sockets[0].receive([positioned('a', 'e1', 1), positioned('b', 'e1', 1)]);
    await world.client.unsubscribe('b');
    assert.deepEqual(Object.keys(world.client.positions), ['a']);
  });

  test('resume: false keeps Channelstream URLs and hands over every envelope', async () => {
    const {client, clock, sockets, events} = await connected({}, {resume: false});
    assert.equal(sockets[0].url, WS_URL);
    const recovery = {type: 'recovery', channels: {}};
    sockets[0].receive([positioned('a', 'e1', 1), positioned('a', 'e1', 1), recovery]);
    assert.deepEqual(messagesOf(events),
      [positioned('a', 'e1', 1), positioned('a', 'e1', 1), recovery]);
    assert.deepEqual(client.positions, {});
    assert.equal((await reconnected({clock, sockets})).url, WS_URL);
  });

  test('resume: false polls /listen with the conn_id only', async () => {
    const {polls} = await polling({resume: false});
    assert.equal(polls[0].call.url, `http://api/listen?conn_id=${CONN_ID}`);
  });
});

describe('backend calls', () => {
  test('subscribe and unsubscribe post conn_id and keep channels from the answers', async () => {
    const {client, fetch, events} = await connected({
      '/subscribe': (call) => ({body: {channels: ['a', ...call.body.channels].sort(),
        subscribed_to: call.body.channels}}),
      '/unsubscribe': () => ({body: {channels: ['a'], unsubscribed_from: ['b']}}),
    }, {subscribeUrl: '/subscribe', unsubscribeUrl: '/unsubscribe', channels: ['a']});
    const answer = await client.subscribe(['b']);
    assert.deepEqual(answer.subscribed_to, ['b']);
    assert.deepEqual(fetch.calls.at(-1).body, {channels: ['b'], conn_id: CONN_ID});
    assert.deepEqual(client.channels, ['a', 'b']);
    await client.unsubscribe('b');
    assert.deepEqual(client.channels, ['a']);
    assert.deepEqual(events.filter((e) => e[0] === 'channels').map((e) => e[1]),
      [['a', 'b'], ['a']]);
  });

  test('subscribe before connect only remembers the channels', async () => {
    const {client, fetch} = setup();
    await client.subscribe(['later']);
    assert.deepEqual(client.channels, ['later']);
    assert.equal(fetch.calls.length, 0);
  });

  test('message, edit, delete and updateUserState use their URLs and methods', async () => {
    const echo = (call) => ({body: {method: call.method, body: call.body}});
    const {client} = await connected({'/m': echo, '/e': echo, '/d': echo, '/s': echo},
      {messageUrl: '/m', messageEditUrl: '/e', messageDeleteUrl: '/d', userStateUrl: '/s'});
    assert.deepEqual(await client.message({text: 'hi'}), {method: 'POST', body: {text: 'hi'}});
    assert.equal((await client.edit({uuid: 'u'})).method, 'PATCH');
    assert.equal((await client.delete({uuid: 'u'})).method, 'DELETE');
    assert.deepEqual((await client.updateUserState({status: 'away'})).body,
      {username: 'alice', conn_id: CONN_ID, update_state: {status: 'away'}});
  });

  test('errors carry the status and the decoded body; unreachable is status 0', async () => {
    const {client} = await connected({'/m': () => ({status: 422, body: {text: ['too long']}})},
      {messageUrl: '/m', messageEditUrl: '/nowhere'});
    await assert.rejects(client.message({}), (error) => error.status === 422
      && error.body.text[0] === 'too long');
    await assert.rejects(client.edit({}), (error) => error.status === 0
      && error instanceof RequestError);
    await assert.rejects(client.delete({}), /no URL for messageDelete/);
  });
});

test('ChannelStreamConnection is the same class', () => {
  assert.equal(ChannelStreamConnection, ShardcastConnection);
});
