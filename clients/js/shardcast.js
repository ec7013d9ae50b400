/**
 * shardcast browser client.
 *
 * Your page talks to your own backend (connectUrl, subscribeUrl, ...), which authorizes the
 * user and calls shardcast with its secret; the page then receives messages over the websocket
 * whose `ws_url` the connect answer carries, or by long polling `/listen` on the shardcast API
 * when websockets fail. Lost transports come back by themselves, with capped exponential
 * backoff and jitter, and the connection's channels are subscribed again.
 *
 * The interface follows Channelstream's ChannelStreamConnection, so a frontend written for it
 * ports with small changes (see README.md in this folder).
 */

export const VERSION = '0.1.0';

const MUTATOR_TYPES = [
  'connect', 'subscribe', 'unsubscribe', 'message', 'messageEdit', 'messageDelete',
  'userState', 'disconnect',
];

/** Events and the Channelstream-style method each one also calls (override it in a subclass). */
const LEGACY_CALLBACKS = {
  message: 'listenMessageCallback',
  open: 'listenOpenedCallback',
  close: 'listenCloseCallback',
  error: 'listenErrorCallback',
  channelsUpdate: 'channelsChangedCallback',
  connect: 'connectCallback',
  connectError: 'connectErrorCallback',
  disconnect: 'disconnectCallback',
};

const HEARTBEAT_FRAME = JSON.stringify({type: 'heartbeat'});
const LIVENESS_CLOSE_CODE = 4000;
const UNAUTHORIZED = 401;

/** A call to your backend (or to shardcast) answered with an error status, or not at all. */
export class RequestError extends Error {
  constructor(request, status, body, cause) {
    const what = status ? `answered ${status}` : `failed: ${cause && cause.message}`;
    super(`${request.method} ${request.url} ${what}`);
    this.name = 'RequestError';
    this.request = request;
    this.status = status;
    this.body = body;
    this.cause = cause;
  }
}

function defaultEnvironment() {
  const scope = globalThis;
  return {
    WebSocket: scope.WebSocket,
    fetch: scope.fetch ? scope.fetch.bind(scope) : undefined,
    setTimeout: scope.setTimeout.bind(scope),
    clearTimeout: scope.clearTimeout.bind(scope),
    setInterval: scope.setInterval.bind(scope),
    clearInterval: scope.clearInterval.bind(scope),
    random: Math.random,
  };
}

function withConnId(url, connId) {
  const separator = url.includes('?') ? '&' : '?';
  return `${url}${separator}conn_id=${encodeURIComponent(connId)}`;
}

function sameList(a, b) {
  return a.length === b.length && a.every((item, index) => item === b[index]);
}

