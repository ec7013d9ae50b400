// Test doubles for the client's environment: a manual clock, websockets and fetch.

export class FakeClock {
  constructor() {
    this.now = 0;
    this.timers = new Map();
    this.nextId = 1;
    this.setTimeout = (callback, delay) => this._add(callback, delay, null);
    this.setInterval = (callback, delay) => this._add(callback, delay, delay);
    this.clearTimeout = (id) => this.timers.delete(id);
    this.clearInterval = (id) => this.timers.delete(id);
  }

  _add(callback, delay, every) {
    const id = this.nextId++;
    this.timers.set(id, {at: this.now + delay, callback, every});
    return id;
  }

  /** Delays of the pending one-shot timers. */
  pending() {
    return [...this.timers.values()].filter((t) => t.every === null).map((t) => t.at - this.now);
  }

  /** Move time on, firing what falls due, in order. */
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= end)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      const [id, timer] = due;
      this.now = timer.at;
      if (timer.every === null) this.timers.delete(id);
      else timer.at += timer.every;
      timer.callback();
      await settle();
    }
    this.now = end;
  }
}

/** Let pending promise callbacks run. */
export async function settle() {
  for (let i = 0; i < 20; i++) await Promise.resolve();
  await new Promise((resolve) => setImmediate(resolve));
}

export function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(data) { this.sent.push(data); }
    close(code) { this.closedWith = code; this.readyState = 3; }
    // what the server side does:
    open() { this.readyState = 1; this.onopen && this.onopen({}); }
    receive(value) { this.onmessage && this.onmessage({data: JSON.stringify(value)}); }
    drop(code = 1006) { this.readyState = 3; this.onclose && this.onclose({code}); }
    fail() { this.onerror && this.onerror({type: 'error'}); this.drop(1006); }
  }
  FakeWebSocket.sockets = sockets;
  return FakeWebSocket;
}

/** fetch that answers from `routes[url-without-query]` (a function of the request). */
export function fakeFetch(routes) {
  const calls = [];
  async function fetch(url, init = {}) {
    const path = url.split('?')[0];
    const call = {url, path, method: init.method || 'GET', headers: init.headers,
      body: init.body === undefined ? undefined : JSON.parse(init.body), signal: init.signal};
    calls.push(call);
    const route = routes[path];
    if (!route) throw new TypeError(`fake fetch: no route for ${path}`);
    const answer = await route(call);
    const status = answer.status || 200;
    return {ok: status < 400, status, text: async () => JSON.stringify(answer.body ?? null)};
  }
  fetch.calls = calls;
  return fetch;
}

/** A pending fetch answer that the test resolves when it wants. */
export function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((ok, fail) => { resolve = ok; reject = fail; });
  return {promise, resolve, reject};
}
