"""The cluster's atomic steps, as Lua scripts run by Redis (key names: ``keys.Keys``).

Every script that sends something to a channel's subscribers PUBLISHes it itself, so what
subscribers see is in the order Redis ran the scripts. A publication is
``"<offset> <epoch> <store_frames>\\n<route JSON>\\n<frame>"``: offset 0 and epoch "-" for what
carries no position (presence, edits, activations); the route is the one ``Shard.deliver``
takes, with ``null`` where store_frames goes (the channel's setting, filled in by Redis).

Scripts are loaded (SCRIPT LOAD) as the first commands of every connection and then called by
their SHA, so a Redis that restarted empty costs nothing extra and no command overtakes them.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

from .resp import Redis

# One message: set the epoch if missing, count the offset, keep the history entry (capped at
# hsize, expiring), publish. An unknown channel is skipped (false), as on one node.
# ARGV: channel, pub/sub channel, new epoch, history entry JSON or '', route\nframe, now, TTL ms
PUBLISH = """
local meta = KEYS[1]
local flags = redis.call('HMGET', meta, 'store', 'hsize', 'frames', 'epoch')
if not flags[2] then return false end
local epoch = flags[4]
if not epoch then
  epoch = ARGV[3]
  redis.call('HSET', meta, 'epoch', epoch)
end
local offset = redis.call('HINCRBY', meta, 'offset', 1)
redis.call('HSET', meta, 'last_active', ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
if redis.call('PTTL', meta) > 0 then redis.call('PEXPIRE', meta, ARGV[7]) end
local size = tonumber(flags[2])
if flags[1] == '1' and ARGV[4] ~= '' and size > 0 then
  redis.call('ZADD', KEYS[2], offset, offset .. ':' .. ARGV[4])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -size - 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
redis.call('PUBLISH', ARGV[2], offset .. ' ' .. epoch .. ' ' .. flags[3] .. '\\n' .. ARGV[5])
return {offset, epoch}
"""

# Something without a position (presence, state change, edit, delete) to a known channel.
ANNOUNCE = """
local frames = redis.call('HGET', KEYS[1], 'frames')
if not frames then return 0 end
redis.call('PUBLISH', ARGV[1], '0 - ' .. frames .. '\\n' .. ARGV[2])
return 1
"""

# A connection joins a channel (created with the given settings if missing). The activation
# is published in order with the channel's messages: the connection's shard delivers what
# follows it and nothing before; its position line holds the channel's current offset and
# epoch, where the shard starts counting. Returns {first connection of the user here, settings}.
# ARGV: channel, pub/sub channel, conn id, user, public state JSON or '', activation route,
# new uuid, now, meta field/value pairs... (for a new channel)
JOIN = """
local meta = KEYS[1]
if redis.call('EXISTS', meta) == 0 then
  redis.call('HSET', meta, 'offset', 0, 'uuid', ARGV[7], 'epoch', ARGV[7], unpack(ARGV, 9))
end
redis.call('PERSIST', meta)
redis.call('HSET', meta, 'last_active', ARGV[8])
redis.call('ZADD', KEYS[6], ARGV[8], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
else
  redis.call('HDEL', KEYS[4], ARGV[4])
end
local first = 0
if redis.call('HSETNX', KEYS[2], ARGV[3], ARGV[4]) == 1 then
  if redis.call('HINCRBY', KEYS[3], ARGV[4], 1) == 1 then first = 1 end
end
local at = redis.call('HMGET', meta, 'offset', 'epoch')
if not at[2] then
  at[2] = ARGV[7]
  redis.call('HSET', meta, 'epoch', at[2])
end
redis.call('PUBLISH', ARGV[2], at[1] .. ' ' .. at[2] .. ' 1\\n' .. ARGV[6] .. '\\n')
return {first, redis.call('HGET', meta, 'settings')}
"""

# A connection leaves a channel. Returns false if it was not in it, else {last connection of
# its user here, the user, settings}. A channel left empty expires after the history TTL.
# ARGV: channel, conn id, TTL ms, now
LEAVE = """
redis.call('SREM', KEYS[5], ARGV[1])
local user = redis.call('HGET', KEYS[2], ARGV[2])
if not user then return false end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'last_active', ARGV[4])
local last = 0
if redis.call('HINCRBY', KEYS[3], user, -1) <= 0 then
  redis.call('HDEL', KEYS[3], user)
  redis.call('HDEL', KEYS[4], user)
  last = 1
end
if redis.call('HLEN', KEYS[2]) == 0 then
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return {last, user, redis.call('HGET', KEYS[1], 'settings')}
"""

# /channel_config: create the channel or replace its settings; history kept, cut to size.
# ARGV: channel, new uuid, now, TTL ms, meta field/value pairs...
CONFIGURE = """
local meta = KEYS[1]
local created = redis.call('EXISTS', meta) == 0
if created then
  redis.call('HSET', meta, 'offset', 0, 'uuid', ARGV[2], 'epoch', ARGV[2], 'last_active', ARGV[3])
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
end
redis.call('HSET', meta, unpack(ARGV, 5))
local size = tonumber(redis.call('HGET', meta, 'hsize'))
if size == 0 then
  redis.call('DEL', KEYS[2])
else
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -size - 1)
end
if redis.call('HLEN', KEYS[3]) == 0 then redis.call('PEXPIRE', meta, ARGV[4]) end
return 1
"""

# Swap one history entry for its edited form, or remove it (new = '') and remember its offset
# (for resume, a deleted message is not a hole), forgetting deletions older than history.
AMEND = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  return 1
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[3])
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or ARGV[3]
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. oldest)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""

# A member's public state changed: kept for member lists, announced if the channel says so.
STATE_CHANGE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
else
  redis.call('HDEL', KEYS[3], ARGV[1])
end
local flags = redis.call('HMGET', KEYS[1], 'notify', 'frames')
if ARGV[3] == '1' and flags[1] == '1' then
  redis.call('PUBLISH', ARGV[4], '0 - ' .. flags[2] .. '\\n' .. ARGV[5])
end
return 1
"""