export class ShardcastConnection {
  /**
   * @param {object} [settings] any of the properties below, e.g. `{username, connectUrl}`;
   *   `environment` replaces WebSocket, fetch, the timer functions or `random` (for tests).
   */
  constructor(settings = {}) {
    const {environment, ...properties} = settings;
    /** Who connects; sent to connectUrl. */
    this.username = 'Anonymous';
    /** Channels this connection is (or should be) in; kept up to date from the answers. */
    this.channels = [];
    /** The connection id shardcast gave (the browser's only credential). */
    this.connectionId = null;
    /** True while a websocket or long poll is attached. */
    this.connected = false;
    /** 'websocket', 'longpoll' or null. */
    this.transport = null;
    this.websocket = null;

    // Your application's endpoints; each one calls shardcast with the secret.
    this.connectUrl = '';
    this.subscribeUrl = '';
    this.unsubscribeUrl = '';
    this.messageUrl = '';
    this.messageEditUrl = '';
    this.messageDeleteUrl = '';
    this.userStateUrl = '';
    /** Default: serverUrl + '/disconnect' (a client endpoint: no secret needed). */
    this.disconnectUrl = '';
    /** shardcast's API URL, e.g. 'https://rt.example.com'; gives the long-poll URL. */
    this.serverUrl = '';
    /** Default: serverUrl + '/listen'. */
    this.longPollUrl = '';
    /** Only used when the connect answer has no `ws_url` (Channelstream servers). */
    this.websocketUrl = '';

    this.shouldReconnect = true;
    this.heartbeats = true;
    /** Milliseconds between `{"type": "heartbeat"}` frames the client sends. */
    this.heartbeatInterval = 10000;
    /** A websocket silent this long (the server sends `[]` every 5 s) is taken as dead. */
    this.livenessTimeout = 30000;
    /** Use long polling only. */
    this.noWebsocket = false;
    /** Websockets that fail to open in a row before the client falls back to long polling. */
    this.websocketAttempts = 2;
    /** Reconnect delays: initial * factor ** attempt, capped at max, with jitter (ms). */
    this.backoff = {initial: 500, factor: 2, max: 30000};

    /** Functions that may change a request `{url, method, headers, body, credentials}`. */
    this.mutators = Object.fromEntries(MUTATOR_TYPES.map((type) => [type, []]));

    // Callbacks; the Channelstream-style methods (listenMessageCallback, ...) are called too.
    this.onMessage = null;        // (envelopes: object[]) for every non-empty frame
    this.onOpen = null;           // ({transport}) when a websocket or long poll is attached
    this.onClose = null;          // (event) when it is lost or closed
    this.onError = null;          // (error) transport and request errors
    this.onChannelsUpdate = null; // (channels: string[]) when the channel list changes
    this.onConnect = null;        // (answer) after each successful connect call
    this.onConnectError = null;   // (error) when a connect call fails
    this.onDisconnect = null;     // () after disconnect()

    this._env = {...defaultEnvironment(), ...(environment || {})};
    this._generation = 0;     // bumps on every new transport: older callbacks are ignored
    this._attempt = 0;        // reconnects since the last successful open
    this._websocketFailures = 0;
    this._closing = false;
    this._timers = {};
    this._poll = null;
    this._wsUrl = null;
    Object.assign(this, properties);
  }

  /** Register a mutator for one request type (Channelstream's addMutator). */
  addMutator(type, mutator) {
    if (!this.mutators[type]) {
      throw new Error(`unknown mutator type ${type}; use one of ${MUTATOR_TYPES.join(', ')}`);
    }
    this.mutators[type].push(mutator);
  }

  // -- calls to your backend --------------------------------------------------------------

  /** Ask your backend for a connection, then attach a websocket (or long poll) to it. */
  async connect() {
    this._closing = false;
    this._cancel('reconnect');
    const body = {username: this.username, channels: this.channels};
    if (this.connectionId) {
      body.conn_id = this.connectionId;  // a connection still alive keeps what it missed
    }
    let answer;
    try {
      answer = await this._request('connect', 'POST', this.connectUrl, body);
    } catch (error) {
      this._emit('connectError', error);
      this._emit('error', error);
      this._reconnectLater();
      throw error;
    }
    if (this._closing) {
      return answer;
    }
    this.connectionId = answer.conn_id;
    this._wsUrl = answer.ws_url
      || (this.websocketUrl ? withConnId(this.websocketUrl, answer.conn_id) : null);
    this._setChannels(answer.channels || this.channels);
    this._emit('connect', answer);
    this._listen();
    return answer;
  }

  /** Join channels (before connect(): just remember them). Resolves to the answer. */
  subscribe(channels) {
    const wanted = [].concat(channels);
    return this._changeChannels('subscribe', this.subscribeUrl, wanted,
      [...new Set([...this.channels, ...wanted])]);
  }

  /** Leave channels. Resolves to the answer. */
  unsubscribe(channels) {
    const unwanted = [].concat(channels);
    return this._changeChannels('unsubscribe', this.unsubscribeUrl, unwanted,
      this.channels.filter((name) => !unwanted.includes(name)));
  }

  /** Post a message through your backend (which decides what it becomes). */
  message(message) {
    return this._request('message', 'POST', this.messageUrl, message);
  }

  /** Edit a message through your backend (PATCH). */
  edit(message) {
    return this._request('messageEdit', 'PATCH', this.messageEditUrl, message);
  }

  /** Delete a message through your backend (DELETE). */
  delete(message) {
    return this._request('messageDelete', 'DELETE', this.messageDeleteUrl, message);
  }

  /** Change the user's state through your backend. */
  updateUserState(state) {
    return this._request('userState', 'POST', this.userStateUrl,
      {username: this.username, conn_id: this.connectionId, update_state: state});
  }

