"""Resume: a client that comes back with the positions it had (``since``) gets what it missed.

A transport attached with ``since`` (``{channel: {"epoch", "offset"}}``) does not take over at
once. Its connection holds every frame meanwhile (no frame dropped for room), and each listed
channel the connection is in is asked what came after the client's offset: its owner shard's
history on one node, Redis' in a cluster. Then the client gets a ``recovery`` frame (per
channel: recovered or not, and the current epoch and top offset), the missed messages in
order marked ``catchup``, what else was held (catch-up as usual), and live messages, with no
gap and no duplicate at the seam: the held frames and the history answer are merged by offset.

``recovered`` is false when the epoch changed (the history was lost) or when history does not
reach back to the client's offset (messages kept out of history or pushed out of it), so the
application knows to reload.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from . import envelopes
from .connection import Connection, Held, Transport, replayed
from .routing import owner

if TYPE_CHECKING:
    from .shard import Shard

HISTORY_TIMEOUT = 5.0      # seconds a channel's owner may take to say what came after


def plan(user: str, channel: str, since: dict, answer: dict | None,
         held: list[Held]) -> tuple[dict, list[dict]]:
    """One channel's recovery: its status, and the envelopes the client missed, in order.

    ``answer`` is the owner's ``history_after`` (None: the channel or its owner is gone);
    ``held`` are the connection's held frames of that channel (taken out of the catch-up).
    """
    epoch, offset = since["epoch"], since["offset"]
    if answer is None or answer["epoch"] is None or answer["epoch"] != epoch or \
            offset > answer["top"]:
        # Nothing to recover from: what was held is replayed as any catch-up is.
        status = {"recovered": False, "epoch": answer and answer["epoch"],
                  "offset": answer["top"] if answer else 0}
        return status, [replayed(frame, position, True) for _, frame, position in held]
    top = answer["top"]
    status = {"recovered": False, "epoch": epoch, "offset": top}
    missed: dict[int, dict] = {}
    for position_offset, entry in answer["entries"]:
        if position_offset > offset and _for(user, entry):
            envelope = envelopes.from_history(entry)
            envelope["catchup"] = True
            envelope["epoch"], envelope["offset"] = epoch, position_offset
            missed[position_offset] = envelope
    kept = {o for o, _ in answer["entries"]} | set(answer["deleted"])
    for _, frame, position in held:     # live: newer than the answer, or the same
        if position is not None and position[0] == epoch and position[1] > offset:
            missed[position[1]] = replayed(frame, position, True)
            kept.add(position[1])
    status["recovered"] = all(o in kept for o in range(offset + 1, top + 1))
    return status, [missed[o] for o in sorted(missed)]


def _for(user: str, entry: dict) -> bool:
    """Whether a history entry was meant for ``user`` (exclude_users and pm_users)."""
    if user in entry["exclude_users"]:
        return False
    return not entry["pm_users"] or user in entry["pm_users"]


class Resume:
    """The shard's side of resume (a part of the ``Shard`` actor)."""

    def history_after(self: "Shard", args: dict) -> dict | None:
        """Owner side: what came after ``offset`` in a channel owned here."""
        channel = self.channels.get(args["channel"])
        return None if channel is None else channel.history_after(args["offset"])

    def history(self: "Shard", name: str, offset: int) -> asyncio.Future:
        """What came after ``offset`` in ``name``, from its owner shard."""
        return self.net.request(owner(name, self.shards), "history_after",
                                {"channel": name, "offset": offset})

    def resume(self: "Shard", conn: Connection, transport: Transport) -> bool:
        """Start a recovery if the transport came with positions of the connection's channels;
        False when there is nothing to recover (the transport attaches as usual)."""
        since, transport.since = transport.since, None
        wanted = {name: position for name, position in (since or {}).items()
                  if name in conn.channels}
        if not wanted:
            return False
        conn.hold_all()
        names = list(wanted)
        asyncio.ensure_future(self._recover(conn, transport, names, wanted))
        return True

    async def _recover(self: "Shard", conn: Connection, transport: Transport,
                       names: list[str], wanted: dict) -> None:
        answers = await asyncio.gather(
            *(_bounded(self.history(name, wanted[name]["offset"])) for name in names))
        if self.conns.get(conn.id) is not conn or conn.transport is not None:
            transport.close(1000)       # gone, or another transport took over meanwhile
            return
        held = conn.take_held()
        statuses, missed = {}, []
        for name, answer in zip(names, answers):
            mine = [h for h in held if _channel_of(h) == name and h[2] is not None]
            statuses[name], envelopes_missed = plan(conn.user, name, wanted[name], answer, mine)
            missed += envelopes_missed
        listed = set(names)
        rest = [replayed(frame, position, transport.offsets) for stamp, frame, position in held
                if not (position is not None and _channel_of((stamp, frame, position)) in listed)]
        conn.catchup_size = self.config.catchup_size
        self.attach(conn, transport)
        transport.send(orjson.dumps([{"type": "recovery", "channels": statuses}]))
        if missed or rest:
            transport.send(orjson.dumps(missed + rest))


def _channel_of(held: Held) -> str | None:
    return orjson.loads(held[1])[0].get("channel")


async def _bounded(request: asyncio.Future) -> Any:
    try:
        return await asyncio.wait_for(request, HISTORY_TIMEOUT)
    except (asyncio.TimeoutError, ConnectionError, RuntimeError):
        return None
