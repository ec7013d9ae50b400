"""Every Redis key and pub/sub channel the cluster uses, named in one place.

A channel's keys share the hash tag ``{<channel>}`` and a user's ``{<user>}``, so that Redis
Cluster can come later with each script touching one slot where it can.
"""
from __future__ import annotations


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.channels = f"{prefix}:channels"     # zset: channel -> last active (unix s)
        self.users = f"{prefix}:users"           # zset: user -> last active
        self.online = f"{prefix}:online"         # set: users with a connection somewhere
        self.nodes = f"{prefix}:nodes"           # hash: node id -> its last report (JSON)

    # -- a channel ----------------------------------------------------------------------

    def channel(self, name: str) -> str:
        """Its pub/sub channel: publications, presence, edits and activations, in order."""
        return f"{self.prefix}:ch:{{{name}}}"

    def meta(self, name: str) -> str:
        """hash: settings, uuid, epoch, offset, last_active."""
        return f"{self.prefix}:ch:{{{name}}}:meta"

    def history(self, name: str) -> str:
        """zset: "<offset>:<history entry JSON>" scored by offset."""
        return f"{self.prefix}:ch:{{{name}}}:hist"

    def deleted(self, name: str) -> str:
        """zset: offsets of deleted history entries still in history's reach."""
        return f"{self.prefix}:ch:{{{name}}}:deleted"

    def members(self, name: str) -> str:
        """hash: conn id -> username."""
        return f"{self.prefix}:ch:{{{name}}}:conns"

    def member_users(self, name: str) -> str:
        """hash: username -> its connections in the channel."""
        return f"{self.prefix}:ch:{{{name}}}:users"

    def member_states(self, name: str) -> str:
        """hash: username -> public state JSON (only non-empty ones)."""
        return f"{self.prefix}:ch:{{{name}}}:states"

    def channel_keys(self, name: str) -> list[str]:
        return [self.meta(name), self.history(name), self.members(name),
                self.member_users(name), self.member_states(name)]

    # -- a user -------------------------------------------------------------------------

    def user(self, name: str) -> str:
        """hash: public_keys (JSON list), last_active."""
        return f"{self.prefix}:user:{{{name}}}"

    def state(self, name: str) -> str:
        """hash: state key -> JSON value."""
        return f"{self.prefix}:user:{{{name}}}:state"

    def user_conns(self, name: str) -> str:
        """hash: conn id -> "<node> <shard>"."""
        return f"{self.prefix}:user:{{{name}}}:conns"

    # -- a connection and a node --------------------------------------------------------

    def conn(self, conn_id: str) -> str:
        """hash: user, node, shard, run (of the node, ``ipc.run_id``)."""
        return f"{self.prefix}:conn:{{{conn_id}}}"

    def conn_channels(self, conn_id: str) -> str:
        """set: the channels the connection is in."""
        return f"{self.prefix}:conn:{{{conn_id}}}:channels"

    def node(self, node_id: str) -> str:
        """string with a short TTL: the node is alive while it exists."""
        return f"{self.prefix}:node:{node_id}"

    def shard_conns(self, node_id: str, shard: int) -> str:
        """set: the connections a shard of the node holds (what a janitor removes when the
        node dies, what the shard reconciles after Redis trouble)."""
        return f"{self.prefix}:node:{node_id}:{shard}:conns"

    def janitor(self, node_id: str) -> str:
        """lock: the one node cleaning up after a dead one."""
        return f"{self.prefix}:janitor:{node_id}"

    def node_inbox(self, node_id: str) -> str:
        """pub/sub: requests for the node's supervisor (connection commands) and replies."""
        return f"{self.prefix}:inbox:{node_id}"

    def shard_inbox(self, node_id: str, shard: int) -> str:
        """pub/sub: direct messages for the shard's connections, and its probes."""
        return f"{self.prefix}:inbox:{node_id}:{shard}"