  /** Close the connection for good: no reconnect; the server forgets it at once. */
  async disconnect() {
    this._closing = true;
    this._cancel('reconnect');
    const connId = this.connectionId;
    const url = this.disconnectUrl || (this.serverUrl && `${this.serverUrl}/disconnect`);
    let answer = null;
    if (connId && url) {  // first, so the server does not see the close as a drop
      try {
        answer = await this._request('disconnect', 'POST', withConnId(url, connId),
          {conn_id: connId});
      } catch (error) {
        this._emit('error', error);
      }
    }
    this._dropTransport({reason: 'disconnect'});
    this.connectionId = null;
    this._emit('disconnect', answer);
    return answer;
  }

  // -- Channelstream-style callbacks: override in a subclass if you prefer ----------------

  listenMessageCallback(envelopes) {}
  listenOpenedCallback(event) {}
  listenCloseCallback(event) {}
  listenErrorCallback(error) {}
  channelsChangedCallback(channels) {}
  connectCallback(answer) {}
  connectErrorCallback(error) {}
  disconnectCallback(answer) {}

  // -- transports -------------------------------------------------------------------------

  _listen() {
    this._dropTransport(null);
    const generation = ++this._generation;
    const websocket = !this.noWebsocket && this._env.WebSocket && this._wsUrl
      && this._websocketFailures < this.websocketAttempts;
    if (websocket) {
      this._openWebsocket(generation);
    } else {
      this._longPoll(generation);
    }
  }

  _openWebsocket(generation) {
    let socket;
    try {
      socket = new this._env.WebSocket(this._wsUrl);
    } catch (error) {
      this._websocketFailures += 1;
      this._emit('error', error);
      this._lost(generation, {reason: 'websocket refused', error});
      return;
    }
    this.websocket = socket;
    let opened = false;
    socket.onopen = () => {
      if (generation !== this._generation) return;
      opened = true;
      this._websocketFailures = 0;
      this._opened('websocket');
      this._startHeartbeats(generation);
      this._alive(generation);
    };
    socket.onmessage = (event) => {
      if (generation !== this._generation) return;
      this._alive(generation);
      this._receive(event.data);
    };
    socket.onerror = (event) => {
      if (generation === this._generation) this._emit('error', event);
    };
    socket.onclose = (event) => {
      if (generation !== this._generation) return;
      if (!opened) this._websocketFailures += 1;
      this._lost(generation, event);
    };
  }

