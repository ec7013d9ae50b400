"""Channelstream-compatible request signatures (the `x-channelstream-secret` header).

The format is that of itsdangerous 1.1's TimestampSigner with its defaults, which
Channelstream backends use: ``value.ts.sig`` where ts is the big-endian epoch seconds with
leading zero bytes stripped and sig is HMAC-SHA1 over ``value.ts`` keyed with
SHA1(salt + b"signer" + secret); both URL-safe base64 without padding.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time

DEFAULT_VALUE = "channelstream"
_SALT = b"itsdangerous.Signer"
_SEP = "."


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=8)   # derived once per secret, not once per request
def _key(secret: str) -> bytes:
    return hashlib.sha1(_SALT + b"signer" + secret.encode("utf-8")).digest()


def _signature(secret: str, message: str) -> str:
    return _b64encode(hmac.new(_key(secret), message.encode("utf-8"), hashlib.sha1).digest())


def sign_compat(secret: str, value: str = DEFAULT_VALUE, now: float | None = None) -> str:
    """Sign `value` with a timestamp, as a Channelstream backend does."""
    if not secret:
        raise ValueError("refusing to sign with an empty secret")
    seconds = int(time.time() if now is None else now)
    stamp = _b64encode(seconds.to_bytes((seconds.bit_length() + 7) // 8, "big"))
    message = f"{value}{_SEP}{stamp}"
    return f"{message}{_SEP}{_signature(secret, message)}"


def verify_compat(
    token: str | bytes, secret: str, max_age: float | None, now: float | None = None
) -> bool:
    """True if `token` was signed with `secret` (and, unless max_age is None, is fresh).

    A timestamp more than max_age seconds in the future is refused too (a badly skewed
    clock would otherwise stretch the token's lifetime). Never raises.
    """
    try:
        if isinstance(token, bytes):
            token = token.decode("ascii")
        if not secret or not token.isascii():
            return False
        message, sep, signature = token.rpartition(_SEP)
        _, stamp_sep, stamp = message.rpartition(_SEP)
        if not (sep and stamp_sep and stamp):
            return False
        expected = _signature(secret, message)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return False
        if max_age is None:
            return True
        age = int(time.time() if now is None else now) - int.from_bytes(_b64decode(stamp), "big")
        return -max_age <= age <= max_age
    except (ValueError, TypeError, AttributeError):  # binascii/Unicode errors are ValueErrors
        return False
