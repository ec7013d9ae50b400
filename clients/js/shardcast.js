/**
 * shardcast browser client.
 *
 * Your page talks to your own backend (connectUrl, subscribeUrl, ...), which authorizes the
 * user and calls shardcast with its secret; the page then receives messages over the websocket
 * whose `ws_url` the connect answer carries, or by long polling `/listen` on the shardcast API
 * when websockets fail, trying the websocket again now and then to move back to it. Lost
 * transports come back by themselves, with capped exponential backoff and jitter, and the
 * connection's channels are subscribed again. The client keeps each channel's position (the
 * epoch and offset of the last message it handed over) and sends them on every reconnect, so
 * shardcast replays what was missed; messages it already has are never handed over twice.
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
  recovery: 'recoveryCallback',
  recoveryFailed: 'recoveryFailedCallback',
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

/** ``url`` with ``params`` ({name: value}) added to its query. */
function withQuery(url, params) {
  const query = Object.entries(params)
    .map(([name, value]) => `${name}=${encodeURIComponent(value)}`).join('&');
  if (!query) return url;
  return `${url}${url.includes('?') ? '&' : '?'}${query}`;
}

/** initial * factor ** attempt, capped at max, jittered to between half and all of that (ms). */
function backoffDelay({initial, factor, max}, attempt, random) {
  const ceiling = Math.min(max, initial * factor ** attempt);
  return ceiling / 2 + random() * ceiling / 2;
}