# A direct message to every connection of the users (KEYS: their conns hashes), one
# publication per shard inbox holding some. ARGV: amend JSON, stamp, frame.
DIRECT = """
local inboxes = {}
for _, key in ipairs(KEYS) do
  local conns = redis.call('HGETALL', key)
  for i = 1, #conns, 2 do
    local inbox = conns[i + 1]
    inboxes[inbox] = inboxes[inbox] or {}
    table.insert(inboxes[inbox], '"' .. conns[i] .. '"')
  end
end
for inbox, ids in pairs(inboxes) do
  redis.call('PUBLISH', inbox, '0 - 1\\n["u",[' .. table.concat(ids, ',') .. '],' .. ARGV[1]
             .. ',' .. ARGV[2] .. ']\\n' .. ARGV[3])
end
return 1
"""

# A connection's user: created (fresh state) if unknown, state merged, public keys set, the
# connection recorded. Refused when over max_connections_per_user or max_state_keys.
# ARGV: user, conn id, inbox, now, public keys JSON, max conns, max keys, n fresh, fresh
# key/value pairs..., state key/value pairs...
USER_CONNECT = """
local exists = redis.call('EXISTS', KEYS[1]) == 1
local max_conns, max_keys, fresh = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local conns = redis.call('HLEN', KEYS[3])
if max_conns > 0 and redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 and conns + 1 > max_conns then
  return {'conns', conns}
end
local keys, total = {}, 0
if exists then
  for _, key in ipairs(redis.call('HKEYS', KEYS[2])) do keys[key] = true; total = total + 1 end
else
  for i = 9, 8 + fresh, 2 do
    if not keys[ARGV[i]] then keys[ARGV[i]] = true; total = total + 1 end
  end
end
for i = 9 + fresh, #ARGV, 2 do
  if not keys[ARGV[i]] then keys[ARGV[i]] = true; total = total + 1 end
end
if max_keys > 0 and total > max_keys then return {'keys', total} end
if not exists then
  redis.call('DEL', KEYS[2])
  if fresh > 0 then redis.call('HSET', KEYS[2], unpack(ARGV, 9, 8 + fresh)) end
end
if #ARGV >= 9 + fresh then redis.call('HSET', KEYS[2], unpack(ARGV, 9 + fresh)) end
redis.call('HSET', KEYS[1], 'public_keys', ARGV[5], 'last_active', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
for i = 1, 3 do redis.call('PERSIST', KEYS[i]) end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
return {'ok', redis.call('HGETALL', KEYS[2])}
"""

