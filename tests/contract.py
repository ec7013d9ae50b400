"""What API.md promises, as data and small checks the tests compare against."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import uuid
from typing import Any, Callable

SIGNATURE_HEADER = "x-channelstream-secret"
TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$")
DEFAULT_SETTINGS = {
    "notify_presence": False,
    "store_history": False,
    "history_size": 10,
    "broadcast_presence_with_user_lists": False,
    "notify_state": False,
    "store_frames": True,
}
CHANNEL_INFO_KEYS = {
    "uuid",
    "name",
    "long_name",
    "settings",
    "history",
    "last_active",
    "total_connections",
    "total_users",
    "users",
}


def unique(prefix: str = "x") -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def is_canonical_uuid(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def is_timestamp(value: Any) -> bool:
    return isinstance(value, str) and TIMESTAMP_RE.match(value) is not None


def settings(**overrides: Any) -> dict:
    """Full channel settings: the documented defaults with ``overrides`` applied."""
    return {**DEFAULT_SETTINGS, **overrides}


def delivered(item: dict, catchup: bool = False) -> dict:
    """The envelope a client receives for the normalised /message ``item`` (API.md, exactly)."""
    envelope = {
        "type": "message",
        "channel": item["channel"],
        "user": item["user"],
        "uuid": item["uuid"],
        "timestamp": item["timestamp"],
        "catchup": catchup,
        "edited": None,
    }
    if "message" in item:
        envelope["message"] = item["message"]
    return envelope


def craft_signature(secret: str, timestamp: int | None = None, value: str = "channelstream") -> str:
    """An itsdangerous-1.1 TimestampSigner signature built by hand from the API.md recipe."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    ts = int(time.time()) if timestamp is None else timestamp
    ts_bytes = ts.to_bytes((ts.bit_length() + 7) // 8, "big")
    signed = value.encode() + b"." + b64(ts_bytes)
    key = hashlib.sha1(b"itsdangerous.Signer" + b"signer" + secret.encode()).digest()
    signature = b64(hmac.new(key, signed, hashlib.sha1).digest())
    return (signed + b"." + signature).decode()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that or raise."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