/** Close ``socket`` after silencing its handlers; it may be closed already. */
function closeQuietly(socket, code) {
  socket.onopen = socket.onmessage = socket.onerror = socket.onclose = null;
  try {
    socket.close(code);
  } catch (error) {
    // already closed
  }
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
    /** Delays, shaped like `backoff`, between tries of the websocket while long polling;
     *  null: stay on long polling until the next connect(). */
    this.websocketRetry = {initial: 5000, factor: 2, max: 60000};
    /** Ask for message positions and resume from them after a drop; false: plain
     *  Channelstream envelopes and URLs, no recovery, no deduplication. */
    this.resume = true;
    /** Per channel, the `{epoch, offset}` of the last message handed to onMessage; save it
     *  and pass it back (`new ShardcastConnection({positions})`) to resume in a new page. */
    this.positions = {};

    /** Functions that may change a request `{url, method, headers, body, credentials}`. */
    this.mutators = Object.fromEntries(MUTATOR_TYPES.map((type) => [type, []]));

    // Callbacks; the Channelstream-style methods (listenMessageCallback, ...) are called too.
    this.onMessage = null;        // (envelopes: object[]) for every non-empty frame
    this.onOpen = null;           // ({transport}) when a websocket or long poll is attached,
                                  // and when the client moves from long polling to a websocket
    this.onClose = null;          // (event) when it is lost or closed
    this.onError = null;          // (error) transport and request errors
    this.onChannelsUpdate = null; // (channels: string[]) when the channel list changes
    this.onConnect = null;        // (answer) after each successful connect call
    this.onConnectError = null;   // (error) when a connect call fails
    this.onDisconnect = null;     // () after disconnect()
    this.onRecovery = null;       // ({channel: {recovered, epoch, offset}}) after a resume
    this.onRecoveryFailed = null; // (channel, {epoch, offset}) when messages of the channel
                                  // were lost: reload it; only later ones are handed over

    this._env = {...defaultEnvironment(), ...(environment || {})};
    this._generation = 0;     // bumps on every new transport: older callbacks are ignored
    this._attempt = 0;        // reconnects since the last successful open
    this._websocketFailures = 0;
    this._websocketRetries = 0;  // websocket tries since the client last had one open
    this._probe = null;       // {socket, open, frames}: a websocket tried while long polling
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
      || (this.websocketUrl ? withQuery(this.websocketUrl, {conn_id: answer.conn_id}) : null);
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
        answer = await this._request('disconnect', 'POST', withQuery(url, {conn_id: connId}),
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
  recoveryCallback(statuses) {}
  recoveryFailedCallback(channel, position) {}

  // -- transports -------------------------------------------------------------------------

  _listen() {
    this._dropTransport(null);
    const generation = ++this._generation;
    // Without a long-poll URL there is nothing to fall back to: keep trying the websocket.
    const fallBack = this._websocketFailures >= this.websocketAttempts && this._longPollBase();
    if (this._websocketPossible() && !fallBack) {
      this._openWebsocket(generation);
    } else {
      this._longPoll(generation);
    }
  }

  _websocketPossible() {
    return Boolean(!this.noWebsocket && this._env.WebSocket && this._wsUrl);
  }

  _openWebsocket(generation) {
    let socket;
    try {
      socket = new this._env.WebSocket(withQuery(this._wsUrl, this._positionParams(true)));
    } catch (error) {
      this._websocketFailures += 1;
      this._emit('error', error);
      this._lost(generation, {reason: 'websocket refused', error});
      return;
    }
    this.websocket = socket;
    socket.onopen = () => {
      if (generation === this._generation) this._useWebsocket(socket, generation);
    };
    socket.onerror = (event) => {
      if (generation === this._generation) this._emit('error', event);
    };
    socket.onclose = (event) => {
      if (generation !== this._generation) return;
      this._websocketFailures += 1;  // it never opened
      this._lost(generation, event);
    };
  }

  /** The open ``socket`` carries the connection from now on. */
  _useWebsocket(socket, generation) {
    this.websocket = socket;
    this._websocketFailures = 0;
    this._websocketRetries = 0;
    socket.onmessage = (event) => {
      if (generation !== this._generation) return;
      this._alive(generation);
      this._receive(event.data);
    };
    socket.onclose = (event) => {
      if (generation === this._generation) this._lost(generation, event);
    };
    this._opened('websocket');
    this._startHeartbeats(generation);
    this._alive(generation);
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
    if (!Array.isArray(frame) || !frame.length) return;
    const envelopes = this.resume ? frame.filter((envelope) => this._isNew(envelope)) : frame;
    if (envelopes.length) this._emit('message', envelopes);
  }

  // -- positions and resume ---------------------------------------------------------------

  /**
   * Query parameters of a transport: ask for positions and, for the first transport after a
   * connect (maybe a new connection that holds nothing for us), where to resume from. The
   * websocket that takes over from long polling does not need them: the shard hands over
   * what the connection holds.
   */
  _positionParams(resuming) {
    if (!this.resume) return {};
    if (resuming && Object.keys(this.positions).length) {
      return {since: JSON.stringify(this.positions)};
    }
    return {offsets: 1};
  }

  /** Whether ``envelope`` goes to the app: recovery news and messages it has had do not. */
  _isNew(envelope) {
    if (envelope.type === 'recovery') {
      this._recovered(envelope.channels || {});
      return false;
    }
    const {channel, epoch, offset} = envelope;
    if (typeof epoch !== 'string' || typeof offset !== 'number') return true;  // no position
    const last = this.positions[channel];
    if (last && last.epoch === epoch && offset <= last.offset) return false;
    this.positions[channel] = {epoch, offset};  // a new epoch starts the channel over
    return true;
  }

  /** Where the server could not fill the gap, the app is told and the position moves on to
   *  the channel's current one: what came before it is the app's to reload. */
  _recovered(statuses) {
    this._emit('recovery', statuses);
    for (const [channel, {recovered, epoch, offset}] of Object.entries(statuses)) {
      if (recovered) continue;
      if (epoch) {
        this.positions[channel] = {epoch, offset};
      } else {
        delete this.positions[channel];  // the channel is gone: nothing to resume from
      }
      this._emit('recoveryFailed', channel, {epoch, offset});
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

  _longPollBase() {
    return this.longPollUrl || (this.serverUrl && `${this.serverUrl}/listen`);
  }

  async _longPoll(generation) {
    const base = this._longPollBase();
    if (!base) {
      this._emit('error', new Error('websockets failed and there is no long-poll URL: '
        + 'set serverUrl (or longPollUrl)'));
      this._lost(generation, {reason: 'no long-poll URL'});
      return;
    }
    this._opened('longpoll');
    this._retryWebsocketLater(generation);
    let resuming = true;
    while (generation === this._generation) {
      const url = withQuery(base,
        {conn_id: this.connectionId, ...this._positionParams(resuming)});
      resuming = false;
      const failure = await this._pollOnce(generation, url);
      if (generation !== this._generation) return;
      if (this._probe && this._probe.open) {
        // The shard answered this poll when the websocket attached: it was the last one.
        this._switchToWebsocket(this._probe);
      } else if (failure) {
        this._lost(generation, failure);
      }
    }
  }

  /** One /listen; resolves to null once its answer is delivered, else to why it failed. */
  async _pollOnce(generation, url) {
    const controller = new AbortController();
    this._poll = controller;
    const request = {method: 'GET', url};
    let response;
    let text;
    try {
      response = await this._env.fetch(url, {signal: controller.signal, cache: 'no-store'});
      text = await response.text();
    } catch (error) {
      if (generation === this._generation) {
        this._emit('error', new RequestError(request, 0, null, error));
      }
      return {reason: 'long poll failed', error};
    } finally {
      if (this._poll === controller) this._poll = null;
    }
    if (generation !== this._generation) return null;
    if (!response.ok) {
      // 401: the server no longer knows the connection; connect again.
      if (response.status !== UNAUTHORIZED) {
        this._emit('error', new RequestError(request, response.status, text));
      }
      return {reason: `long poll answered ${response.status}`};
    }
    this._receive(text);
    return null;
  }

  // -- moving back from long polling to a websocket ---------------------------------------

  _retryWebsocketLater(generation) {
    if (!this.websocketRetry || !this._websocketPossible()) return;
    const delay = backoffDelay(this.websocketRetry, this._websocketRetries, this._env.random);
    this._websocketRetries += 1;
    this._timers.websocketRetry = this._env.setTimeout(() => {
      this._timers.websocketRetry = null;
      if (generation === this._generation) this._probeWebsocket(generation);
    }, delay);
  }

  /**
   * Open a websocket beside the long poll. When it opens, the shard answers the poll in flight
   * at once and delivers on the websocket from then on; frames that arrive on it before that
   * answer wait in ``frames``, so the app gets everything in the order it was sent.
   */
  _probeWebsocket(generation) {
    let socket;
    try {
      socket = new this._env.WebSocket(withQuery(this._wsUrl, this._positionParams(false)));
    } catch (error) {
      this._emit('error', error);
      this._retryWebsocketLater(generation);
      return;
    }
    const probe = {socket, open: false, frames: []};
    this._probe = probe;
    // A websocket that neither opens nor fails (a proxy that swallows it) is given up.
    this._timers.probe = this._env.setTimeout(() => {
      this._timers.probe = null;
      this._endProbe();
      this._retryWebsocketLater(generation);
    }, this.livenessTimeout);
    socket.onopen = () => {
      probe.open = true;
      this._cancel('probe');
    };
    socket.onmessage = (event) => probe.frames.push(event.data);
    socket.onerror = (event) => this._emit('error', event);
    socket.onclose = () => {
      this._cancel('probe');
      this._probe = null;
      // Closed before it took over: failed to open, or a poll that reached the shard after
      // it took delivery back; whatever the websocket carried came before that poll's answer.
      probe.frames.forEach((data) => this._receive(data));
      this._retryWebsocketLater(generation);
    };
  }

  /** The poll in flight when ``probe`` opened is answered: the websocket takes over. */
  _switchToWebsocket(probe) {
    this._probe = null;
    const generation = ++this._generation;  // ends the poll loop
    this._useWebsocket(probe.socket, generation);
    probe.frames.forEach((data) => this._receive(data));
  }

  /** Close the websocket being tried, if any, without a word to its handlers. */
  _endProbe() {
    const probe = this._probe;
    this._probe = null;
    this._cancel('probe');
    if (probe) closeQuietly(probe.socket, 1000);
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
    this._cancel('websocketRetry');
    this._endProbe();
    const socket = this.websocket;
    this.websocket = null;
    if (socket) {
      closeQuietly(socket,
        event && event.code === LIVENESS_CLOSE_CODE ? LIVENESS_CLOSE_CODE : 1000);
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
    const delay = backoffDelay(this.backoff, this._attempt, this._env.random);
    this._attempt += 1;
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
      for (const name of Object.keys(this.positions)) {
        if (!sorted.includes(name)) delete this.positions[name];  // left: nothing to resume
      }
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