  _receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (error) {
      this._emit('error', error);
      return;
    }
    // `[]` is a heartbeat: it only proves the server is there.
    if (Array.isArray(frame) && frame.length) {
      this._emit('message', frame);
    }
  }

  _startHeartbeats(generation) {
    if (!this.heartbeats) return;
    this._timers.heartbeat = this._env.setInterval(() => {
      const socket = this.websocket;
      if (generation === this._generation && socket && socket.readyState === 1) {
        socket.send(HEARTBEAT_FRAME);
      }
    }, this.heartbeatInterval);
  }

  /** Any frame proves liveness; silence for livenessTimeout drops the websocket. */
  _alive(generation) {
    this._cancel('liveness');
    this._timers.liveness = this._env.setTimeout(() => {
      if (generation !== this._generation) return;
      this._lost(generation, {code: LIVENESS_CLOSE_CODE, reason: 'no frame from the server'});
    }, this.livenessTimeout);
  }

  async _longPoll(generation) {
    const base = this.longPollUrl || (this.serverUrl && `${this.serverUrl}/listen`);
    if (!base) {
      this._emit('error', new Error('websockets failed and there is no long-poll URL: '
        + 'set serverUrl (or longPollUrl)'));
      this._lost(generation, {reason: 'no long-poll URL'});
      return;
    }
    this._opened('longpoll');
    while (generation === this._generation) {
      const controller = new AbortController();
      this._poll = controller;
      const request = {method: 'GET', url: withConnId(base, this.connectionId)};
      let response;
      let text;
      try {
        response = await this._env.fetch(request.url,
          {signal: controller.signal, cache: 'no-store'});
        text = await response.text();
      } catch (error) {
        if (generation !== this._generation) return;
        this._emit('error', new RequestError(request, 0, null, error));
        this._lost(generation, {reason: 'long poll failed', error});
        return;
      }
      if (generation !== this._generation) return;
      if (!response.ok) {
        // 401: the server no longer knows the connection; connect again.
        if (response.status !== UNAUTHORIZED) {
          this._emit('error', new RequestError(request, response.status, text));
        }
        this._lost(generation, {reason: `long poll answered ${response.status}`});
        return;
      }
      this._receive(text);
    }
  }

  _opened(transport) {
    this._attempt = 0;
    this.connected = true;
    this.transport = transport;
    this._emit('open', {transport});
  }

  /** The transport of ``generation`` is gone: tell, then come back unless told not to. */
  _lost(generation, event) {
    if (generation !== this._generation) return;
    this._dropTransport(event);
    this._reconnectLater();
  }

  /** Close whatever transport is attached; ``event`` (if any) goes to onClose. */
  _dropTransport(event) {
    this._generation += 1;
    this._cancel('heartbeat');
    this._cancel('liveness');
    const socket = this.websocket;
    this.websocket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
      try {
        socket.close(event && event.code === LIVENESS_CLOSE_CODE ? LIVENESS_CLOSE_CODE : 1000);
      } catch (error) {
        // already closed
      }
    }
    if (this._poll) {
      this._poll.abort();
      this._poll = null;
    }
    const wasConnected = this.connected;
    this.connected = false;
    this.transport = null;
    if (wasConnected && event) {
      this._emit('close', event);
    }
  }

  _reconnectLater() {
    if (this._closing || !this.shouldReconnect || this._timers.reconnect) return;
    const {initial, factor, max} = this.backoff;
    const ceiling = Math.min(max, initial * factor ** this._attempt);
    this._attempt += 1;
    const delay = ceiling / 2 + this._env.random() * ceiling / 2;
    this._timers.reconnect = this._env.setTimeout(() => {
      this._timers.reconnect = null;
      this.connect().catch(() => {});  // reported through onConnectError
    }, delay);
  }

  _cancel(name) {
    const timer = this._timers[name];
    if (timer) {
      (name === 'heartbeat' ? this._env.clearInterval : this._env.clearTimeout)(timer);
      this._timers[name] = null;
    }
  }

  // -- requests -----------------------------------------------------------------------------

  async _changeChannels(type, url, names, wanted) {
    const before = this.channels;
    if (!this.connectionId) {
      this._setChannels(wanted);  // connect() will ask for them
      return {channels: wanted};
    }
    const answer = await this._request(type, 'POST', url,
      {channels: names, conn_id: this.connectionId});
    this._setChannels(answer && Array.isArray(answer.channels) ? answer.channels : wanted);
    return answer;
  }

  _setChannels(channels) {
    const sorted = [...channels].sort();
    if (!sameList(sorted, this.channels)) {
      this.channels = sorted;
      this._emit('channelsUpdate', sorted);
    }
  }

  async _request(type, method, url, body) {
    if (!url) {
      throw new Error(`no URL for ${type}: set ${type}Url`);
    }
    const request = {
      url, method, body, credentials: 'same-origin',
      headers: {'Content-Type': 'application/json'},
    };
    for (const mutator of this.mutators[type]) {
      await mutator(request);
    }
    let response;
    let text;
    try {
      response = await this._env.fetch(request.url, {
        method: request.method,
        headers: request.headers,
        credentials: request.credentials,
        body: request.body === undefined ? undefined : JSON.stringify(request.body),
      });
      text = await response.text();
    } catch (error) {
      throw new RequestError(request, 0, null, error);
    }
    let data = text;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (error) {
      // not JSON: keep the text
    }
    if (!response.ok) {
      throw new RequestError(request, response.status, data);
    }
    return data;
  }

  _emit(name, ...args) {
    const handler = this[`on${name[0].toUpperCase()}${name.slice(1)}`];
    for (const callback of [handler, this[LEGACY_CALLBACKS[name]]]) {
      if (typeof callback !== 'function') continue;
      try {
        callback.apply(this, args);
      } catch (error) {
        console.error(`shardcast: the ${name} callback failed`, error);
      }
    }
  }
}

/** The Channelstream name, for frontends being ported. */
export {ShardcastConnection as ChannelStreamConnection};
export default ShardcastConnection;
