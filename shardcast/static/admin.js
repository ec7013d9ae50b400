// The admin panel: polls /admin/admin.json and /admin/channels.json every few seconds. The
// server filters the channels and sends the first 200: cheap with any number of them.
const REFRESH_MS = 2000;
const FILTER_WAIT_MS = 250;
const HISTORY_SHOWN = 10;
const $ = (id) => document.getElementById(id);
const expanded = new Set();
let previous = null;   // the last sample: {at, shards}
let page = {channels: {}, remaining: 0};   // the last /admin/channels.json answer
let filtering = null;                        // the timer of a filter being typed

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.map((child) => (child instanceof Node ? child : String(child))));
  return node;
}

async function getJson(url) {
  const response = await fetch(url, {cache: 'no-store'});
  if (response.status === 403) {
    window.location.assign('/admin/login');
    throw new Error('signed out');
  }
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  return response.json();
}

function duration(seconds) {
  const s = Math.floor(seconds);
  const [d, h, m] = [Math.floor(s / 86400), Math.floor(s / 3600) % 24, Math.floor(s / 60) % 60];
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

function rate(now, shard, key) {
  const before = previous && previous.shards.find((entry) => entry.shard === shard.shard);
  if (!before || before.pid !== shard.pid) return null;
  return Math.max(0, (shard[key] - before[key]) / ((now - previous.at) / 1000));
}

const fixed = (value) => (value === null ? '–' : value < 10 ? value.toFixed(1) : Math.round(value));

function showStats(stats) {
  const now = performance.now();
  $('version').textContent = `v${stats.version}`;
  $('uptime').textContent = stats.uptime;
  $('total-connections').textContent = stats.total_connections;
  $('total-users').textContent = stats.unique_user_count;
  $('total-channels').textContent = stats.total_channels;
  const rates = stats.shards.map((shard) => [rate(now, shard, 'messages_published'),
    rate(now, shard, 'messages_delivered')]);
  const known = rates.filter(([published]) => published !== null);
  $('total-rate').textContent = known.length
    ? fixed(known.reduce((sum, [published]) => sum + published, 0)) : '–';
  $('shards').tBodies[0].replaceChildren(...stats.shards.map((shard, index) => el('tr',
    {'data-shard': shard.shard},
    el('td', {}, shard.shard), el('td', {}, shard.pid), el('td', {}, shard.connections),
    el('td', {}, shard.users_connected), el('td', {}, shard.channels),
    el('td', {}, fixed(rates[index][0])), el('td', {}, fixed(rates[index][1])),
    el('td', {}, duration(shard.uptime)))));
  previous = {at: now, shards: stats.shards};
  if (stats.nodes) showCluster(stats);
}

const ms = (seconds) => `${(seconds * 1000).toFixed(1)} ms`;

/** A cluster node's panel: every node's last report, and Redis as this node's shards see it. */
function showCluster(stats) {
  $('cluster').hidden = false;
  $('node-count').textContent = stats.nodes.length;
  const now = Date.now() / 1000;
  $('nodes').tBodies[0].replaceChildren(...stats.nodes.map((node) => el('tr',
    {'data-node': node.node_id},
    el('td', {}, node.node_id), el('td', {}, node.address), el('td', {}, node.shards),
    el('td', {}, node.connections), el('td', {}, node.messages_published),
    el('td', {}, node.messages_delivered),
    el('td', {}, `${duration(Math.max(0, now - node.last_seen))} ago`))));
  $('redis').tBodies[0].replaceChildren(...stats.shards.map((shard) => el('tr', {},
    el('td', {}, shard.shard), el('td', {}, ms(shard.redis_latency)),
    el('td', {}, ms(shard.subscription_lag)), el('td', {}, shard.subscriptions),
    el('td', {}, shard.redis_reconnects + shard.subscription_reconnects),
    el('td', {}, shard.subscription_stalls), el('td', {}, shard.gaps_repaired),
    el('td', {}, shard.gaps_lost), el('td', {}, shard.redis_failures))));
}

function settingsChips(settings) {
  const on = Object.entries(settings).filter(([, value]) => value === true).map(([key]) => key);
  return el('span', {class: 'chips'}, ...on.map((key) => el('span', {class: 'chip'},
    key.replace(/_/g, ' '))), settings.store_history ? el('span', {class: 'chip muted'},
    `size ${settings.history_size}`) : '');
}

function channelDetail(channel) {
  const history = channel.history.slice(-HISTORY_SHOWN).reverse();
  return el('tr', {class: 'detail'}, el('td', {colspan: 6}, el('div', {class: 'detail-grid'},
    el('div', {}, el('h3', {}, `Members (${channel.users.length})`),
      channel.users.length ? el('ul', {class: 'members'}, ...channel.users.map((user) =>
        el('li', {}, el('a', {href: '#', onclick: (event) => {
          event.preventDefault();
          lookup(user);
        }}, user)))) : el('p', {class: 'faint'}, 'nobody')),
    el('div', {}, el('h3', {}, 'Settings'),
      el('pre', {}, JSON.stringify(channel.settings, null, 2))),
    el('div', {}, el('h3', {}, `History (${channel.history.length})`),
      history.length ? el('ol', {class: 'history'}, ...history.map((entry) => el('li', {},
        el('span', {class: 'faint'}, `${entry.timestamp.slice(11, 19)} ${entry.user}: `),
        JSON.stringify(entry.message ?? null)))) : el('p', {class: 'faint'}, 'empty')))));
}

async function loadChannels() {
  const filter = $('channel-filter').value.trim();
  const answer = await getJson(`/admin/channels.json?filter=${encodeURIComponent(filter)}`);
  if (filter === $('channel-filter').value.trim()) {   // else a newer filter is on its way
    page = answer;
    showChannels();
  }
}

function showChannels() {
  const names = Object.keys(page.channels);
  $('channel-count').textContent = names.length + page.remaining;
  const rows = [];
  for (const name of names) {
    const channel = page.channels[name];
    rows.push(el('tr', {class: 'channel', 'data-channel': name, onclick: () => {
      if (!expanded.delete(name)) expanded.add(name);
      showChannels();
    }}, el('td', {class: 'name'}, name), el('td', {}, channel.total_users),
    el('td', {}, channel.total_connections), el('td', {}, settingsChips(channel.settings)),
    el('td', {}, channel.history.length),
    el('td', {class: 'faint'}, channel.last_active ? channel.last_active.slice(0, 19) : '–')));
    if (expanded.has(name)) rows.push(channelDetail(channel));
  }
  if (page.remaining) {
    rows.push(el('tr', {}, el('td', {colspan: 6, class: 'faint'},
      `${page.remaining} more: narrow the filter`)));
  }
  $('channels').tBodies[0].replaceChildren(...rows);
}

function connectionsTable(connections) {
  return el('table', {class: 'compact'}, el('thead', {}, el('tr', {}, el('th', {}, 'Connection'),
    el('th', {}, 'User'), el('th', {}, 'Transport'), el('th', {}, 'Channels'),
    el('th', {}, 'Idle'))), el('tbody', {}, ...connections.map((conn) => el('tr', {},
    el('td', {class: 'mono'}, conn.conn_id), el('td', {}, conn.user),
    el('td', {}, conn.transport || 'none attached'), el('td', {}, conn.channels.join(', ') || '–'),
    el('td', {}, `${conn.idle}s`)))));
}

async function lookup(query) {
  $('lookup-q').value = query;
  const response = await fetch(`/admin/lookup.json?q=${encodeURIComponent(query)}`);
  const answer = await response.json();
  const result = $('lookup-result');
  if (!response.ok) {
    result.replaceChildren(el('p', {class: 'error'}, Object.values(answer).flat().join(' ')));
  } else if (answer.user) {
    const {user} = answer;
    result.replaceChildren(el('div', {class: 'found'},
      el('h3', {}, `User ${user.user}`), el('pre', {}, JSON.stringify(user.state, null, 2)),
      user.connections.length ? connectionsTable(user.connections)
        : el('p', {class: 'faint'}, 'No connections.')));
  } else {
    result.replaceChildren(el('div', {class: 'found'}, el('h3', {}, 'Connection'),
      connectionsTable([answer.connection])));
  }
}

async function refresh() {
  try {
    const [stats] = await Promise.all([getJson('/admin/admin.json'), loadChannels()]);
    showStats(stats);
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    $('updated').classList.remove('error');
  } catch (error) {
    $('updated').textContent = `update failed: ${error.message}`;
    $('updated').classList.add('error');
  }
  setTimeout(refresh, REFRESH_MS);
}

$('lookup').addEventListener('submit', (event) => {
  event.preventDefault();
  if ($('lookup-q').value.trim()) lookup($('lookup-q').value.trim());
});
$('channel-filter').addEventListener('input', () => {
  clearTimeout(filtering);
  filtering = setTimeout(() => loadChannels().catch(() => {}), FILTER_WAIT_MS);
});
$('sign-out').addEventListener('click', async () => {
  await fetch('/admin/logout', {method: 'POST'});
  window.location.assign('/admin/login');
});
refresh();
