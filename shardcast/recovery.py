"""How a shard's actor helps rebuild a peer that restarted with no state (``Recovery``).

The connection shards are the source of truth for "connection c is in channel x": when shard L
comes back empty, every surviving shard S
* parts L's connections from the channels S owns ("parted" presence where configured), and
  drops them from the users S owns;
* for each connection of its own, re-registers it with its user if L owns that user (the user
  comes back with its connections, its state is lost), and re-joins it to the channels L owns
  (they come back with their members, default settings and no history).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .routing import owner

if TYPE_CHECKING:
    from .shard import Shard


class Recovery:
    def peer_restarted(self: "Shard", args: dict) -> None:
        lost = args["shard"]
        for channel in list(self.channels.values()):
            for conn_id in [c for c in channel.conns if owner(c, self.shards) == lost]:
                self.leave({"channel": channel.name, "conn_id": conn_id})
        for user in self.users.values():
            user.conns = {c: None for c in user.conns if owner(c, self.shards) != lost}
        joins = []
        for conn in self.conns.values():
            if owner(conn.user, self.shards) == lost:
                self.net.cast(lost, "user_connect", {"user": conn.user, "fresh_state": {},
                                                     "state": {}, "public_keys": [],
                                                     "conn_id": conn.id})
            joins += [[name, None, conn.id, conn.user, {}] for name in sorted(conn.channels)
                      if owner(name, self.shards) == lost]
        if joins:
            self.net.cast(lost, "join", {"joins": joins})
