"""Request bodies, declared once: validation, defaults and the 422 error shape."""
from __future__ import annotations

import re
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


class InfoFlags(Struct):
    channels: Union[list[ChannelName], None] = None
    exclude_channels: list[ChannelName] = []
    include_history: bool = True
    include_users: bool = True
    return_public_state: bool = False
    include_connections: bool = False


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


ChannelConfigs = dict[ChannelName, ChannelConfig]
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
TOO_DEEP = {"_schema": ["JSON nested too deeply."]}
_SEGMENT = re.compile(r"\.([A-Za-z_]\w*)|\[(\d+)\]|\[\.\.\.\]")
_AT = " - at `$"
_AT_KEY = " - at `key` in `$"
_MISSING = re.compile(r"Object missing required field `(\w+)`")


def decode(body: bytes, kind: type) -> Any:
    """Parse and validate ``body`` as ``kind``; raise Invalid naming the bad field."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        message = str(error)
    except msgspec.DecodeError:
        raise Invalid(INVALID_JSON) from None
    except RecursionError:
        raise Invalid(TOO_DEEP) from None
    try:
        value = orjson.loads(body)   # a type error may be found before a syntax error
    except orjson.JSONDecodeError:
        raise Invalid(INVALID_JSON) from None
    raise Invalid(_locate(message, value, kind))


def convert(value: Any, kind: type) -> Any:
    """Like ``decode`` for an already parsed value (query strings, merged bodies)."""
    try:
        return msgspec.convert(value, type=kind)
    except msgspec.ValidationError as error:
        raise Invalid(_locate(str(error), value, kind)) from None
    except RecursionError:
        raise Invalid(TOO_DEEP) from None


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


def _path_keys(path: str, value: Any, kind: type, message: str) -> list[str]:
    """Path segments as strings; dict entries ("[...]") are found by elimination."""
    keys: list[str] = []
    node = value
    trail: list[Any] = []
    for match in _SEGMENT.finditer(path):
        name, index = match.group(1), match.group(2)
        if name is not None:
            keys.append(name)
            trail.append(name)
            node = node.get(name) if isinstance(node, dict) else None
        elif index is not None:
            keys.append(index)
            trail.append(int(index))
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            key, part = _bad_entry(value, trail, node, kind, message)
            keys += [key, part]
            trail.append(key)
            node = node.get(key) if isinstance(node, dict) else None
            if part == "key":
                break
    return keys


def _bad_entry(root: Any, trail: list, mapping: Any, kind: type,
               message: str) -> tuple[str, str]:
    """Which entry of ``mapping`` fails with ``message``, and whether its key or its value is
    at fault (other fields of ``root`` may be invalid too: only the same error counts)."""
    if not isinstance(mapping, dict):
        return "?", "value"
    for key, item in mapping.items():
        if _fails_alike(root, trail, {key: item}, kind, message):
            part = "value" if _fails_alike(root, trail, {"k": item}, kind, message) else "key"
            return key, part
    return "?", "value"


def _fails_alike(root: Any, trail: list, replacement: dict, kind: type, message: str) -> bool:
    """Whether ``root`` with the mapping at ``trail`` swapped for ``replacement`` fails with
    the same ``message``."""
    def swap(node: Any, depth: int) -> Any:
        if depth == len(trail):
            return replacement
        step = trail[depth]
        copy = list(node) if isinstance(node, list) else dict(node)
        copy[step] = swap(node[step], depth + 1)
        return copy
    try:
        msgspec.convert(swap(root, 0), type=kind)
    except msgspec.ValidationError as error:
        return str(error) == message
    return False
