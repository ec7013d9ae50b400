"""How the bench's clients talk to each kind of server: publish, reach a websocket, read frames.

shardcast and Channelstream speak the Channelstream API: ``POST /message`` takes a list of
messages, ``POST /connect`` answers with a connection whose websocket receives lists of
envelopes. Nchan publishes the body of ``POST /pub/<channel>`` as one message, and its
``ws /sub/<channel>`` subscribers receive each message as a frame of its own, holding that body.
Publishers and subscribers look their codec up by name (plans cross process boundaries as
plain data) and leave every difference between the servers to it.
"""
from __future__ import annotations

from typing import Callable
from urllib.parse import quote

import orjson

from .frames import Delivery, body_decoder, frame_decoder
from .httpclient import ApiClient

Decode = Callable[[bytes], list]                  # a frame -> its envelopes
Decoders = Callable[[frozenset[str]], Decode]    # a client's channels -> its decoder


class ChannelstreamCodec:
    """The Channelstream 0.7 API, which shardcast speaks too."""

    name = "channelstream"
    batches = True                    # several messages per publish request
    accepted = frozenset({200})       # publish answers that mean accepted

    def publish(self, api: ApiClient, items: list[dict]) -> bytes:
        """The request that publishes ``items`` ({"user", "channel", "message"} each)."""
        return api.encode("POST", "/message", orjson.dumps(items))

    async def websocket(self, api: ApiClient, spec: dict, ws_template: str | None
                        ) -> tuple[str, str]:
        """(connection id, websocket URL) of a new client; ``spec`` is its /connect body."""
        reply = await api.call("POST", "/connect", spec)
        return reply["conn_id"], (reply.get("ws_url")
                                  or ws_template.format(conn_id=reply["conn_id"]))

    def decoders(self, pad: str) -> Decoders:
        decode = frame_decoder(pad)
        return lambda channels: decode


class NchanCodec:
    """Nchan's HTTP publisher and websocket subscriber endpoints, one channel each."""

    name = "nchan"
    batches = False
    accepted = frozenset({201, 202})  # 201: subscribers got it; 202: queued, none listening

    def publish(self, api: ApiClient, items: list[dict]) -> bytes:
        (item,) = items
        return api.encode("POST", f"/pub/{quote(item['channel'], safe='')}",
                          orjson.dumps(item["message"]))

    async def websocket(self, api: ApiClient, spec: dict, ws_template: str | None
                        ) -> tuple[str, str]:
        """No connection to make first: the URL names the one channel."""
        (channel,) = spec["channels"]
        return "", ws_template.format(channel=quote(channel, safe=""))

    def decoders(self, pad: str) -> Decoders:
        read = body_decoder(pad)

        def for_client(channels: frozenset[str]) -> Decode:
            (channel,) = channels
            return lambda data: [Delivery(channel, read(data))]

        return for_client


CODECS = {codec.name: codec for codec in (ChannelstreamCodec(), NchanCodec())}
