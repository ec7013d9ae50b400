"""Request bodies, declared once: validation, defaults and the 422 error shape."""
from __future__ import annotations

import functools
import re
import typing
from datetime import datetime
from typing import Annotated, Any, Union
from uuid import UUID

import msgspec
import orjson
from msgspec import UNSET, Meta, Struct, UnsetType

Username = Annotated[str, Meta(min_length=1, max_length=512)]
ChannelName = Annotated[str, Meta(min_length=1, max_length=256)]
KeyName = Annotated[str, Meta(min_length=1, max_length=256)]
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]   # what every JSON encoder can write
StateValue = Union[bool, Int64, float, str, None]
State = dict[str, StateValue]


class ChannelConfig(Struct):
    notify_presence: bool = False
    store_history: bool = False
    history_size: Annotated[int, Meta(ge=0)] = 10
    broadcast_presence_with_user_lists: bool = False
    notify_state: bool = False
    store_frames: bool = True


PageLimit = Annotated[int, Meta(ge=1, description=(
    "(new) List at most this many channels, by name; the answer adds `next` (give it as "
    "`after` for the next page; null on the last one) and `remaining` (channels after this "
    "page). Without it, every channel is listed."))]
PageAfter = Annotated[str, Meta(min_length=1, max_length=256, description=(
    "(new) List only channels named after this one (by code point): the `next` of the "
    "previous page."))]


class InfoFlags(Struct):
    channels: Union[list[ChannelName], None] = None
    exclude_channels: list[ChannelName] = []
    include_history: bool = True
    include_users: bool = True
    return_public_state: bool = False
    include_connections: bool = False
    limit: Union[PageLimit, None] = None
    after: Union[PageAfter, None] = None


class InfoBody(Struct):
    info: InfoFlags


class ConnectBody(Struct):
    username: Username
    conn_id: Union[UUID, None] = None
    channels: list[ChannelName] = []
    fresh_user_state: State = {}
    user_state: State = {}
    state_public_keys: list[KeyName] = []
    channel_configs: dict[ChannelName, ChannelConfig] = {}
    info: InfoFlags = msgspec.field(default_factory=InfoFlags)


class SubscribeBody(Struct):
    conn_id: UUID
    channels: Annotated[list[ChannelName], Meta(min_length=1)]
    channel_configs: dict[ChannelName, ChannelConfig] = {}
    info: InfoFlags = msgspec.field(default_factory=InfoFlags)


class UserStateBody(Struct):
    user: Username
    user_state: State = {}
    state_public_keys: Union[list[KeyName], UnsetType] = UNSET


class DisconnectBody(Struct):
    conn_id: UUID


class ConnIdQuery(Struct):
    conn_id: UUID


class MessageItem(Struct):
    user: Username
    channel: Union[ChannelName, None] = None
    pm_users: list[Username] = []
    exclude_users: list[Username] = []
    no_history: bool = False
    uuid: Union[UUID, None] = None
    timestamp: Union[datetime, None] = None
    message: Union[dict[str, Any], None, UnsetType] = UNSET


class EditItem(Struct):
    uuid: UUID
    channel: Union[ChannelName, None] = None
    pm_users: list[Username] = []
    exclude_users: list[Username] = []
    message: Union[dict[str, Any], None, UnsetType] = UNSET
    user: Union[Username, UnsetType] = UNSET
    timestamp: Union[datetime, UnsetType] = UNSET
    edited: Union[datetime, None] = None


class DeleteItem(Struct):
    uuid: UUID
    channel: Union[ChannelName, None] = None
    pm_users: list[Username] = []
    exclude_users: list[Username] = []


class Position(Struct):
    """Where a client is in a channel: the history's epoch, and the last offset it got."""
    epoch: Annotated[str, Meta(min_length=1, max_length=64)]
    offset: Annotated[int, Meta(ge=0, le=2**63 - 1)]


ChannelConfigs = dict[ChannelName, ChannelConfig]
Since = dict[ChannelName, Position]
MessageList = list[MessageItem]
EditList = list[EditItem]
DeleteList = list[DeleteItem]


