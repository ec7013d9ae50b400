"""What a subscriber must receive, checked on every frame.

Every bench message is ``{"p": publisher, "s": sequence, "t": send time, "pad": padding}``:
subscribers check the sequence per (channel, publisher) to count lost, duplicated and
out-of-order messages, and the send time for end-to-end latency (CLOCK_MONOTONIC, which all
processes of the machine share).

A Channelstream-API server (shardcast, Channelstream) sends text frames holding a JSON array of
envelopes. A message envelope must be one the bench published, field for field: type, channel,
user, uuid and timestamp strings, ``catchup`` false, ``edited`` null, and a ``message`` holding
exactly the publisher's numbering ``{"p", "s", "t"}`` and its padding. Presence envelopes (the
churn) need only be envelopes of a channel. msgspec checks all of it while decoding, in C; the
subscriber checks the rest (its own channels, a send time before the receipt, the sequence).

Nchan sends each message as a frame of its own holding the published body: the frame must be
byte for byte the body the publisher posted (``message_body``).
"""
from __future__ import annotations

from typing import Annotated, Callable, Literal, NamedTuple, Union

import msgspec
import orjson

USER = "bench"   # every bench message is posted as this user


def padding(size: int) -> str:
    """The padding of every message of a run with ``--payload size``."""
    return "x" * size


class BadFrame(ValueError):
    """A frame that is not what the server should have sent."""


class Presence(msgspec.Struct, tag_field="type", tag="presence"):
    channel: str


class Position(msgspec.Struct, forbid_unknown_fields=True):
    """A channel's state in a recovery frame."""

    recovered: bool
    epoch: Union[str, None]
    offset: Annotated[int, msgspec.Meta(ge=0)]


class Recovery(msgspec.Struct, tag_field="type", tag="recovery"):
    """The first frame of a websocket opened with ``since``."""

    channels: dict[str, Position]


class Delivery(NamedTuple):
    """A message read from a frame that names no channel: the one its client subscribed to."""

    channel: str
    message: msgspec.Struct
    catchup: bool = False       # Nchan replays nothing


def stamp_type(pad: str) -> type:
    """The bench's message, exactly: a publisher, a sequence ≥ 0, a send time and ``pad``."""
    return msgspec.defstruct(
        "Stamp", [("p", str), ("s", Annotated[int, msgspec.Meta(ge=0)]),
                  ("t", Annotated[float, msgspec.Meta(gt=0)]), ("pad", Literal[pad])],
        forbid_unknown_fields=True)


def message_body(publisher: str, sequence: int, sent: float, pad: str) -> dict:
    """One bench message (``orjson.dumps`` of it is what Nchan's publishers post)."""
    return {"p": publisher, "s": sequence, "t": sent, "pad": pad}


def frame_decoder(pad: str, positions: bool = False) -> Callable[[bytes], list]:
    """Decode a frame into envelopes, raising ``msgspec.DecodeError`` (a subclass of
    ValueError) for anything but valid UTF-8 JSON holding exactly what the bench published
    with ``pad`` as padding. With ``positions`` (a client that asked for offsets and resumes),
    messages carry their ``epoch`` and ``offset``, may be catch-up, and a recovery may come."""
    fields = [("channel", str), ("user", Literal[USER]), ("uuid", str), ("timestamp", str),
              ("catchup", bool if positions else Literal[False]), ("edited", None),
              ("message", stamp_type(pad))]
    if positions:
        fields += [("epoch", str), ("offset", Annotated[int, msgspec.Meta(ge=1)])]
    posted = msgspec.defstruct("Posted", fields, tag_field="type", tag="message")
    kinds = Union[posted, Presence, Recovery] if positions else Union[posted, Presence]
    return msgspec.json.Decoder(list[kinds]).decode


def body_decoder(pad: str) -> Callable[[bytes], msgspec.Struct]:
    """Decode a frame that holds one published body, raising ValueError unless it is byte for
    byte the body the publisher posted with ``pad`` as padding."""
    decode = msgspec.json.Decoder(stamp_type(pad)).decode

    def read(data: bytes) -> msgspec.Struct:
        stamp = decode(data)
        if orjson.dumps(message_body(stamp.p, stamp.s, stamp.t, pad)) != data:
            raise BadFrame("a frame that is not byte for byte the body published")
        return stamp

    return read
