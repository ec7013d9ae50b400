// The demo chat's page: signs in through the demo backend, then lives on shardcast envelopes.
const $ = (id) => document.getElementById(id);
const config = await (await fetch('/config.json')).json();
const {ShardcastConnection} = await import(`${config.serverUrl}/static/shardcast.js`);

const state = {
  conn: null,
  me: null,
  current: config.rooms[0],
  rooms: Object.fromEntries(config.rooms.map((name) => [name, newRoom()])),
  states: new Map(),   // user -> public state {status, color}
};

function newRoom() {
  return {joined: false, items: [], members: new Set(), unread: 0};
}

// -- talking to the backend and to shardcast ------------------------------------------------

async function signIn(username) {
  const conn = new ShardcastConnection({
    username,
    shouldReconnect: false,  // until signed in: a refused name should not be retried
    channels: [config.rooms[0]],
    serverUrl: config.serverUrl,
    connectUrl: '/api/connect',
    subscribeUrl: '/api/subscribe',
    unsubscribeUrl: '/api/unsubscribe',
    messageUrl: '/api/message',
    messageEditUrl: '/api/message',
    messageDeleteUrl: '/api/message',
    userStateUrl: '/api/user_state',
    onConnect: (answer) => loadInfo(answer.channels_info, answer.channels),
    onMessage: (envelopes) => envelopes.forEach(receive),
    onOpen: ({transport}) => showConnection('live', `live · ${transport}`),
    onClose: () => showConnection('reconnecting', 'reconnecting…'),
  });
  const answer = await conn.connect();
  conn.shouldReconnect = true;
  state.conn = conn;
  state.me = answer.username;
  state.states.set(state.me, answer.public_state);
  return answer;
}

/** channels_info of a connect or subscribe answer: history, members and their states. */
function loadInfo(info, joined) {
  for (const entry of info.users || []) state.states.set(entry.user, entry.state);
  for (const [name, channel] of Object.entries(info.channels || {})) {
    const room = state.rooms[name];
    if (!room) continue;
    room.items = channel.history.map(fromEnvelope);
    room.members = new Set(channel.users);
  }
  for (const [name, room] of Object.entries(state.rooms)) room.joined = joined.includes(name);
  render();
}

function fromEnvelope(envelope) {
  return {kind: 'message', uuid: envelope.uuid, user: envelope.user,
    text: envelope.message ? envelope.message.text : '', timestamp: envelope.timestamp,
    edited: envelope.edited};
}

function receive(envelope) {
  const room = state.rooms[envelope.channel];
  if (!room) return;
  const index = room.items.findIndex((item) => item.uuid === envelope.uuid);
  switch (envelope.type) {
    case 'message':
      if (index === -1) room.items.push(fromEnvelope(envelope));
      if (envelope.channel !== state.current && !envelope.catchup) room.unread += 1;
      break;
    case 'message:edit':
      if (index !== -1) {
        Object.assign(room.items[index], {text: envelope.message.text, edited: envelope.edited});
      }
      break;
    case 'message:delete':
      if (index !== -1) room.items.splice(index, 1);
      break;
    case 'presence':
      presence(room, envelope);
      break;
    case 'user_state_change':
      state.states.set(envelope.user, envelope.message.state);
      break;
  }
  render();
}

function presence(room, envelope) {
  const joined = envelope.message.action === 'joined';
  if (envelope.users.length) {
    room.members = new Set(envelope.users.map((entry) => entry.user));
    for (const entry of envelope.users) state.states.set(entry.user, entry.state);
  } else if (joined) {
    room.members.add(envelope.user);
  } else {
    room.members.delete(envelope.user);
  }
  if (joined && envelope.state) state.states.set(envelope.user, envelope.state);
  if (!envelope.catchup) {
    room.items.push({kind: 'notice', text: `${envelope.user} ${joined ? 'joined' : 'left'}`});
  }
}

async function toggleRoom(name) {
  const room = state.rooms[name];
  const answer = room.joined ? await state.conn.unsubscribe([name])
    : await state.conn.subscribe([name]);
  if (!room.joined) loadInfo(answer.channels_info, answer.channels);
  else {
    room.joined = false;
    room.members.delete(state.me);
  }
  render();
}

// -- rendering ----------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

const PALETTE = ['#64748b', '#0f766e', '#9333ea', '#b45309', '#be123c', '#1d4ed8'];

/** Someone's initial on their colour, with a status dot while their state is known. */
function avatar(user) {
  const known = state.states.get(user);
  const node = el('span', {class: 'avatar', 'data-status': known ? known.status : null},
    user.slice(0, 1));
  const hash = [...user].reduce((sum, char) => sum + char.charCodeAt(0), 0);
  node.style.background = (known && known.color) || PALETTE[hash % PALETTE.length];
  return node;
}