class Invalid(Exception):
    """A body that breaks the contract; ``errors`` is the 422 JSON body."""

    def __init__(self, errors: dict, status: int = 422) -> None:
        super().__init__(errors)
        self.errors = errors
        self.status = status


INVALID_JSON = {"_schema": ["Invalid JSON body."]}
OFFSETS = {"0": False, "false": False, "1": True, "true": True}
SINCE_FORM = ('Must be URL-encoded JSON: {"<channel>": {"epoch": "<epoch>", "offset": <last '
              'offset received>}, ...}')
TOO_DEEP = {"_schema": ["JSON nested too deeply."]}
_SEGMENT = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]|\[\.\.\.\]")
_AT = " - at `$"
_AT_KEY = " - at `key` in `$"
_MISSING = re.compile(r"Object missing required field `(\w+)`")


@functools.lru_cache(maxsize=None)     # the schemas named in this package: a handful
def _decoder(kind: type) -> msgspec.json.Decoder:
    """Made once per schema: msgspec.json.decode(type=...) costs 2 us a call more."""
    return msgspec.json.Decoder(kind)


def decode(body: bytes, kind: type) -> Any:
    """Parse and validate ``body`` as ``kind``; raise Invalid naming the bad field."""
    try:
        return _decoder(kind).decode(body)
    except msgspec.ValidationError as error:
        message = str(error)
    except msgspec.DecodeError:
        raise Invalid(INVALID_JSON) from None
    except RecursionError:
        raise Invalid(TOO_DEEP) from None
    try:
        # A type error may be found before a syntax error. Parsed as msgspec does (orjson
        # reads an integer past 64 bits as a float), so the entry at fault fails again.
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise Invalid(INVALID_JSON) from None
    except RecursionError:
        raise Invalid(TOO_DEEP) from None
    raise Invalid(_locate(message, value, kind))


def convert(value: Any, kind: type) -> Any:
    """Like ``decode`` for an already parsed value (query strings, merged bodies)."""
    try:
        return msgspec.convert(value, type=kind)
    except msgspec.ValidationError as error:
        raise Invalid(_locate(str(error), value, kind)) from None
    except RecursionError:
        raise Invalid(TOO_DEEP) from None


def positions(query: dict[str, str], max_channels: int) -> tuple[bool, dict | None]:
    """A client's ``offsets`` and ``since`` (websocket URL or /listen query): whether it wants
    positions (``since`` implies it), and ``{channel: {"epoch", "offset"}}`` to resume from."""
    offsets = query.get("offsets", "0").lower()
    if offsets not in OFFSETS:
        raise Invalid({"offsets": ["Use offsets=1 to receive each message's epoch and offset"]})
    if "since" not in query:
        return OFFSETS[offsets], None
    try:
        since = _decoder(Since).decode(query["since"])
    except msgspec.ValidationError as error:
        raise Invalid({"since": [str(error)]}) from None
    except msgspec.DecodeError:
        raise Invalid({"since": [SINCE_FORM]}) from None
    if 0 < max_channels < len(since):
        raise Invalid({"since": [f"At most {max_channels} channels "
                                 "(max_channels_per_connection)"]})
    return True, {name: {"epoch": at.epoch, "offset": at.offset} for name, at in since.items()}


def check_messages(items: list, limit: int) -> None:
    """Each item's ``message`` must be writable as JSON (64-bit integers, bounded nesting)
    and at most ``limit`` bytes of it; errors are keyed by item index."""
    errors = {}
    for index, item in enumerate(items):
        if item.message is UNSET or item.message is None:
            continue
        try:
            size = len(orjson.dumps(item.message))
        except orjson.JSONEncodeError as error:
            errors[str(index)] = {"message": [f"Cannot be sent as JSON: {error}"]}
            continue
        if size > limit:
            errors[str(index)] = {"message": [
                f"Message is {size} bytes as JSON, over the {limit} byte limit "
                "(max_message_size)"]}
    if errors:
        raise Invalid(errors)


def encode_checked(items: list, accepted: list[dict], limit: int) -> bytes:
    """``accepted`` (the normalised ``items`` that will be sent) as JSON, once ``items``
    pass ``check_messages``. One encoding serves the answer and the check: when the whole
    fits in ``limit`` bytes and holds every item, no message in it can be over the limit."""
    try:
        body = orjson.dumps(accepted)
    except orjson.JSONEncodeError:
        check_messages(items, limit)    # a message is what cannot be written: this names it
        raise
    if len(body) > limit or len(accepted) < len(items):
        check_messages(items, limit)
    return body


