"""A shard handles what its peers wrote in the order they wrote it, whichever link carried it:
a reply to its own request (on its link to the peer) and a delivery (on the peer's link to it)
written before that reply. A resume reads the channel's history from its owner with such a
request; a delivery handled after the reply that already holds its message reached the client
twice. Here a real shard (Worker) talks over its unix sockets to a peer played by the test."""
from __future__ import annotations

import asyncio
import socket

import orjson
import uvloop

from shardcast import ipc
from shardcast.config import Config
from shardcast.ipc import Kind
from shardcast.worker import Worker


async def read_frame(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> tuple:
    decoder, frames = ipc.FrameDecoder(), []
    while not frames:
        frames = [f for f in decoder.feed(await loop.sock_recv(sock, 65536))
                  if f[0] != Kind.STAMP]
    return frames[0]


def test_a_reply_is_handled_after_the_deliveries_written_before_it(tmp_path):
    handled: list[str] = []

    async def both() -> None:
        while len(handled) < 2:
            await asyncio.sleep(0.005)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        shard = Worker(1, Config(workers=2, secret="x"), str(tmp_path))
        shard.actor.deliver = lambda route, frame: handled.append(frame.decode())
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)     # the peer, shard 0
        listener.bind(ipc.socket_path(str(tmp_path), 0))
        listener.listen()
        listener.setblocking(False)
        reply = shard.request(0, "history_after", {"channel": "ch"})
        reply.add_done_callback(lambda future: handled.append(future.result()["reply"]))
        theirs, _ = await loop.sock_accept(listener)       # shard 1's link to the peer
        _, request_id, _ = await read_frame(loop, theirs)
        ours, mine = socket.socketpair()                   # the peer's link to it
        await loop.connect_accepted_socket(shard.accept_link, ours)
        shard.pacing.hold(0.05)        # a shard behind: its links wait unread while it rests
        mine.sendall(ipc.stamp() + ipc.pack_route(["c", "ch"], b"delivery"))
        theirs.sendall(ipc.stamp() + ipc.pack(Kind.REPLY, request_id,
                                              orjson.dumps({"reply": "history"})))
        await asyncio.wait_for(both(), 5)
        for sock in (listener, theirs, mine):
            sock.close()

    uvloop.run(run())
    assert handled == ["delivery", "history"]