function time(timestamp) {
  const date = new Date(`${timestamp}Z`);
  return date.toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
}

function render() {
  if (!state.me) return;
  const room = state.rooms[state.current];
  room.unread = 0;
  $('room-list').replaceChildren(...config.rooms.map((name) => {
    const entry = state.rooms[name];
    const classes = [entry.joined && 'joined', name === state.current && 'current'];
    return el('li', {class: classes.filter(Boolean).join(' '), 'data-room': name,
      onclick: () => { state.current = name; render(); }},
    el('span', {}, `# ${name}`),
    entry.unread ? el('span', {class: 'badge'}, String(entry.unread)) : '');
  }));
  $('room-title').textContent = `# ${state.current}`;
  $('room-toggle').textContent = room.joined ? 'Leave room' : 'Join room';
  $('text').disabled = !room.joined;
  $('text').placeholder = room.joined ? `Message #${state.current}` : 'Join the room to write';
  renderMessages(room);
  const members = [...room.members].sort();
  $('people-count').textContent = String(members.length);
  $('people').replaceChildren(...members.map((user) => el('li', {'data-user': user},
    avatar(user),
    el('span', {class: 'who'}, el('span', {}, user + (user === state.me ? ' (you)' : '')),
      el('span', {class: 'status'}, (state.states.get(user) || {}).status || 'online')))));
  const mine = state.states.get(state.me) || {};
  $('status').value = mine.status || 'online';
  $('me-avatar').replaceWith(Object.assign(avatar(state.me), {id: 'me-avatar'}));
}

function renderMessages(room) {
  const list = $('messages');
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  if (!room.items.length) {
    list.replaceChildren(el('li', {class: 'empty'},
      room.joined ? 'No messages yet. Say hello!' : 'Join this room to see what is said.'));
    return;
  }
  list.replaceChildren(...room.items.map((item) => (item.kind === 'notice'
    ? el('li', {class: 'notice'}, item.text) : messageItem(item))));
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function messageItem(item) {
  const own = item.user === state.me;
  const text = el('div', {class: 'text'}, item.text);
  const node = el('li', {class: 'msg', 'data-uuid': item.uuid},
    avatar(item.user),
    el('div', {class: 'body'},
      el('div', {class: 'meta'}, el('span', {class: 'author'}, item.user),
        el('span', {class: 'time'}, time(item.timestamp)),
        item.edited ? el('span', {class: 'edited'}, '(edited)') : ''),
      text),
    own ? el('div', {class: 'actions'},
      el('button', {class: 'ghost', type: 'button', 'data-action': 'edit',
        onclick: () => startEdit(node, text, item)}, 'Edit'),
      el('button', {class: 'ghost', type: 'button', 'data-action': 'delete',
        onclick: () => state.conn.delete({uuid: item.uuid, channel: state.current})}, 'Delete'))
      : '');
  return node;
}

function startEdit(node, text, item) {
  node.classList.add('editing');
  const box = el('input', {class: 'edit-box', value: item.text, maxlength: 2000});
  box.addEventListener('keydown', async (event) => {
    if (event.key === 'Escape') render();
    if (event.key !== 'Enter' || !box.value.trim()) return;
    await state.conn.edit({uuid: item.uuid, channel: state.current, text: box.value});
  });
  text.replaceWith(box);
  box.focus();
}

function showConnection(kind, text) {
  $('conn').dataset.state = kind;
  $('conn-text').textContent = text;
}

// -- wiring -----------------------------------------------------------------------------------

$('status').append(...config.statuses.map((status) => el('option', {value: status}, status)));

$('signin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('signin-error').textContent = '';
  try {
    await signIn($('username').value.trim());
  } catch (error) {
    $('signin-error').textContent = (error.body && error.body.error) || error.message;
    return;
  }
  $('me-name').textContent = state.me;
  $('signin').hidden = true;
  $('chat').hidden = false;
  $('me').hidden = false;
  render();
  $('text').focus();
});

$('composer').addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = $('text').value.trim();
  if (!text) return;
  $('text').value = '';
  await state.conn.message({channel: state.current, text});
});

$('room-toggle').addEventListener('click', () => toggleRoom(state.current));
$('status').addEventListener('change', (event) => state.conn.updateUserState(
  {status: event.target.value}));
$('sign-out').addEventListener('click', async () => {
  await state.conn.disconnect();
  window.location.reload();
});