def _locate(text: str, value: Any, kind: type) -> dict:
    """Turn msgspec's "... - at `$.a[0].b`" into {"a": {"0": {"b": [text]}}}."""
    message = text
    text, at_key, path = text.partition(_AT_KEY)
    if at_key:
        path = path.rstrip("`") + "[...]"
    else:
        text, _, path = text.partition(_AT)
    keys = _path_keys(path.rstrip("`"), value, kind, message)
    missing = _MISSING.match(text)
    if missing:
        keys.append(missing.group(1))
        text = "Missing data for required field."
    if not keys:
        keys = ["_schema"]
    errors: Any = [text]
    for key in reversed(keys):
        errors = {key: errors}
    return errors


def _path_keys(path: str, value: Any, kind: Any, message: str) -> list[str]:
    """Path segments as strings. A dict entry ("[...]") is found in its mapping alone, checked
    against the mapping's declared type: the rest of the body is never validated again (doing
    so once per entry took over 20 s for a 0.9 MB body with 40,000 entries)."""
    keys: list[str] = []
    node = value
    for match in _SEGMENT.finditer(path):
        name, index = match.group(1), match.group(2)
        if name is not None:
            keys.append(name)
            kind = _child_type(kind, node, name)
            node = node.get(name) if isinstance(node, dict) else None
        elif index is not None:
            keys.append(index)
            kind = _child_type(kind, node, int(index))
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            # The message as the mapping alone would fail with it: its path starts at "$".
            local = message.replace("`$" + path[:match.start()], "`$", 1)
            key, part = _bad_entry(node, _narrow(kind, node), local)
            keys += [key, part]
            kind = _child_type(kind, node, key)
            node = node.get(key) if isinstance(node, dict) else None
            if part == "key":
                break
    return keys


def _bad_entry(mapping: Any, kind: Any, message: str) -> tuple[str, str]:
    """Which entry of ``mapping`` (of type ``kind``) fails with ``message``, and whether its key
    or its value is at fault. msgspec stops at the first entry that fails and those before it
    pass: halving the range that holds it finds it in about two passes over the mapping."""
    if not isinstance(mapping, dict) or kind is None:
        return "?", "value"
    entries = list(mapping.items())
    if not _fails_alike(entries, kind, message):
        return "?", "value"
    low, high = 0, len(entries)
    while high - low > 1:
        middle = (low + high) // 2
        if _fails_alike(entries[low:middle], kind, message):
            high = middle
        else:
            low = middle
    return entries[low][0], "key" if message.endswith(_AT_KEY + "`") else "value"


def _fails_alike(entries: list, kind: Any, message: str) -> bool:
    """Whether a mapping of just ``entries`` fails with ``message``."""
    try:
        msgspec.convert(dict(entries), type=kind)
    except msgspec.ValidationError as error:
        return str(error) == message
    return False


def _child_type(kind: Any, node: Any, step: str | int) -> Any:
    """The declared type of ``node[step]`` where ``node`` is of type ``kind`` (None: unknown)."""
    kind = _narrow(kind, node)
    if _is_struct(kind):
        return next((field.type for field in msgspec.structs.fields(kind)
                     if field.encode_name == step), None)
    args = typing.get_args(kind)
    return args[-1] if args else None      # list[X] -> X, dict[K, V] -> V


def _narrow(kind: Any, node: Any) -> Any:
    """``kind`` as it applies to ``node``, an object or array: constraints unwrapped, and
    of a union the member that takes it."""
    while typing.get_origin(kind) is Annotated:
        kind = typing.get_args(kind)[0]
    if typing.get_origin(kind) is not Union:
        return kind
    for option in typing.get_args(kind):
        option = _narrow(option, node)
        origin = typing.get_origin(option) or option
        if isinstance(node, dict) and (origin is dict or _is_struct(origin)):
            return option
        if isinstance(node, list) and origin is list:
            return option
    return None


def _is_struct(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Struct)
