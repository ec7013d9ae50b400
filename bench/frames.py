"""What a subscriber must receive, checked on every frame.

A text frame is a JSON array of envelopes. A message envelope must be one the bench published,
field for field: type, channel, user, uuid and timestamp strings, ``catchup`` false, ``edited``
null, and a ``message`` holding exactly the publisher's numbering ``{"p", "s", "t"}`` and its
padding. Presence envelopes (the churn) need only be envelopes of a channel. msgspec checks
all of it while decoding, in C; the subscriber checks the rest (its own channels, a send time
before the receipt, the sequence).

Every bench message is ``{"p": publisher, "s": sequence, "t": send time, "pad": padding}``:
subscribers check the sequence per (channel, publisher) to count lost, duplicated and
out-of-order messages, and the send time for end-to-end latency (CLOCK_MONOTONIC, which all
processes of the machine share).
"""
from __future__ import annotations

from typing import Annotated, Callable, Literal, Union

import msgspec

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


def frame_decoder(pad: str, positions: bool = False) -> Callable[[bytes], list]:
    """Decode a frame into envelopes, raising ``msgspec.DecodeError`` (a subclass of
    ValueError) for anything but valid UTF-8 JSON holding exactly what the bench published
    with ``pad`` as padding. With ``positions`` (a client that asked for offsets and resumes),
    messages carry their ``epoch`` and ``offset``, may be catch-up, and a recovery may come."""
    stamp = msgspec.defstruct(
        "Stamp", [("p", str), ("s", Annotated[int, msgspec.Meta(ge=0)]),
                  ("t", Annotated[float, msgspec.Meta(gt=0)]), ("pad", Literal[pad])],
        forbid_unknown_fields=True)
    fields = [("channel", str), ("user", Literal[USER]), ("uuid", str), ("timestamp", str),
              ("catchup", bool if positions else Literal[False]), ("edited", None),
              ("message", stamp)]
    if positions:
        fields += [("epoch", str), ("offset", Annotated[int, msgspec.Meta(ge=1)])]
    posted = msgspec.defstruct("Posted", fields, tag_field="type", tag="message")
    kinds = Union[posted, Presence, Recovery] if positions else Union[posted, Presence]
    return msgspec.json.Decoder(list[kinds]).decode
