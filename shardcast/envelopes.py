"""The JSON envelopes clients receive, and the clock/uuid stamps they carry."""
from __future__ import annotations

import os
import re
import time
from datetime import datetime
from typing import Any
from uuid import UUID

_second = [-1, ""]   # the last second formatted, reused within that second
_last_stamp = [0]


def now_iso() -> str:
    """Naive UTC ISO-8601 with microseconds, the Channelstream wire format."""
    return iso_time(time.time())


def iso_time(when: float) -> str:
    """``when`` (unix seconds) as ``now_iso`` writes it; times of one second share a
    strftime (datetime's costs several microseconds a call)."""
    second = int(when)
    if second != _second[0]:
        _second[:] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_second[1]}.{int((when - second) * 1e6):06d}"


def format_time(value: datetime) -> str:
    """A client-given time as Channelstream answers it: ISO-8601 as given, re-serialised
    (no fraction when it is zero, the zone kept: "+00:00" for UTC)."""
    return value.isoformat()


def delivered_time(value: str) -> str:
    """A time as Channelstream writes it to clients: UTC's "+00:00" becomes "Z"."""
    return value[:-6] + "Z" if value.endswith("+00:00") else value


def new_epoch() -> str:
    """A name for one life of a channel's history."""
    return os.urandom(6).hex()


def positioned(frame: bytes, position: list) -> bytes:
    """``frame`` (``[{...}]``, one envelope) with the message's "epoch" and "offset" added, for
    the clients that asked for positions (``offsets=1``)."""
    epoch, offset = position
    return b'[{"epoch":"%s","offset":%d,%s' % (epoch.encode(), offset, frame[2:])


def publication_stamp() -> int:
    """Orders envelopes by when they were published, across the processes of one host (they
    share CLOCK_MONOTONIC); stamps taken in one process never repeat."""
    stamp = max(time.monotonic_ns(), _last_stamp[0] + 1)
    _last_stamp[0] = stamp
    return stamp


_RANDOM_BATCH = 4096
_random = {"hex": "", "used": 0}   # os.urandom read in batches: one syscall per 256 UUIDs
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}   # RFC 4122


def canonical_uuid(text: str) -> str | None:
    """``text`` as a UUID in its canonical form (lower case, hyphens), or None if it is not
    one. Those the server wrote, in ws_url and answers, are taken as they are: uuid.UUID
    costs a websocket open about 2 us."""
    if _CANONICAL.fullmatch(text):
        return text
    try:
        return str(UUID(text))
    except ValueError:
        return None


def new_uuid() -> str:
    """A random (version 4) UUID string (conn_ids too: from the OS's CSPRNG), several
    times faster than str(uuid.uuid4())."""
    used = _random["used"]
    if used >= len(_random["hex"]):
        _random["hex"], used = os.urandom(_RANDOM_BATCH).hex(), 0
    _random["used"] = used + 32
    h = _random["hex"][used:used + 32]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def message(item: dict[str, Any]) -> dict[str, Any]:
    """What a subscriber receives for a posted message: routing fields stripped."""
    envelope = {
        "type": "message",
        "channel": item["channel"],
        "user": item["user"],
        "uuid": item["uuid"],
        "timestamp": delivered_time(item["timestamp"]),
        "catchup": False,
        "edited": None,
    }
    if "message" in item:
        envelope["message"] = item["message"]
    return envelope


def history_entry(item: dict[str, Any]) -> dict[str, Any]:
    """History keeps the routing fields too (they show in /info)."""
    return {"type": "message", "catchup": False, **item}


def from_history(entry: dict[str, Any]) -> dict[str, Any]:
    """The envelope of a message as its history entry now stands (edits applied)."""
    envelope = message(entry)
    if entry.get("edited") is not None:
        envelope["edited"] = delivered_time(entry["edited"])
    return envelope


def edit(item: dict[str, Any]) -> dict[str, Any]:
    envelope = {"type": "message:edit", "uuid": item["uuid"], "channel": item["channel"],
                "edited": delivered_time(item["edited"])}
    for key in ("message", "user"):
        if key in item:
            envelope[key] = item[key]
    if "timestamp" in item:
        envelope["timestamp"] = delivered_time(item["timestamp"])
    return envelope


def delete(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message:delete", "uuid": item["uuid"], "channel": item["channel"]}


def presence(channel: str, user: str, joined: bool, state: dict | None,
             users: list[dict]) -> dict[str, Any]:
    return {
        "type": "presence",
        "uuid": new_uuid(),
        "user": user,
        "channel": channel,
        "timestamp": now_iso(),
        "catchup": False,
        "message": {"action": "joined" if joined else "parted"},
        "state": state,
        "users": users,
    }


def state_change(channel: str, user: str, public_state: dict,
                 changed: list[dict]) -> dict[str, Any]:
    return {
        "type": "user_state_change",
        "uuid": new_uuid(),
        "user": user,
        "channel": channel,
        "timestamp": now_iso(),
        "catchup": False,
        "message": {"state": public_state, "changed": changed},
    }