# /user_state: merge (changed = pairs whose JSON differs: 1, 1.0 and true are not the same),
# public keys replaced when given. ARGV: max keys, public keys JSON or '', now, pairs...
USER_STATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown'} end
local max_keys = tonumber(ARGV[1])
if max_keys > 0 then
  local total = redis.call('HLEN', KEYS[2])
  for i = 4, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 0 then total = total + 1 end
  end
  if total > max_keys then return {'keys', total} end
end
local before = redis.call('HGETALL', KEYS[2])
local changed = {}
for i = 4, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[2], ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  if old ~= ARGV[i + 1] and not (old == false and ARGV[i + 1] == 'null') then
    table.insert(changed, ARGV[i]); table.insert(changed, ARGV[i + 1])
  end
end
local old_keys = redis.call('HGET', KEYS[1], 'public_keys')
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'public_keys', ARGV[2]) end
redis.call('HSET', KEYS[1], 'last_active', ARGV[3])
return {'ok', before, redis.call('HGETALL', KEYS[2]), old_keys,
        redis.call('HGET', KEYS[1], 'public_keys'), changed, redis.call('HKEYS', KEYS[3])}
"""

# A connection is gone: forgotten by its user (who expires after gc_users_after without any).
USER_CONN_GONE = """
redis.call('HDEL', KEYS[3], ARGV[2])
if redis.call('HLEN', KEYS[3]) == 0 then
  redis.call('SREM', KEYS[4], ARGV[1])
  for i = 1, 2 do
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
  end
end
return 1
"""

# Entries of a zset of names by last use (users, channels) not used since a time: the ARGV
# triples are (name, its score when read, '1' if its keys had expired by then). Those gone are
# forgotten, those still there looked at again later; an entry whose score moved since (a use)
# is left alone.
FORGET_GONE = """
for i = 2, #ARGV, 3 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    if ARGV[i + 2] == '1' then
      redis.call('ZREM', KEYS[1], ARGV[i])
    else
      redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    end
  end
end
return 1
"""

# A node claims its id as it starts: its key, unless a node on another host or address holds
# it with a report other than ARGV[1] (one seen before, not renewed since: its node died).
# Returns the holder's report, or false once claimed. Run by EVAL, before the node has
# loaded the others. ARGV: report seen or '', claim JSON, TTL ms, host, address
CLAIM = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then
  local holder = cjson.decode(current)
  if holder.host ~= ARGV[4] or holder.address ~= ARGV[5] then return current end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return false
"""

SOURCES = {"publish": PUBLISH, "announce": ANNOUNCE, "join": JOIN, "leave": LEAVE,
           "configure": CONFIGURE, "amend": AMEND, "state_change": STATE_CHANGE,
           "direct": DIRECT, "user_connect": USER_CONNECT, "user_state": USER_STATE,
           "user_conn_gone": USER_CONN_GONE, "forget_gone": FORGET_GONE}


class Scripts:
    """Runs the scripts above by SHA; ``load`` makes them the first commands of a connection."""

    def __init__(self) -> None:
        self.shas = {name: hashlib.sha1(source.encode()).hexdigest()
                     for name, source in SOURCES.items()}

    def load(self, redis: Redis) -> None:
        for source in SOURCES.values():
            redis.send("SCRIPT", "LOAD", source, callback=redis.setup_reply)

    def send(self, redis: Redis, name: str, keys: list[str], args: list[Any],
             callback: Callable[[Any], None] | None = None) -> None:
        redis.send("EVALSHA", self.shas[name], len(keys), *keys, *args, callback=callback)

    def call(self, redis: Redis, name: str, keys: list[str], args: list[Any]):
        return redis.call("EVALSHA", self.shas[name], len(keys), *keys, *args)
