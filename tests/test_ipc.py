"""IPC frame encoding: round trips, partial reads, clean errors on garbage; links that give up;
an inbox that handles what several links carried in the order it was written."""
from __future__ import annotations

import asyncio

import orjson
import pytest
import uvloop

from shardcast import ipc


def test_frames_survive_arbitrary_chunking():
    stream = (ipc.pack_command(ipc.Kind.REQUEST, 7, "stats", None)
              + ipc.pack_route(["c", "room", [], [], True, None, 1], b'[{"n":1}]'))
    decoder = ipc.FrameDecoder()
    frames = []
    for byte in stream:
        frames += decoder.feed(bytes([byte]))
    assert [(kind, rid) for kind, rid, _ in frames] == [(ipc.Kind.REQUEST, 7), (ipc.Kind.DELIVER, 0)]
    route, payload = ipc.unpack_route(frames[1][2])
    assert route == ["c", "room", [], [], True, None, 1] and payload == b'[{"n":1}]'


@pytest.mark.parametrize("garbage", [
    b"\xff\xff\xff\xff\x01\x00\x00\x00\x00",        # absurd length
    b"\x01\x00\x00\x00\x09\x00\x00\x00\x00x",        # unknown kind
])
def test_bad_header_is_a_frame_error(garbage):
    with pytest.raises(ipc.FrameError):
        ipc.FrameDecoder().feed(garbage)


def test_truncated_route_is_a_frame_error():
    with pytest.raises(ipc.FrameError):
        ipc.unpack_route(b"\xff\x00\x00\x00{}")


def test_a_link_that_never_connects_fails_what_waits_on_it():
    """A peer shard that cannot be reached: a request queued for it fails when the link gives
    up, rather than waiting forever (a /connect waits on the user's shard this way)."""
    async def run() -> None:
        link = ipc.Link(lambda *frame: None)
        answer = link.request("user_connect", {})
        link.give_up("shard 1 unreachable")
        with pytest.raises(ConnectionError, match="unreachable"):
            await asyncio.wait_for(answer, 1)
        assert link.closed and not link.outgoing

    uvloop.run(run())


def test_an_inbox_handles_what_links_held_in_the_order_it_was_written():
    """Three links read in one pass, each carrying writes made at different times: their casts
    are handled by the stamps of their writes, whichever link the loop reads first (writes
    stamped alike, in the order they were read)."""
    def write(at: int, *names: str) -> bytes:
        return ipc.STAMP.pack(8, ipc.Kind.STAMP, 0, at) + b"".join(
            ipc.pack_command(ipc.Kind.CAST, 0, name, None) for name in names)

    async def run() -> list[str]:
        handled: list[str] = []
        inbox = ipc.Inbox(lambda link, kind, rid, body: handled.append(body))
        links = [ipc.InboxLink(inbox) for _ in range(3)]
        links[2].data_received(write(50, "f") + write(70, "h"))
        links[0].data_received(write(10, "a", "b") + write(20, "c") + write(60, "g"))
        links[1].data_received(write(20, "d") + write(40, "e")[:-3])   # e: partly read
        links[1].data_received(write(40, "e")[-3:])
        await asyncio.sleep(0)
        return [orjson.loads(body)[0] for body in handled]

    assert uvloop.run(run()) == list("abcdefgh")
