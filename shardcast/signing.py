"""Request signatures: the Channelstream-compatible `x-channelstream-secret` header, and
the stronger `x-shardcast-signature` that signs method, target, timestamp and body.

The Channelstream format is that of itsdangerous 1.1's TimestampSigner with its defaults, which
Channelstream backends use: ``value.ts.sig`` where ts is the big-endian epoch seconds with
leading zero bytes stripped and sig is HMAC-SHA1 over ``value.ts`` keyed with
SHA1(salt + b"signer" + secret); both URL-safe base64 without padding.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import heapq
import hmac
import re
import time

DEFAULT_VALUE = "channelstream"
# Seconds a Channelstream token may be dated ahead of the server clock. More would stretch its
# lifetime past max_age: a token dated a minute ahead stays good for two.
CLOCK_SKEW = 5
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

    A timestamp more than CLOCK_SKEW seconds in the future is refused too. Never raises.
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
        return max_age is None or _fresh(_signed_at(token), max_age, now)
    except (ValueError, TypeError, AttributeError):  # binascii/Unicode errors are ValueErrors
        return False


def _signed_at(token: str) -> int:
    stamp = token.rpartition(_SEP)[0].rpartition(_SEP)[2]
    return int.from_bytes(_b64decode(stamp), "big")


def _fresh(signed_at: int, max_age: float, now: float | None = None) -> bool:
    age = int(time.time() if now is None else now) - signed_at
    return -CLOCK_SKEW <= age <= max_age


class CompatVerifier:
    """``verify_compat`` with a memo of authentic tokens. Backends sign once per call, so
    calls within the same second carry the same token, and the HMAC is the costliest step
    of a small API call; freshness is still checked every time."""

    MEMO_SIZE = 4096

    def __init__(self, secret: str, max_age: float | None) -> None:
        self.secret = secret
        self.max_age = max_age
        self.authentic: dict[str, int] = {}     # token -> when it was signed

    def __call__(self, token: str) -> bool:
        signed_at = self.authentic.get(token)
        if signed_at is None:
            if not verify_compat(token, self.secret, None):
                return False
            if len(self.authentic) >= self.MEMO_SIZE:
                self.authentic.clear()
            signed_at = self.authentic[token] = _signed_at(token)
        return self.max_age is None or _fresh(signed_at, self.max_age)


# -- signed requests (the `x-shardcast-signature` header) -------------------------------
#
# ``t=<unix seconds>,v1=<hex>`` where v1 = HMAC-SHA256(secret, "<t>.<METHOD>.<target>." + body)
# and target is the path and query exactly as sent. Unlike the Channelstream mode, a captured
# request cannot be sent with another body, to another endpoint, or outside a short window.

REQUEST_HEADER = "x-shardcast-signature"
MALFORMED = "malformed"   # reasons check_request gives for a refusal
STALE = "stale"
MISMATCH = "mismatch"
_MAX_TIMESTAMP_DIGITS = 12
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


def _request_digest(secret: str, timestamp: int, method: str, target: str, body: bytes) -> str:
    message = f"{timestamp}.{method.upper()}.{target}.".encode("utf-8") + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign_request(secret: str, method: str, target: str, body: bytes,
                 now: float | None = None) -> str:
    """The `x-shardcast-signature` value for one request; `target` is its path and query."""
    if not secret:
        raise ValueError("refusing to sign with an empty secret")
    timestamp = int(time.time() if now is None else now)
    return f"t={timestamp},v1={_request_digest(secret, timestamp, method, target, body)}"


def parse_request_signature(header: str) -> tuple[int, str] | None:
    """(t, v1) of a well-formed header; None for anything else. Unknown fields are ignored."""
    fields: dict[str, str] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key in fields:
            return None
        fields[key] = value
    stamp, digest = fields.get("t"), fields.get("v1")
    if stamp is None or digest is None:
        return None
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= _MAX_TIMESTAMP_DIGITS):
        return None
    if not _HEX_DIGEST.fullmatch(digest):
        return None
    return int(stamp), digest


def check_request(header: str, secret: str, method: str, target: str, body: bytes,
                  window: float, now: float | None = None) -> str | None:
    """None when the signature holds; else why not: MALFORMED, STALE or MISMATCH. Never raises."""
    try:
        parsed = parse_request_signature(header)
        if parsed is None or not secret:
            return MALFORMED
        timestamp, digest = parsed
        current = time.time() if now is None else now
        if abs(current - timestamp) > window:
            return STALE
        expected = _request_digest(secret, timestamp, method, target, body)
        if not hmac.compare_digest(expected, digest):
            return MISMATCH
        return None
    except (ValueError, TypeError, AttributeError):   # Unicode errors are ValueErrors
        return MALFORMED


class ReplayGuard:
    """Signatures already accepted, each kept until its timestamp leaves the window.

    Bounded: when ``capacity`` live signatures are held, ``first_use`` raises ``ReplayGuard.Full``
    rather than forget one early (which would let that one be replayed).
    """

    class Full(Exception):
        pass

    def __init__(self, window: float, capacity: int) -> None:
        self.window = window
        self.capacity = capacity
        self.seen: set[str] = set()
        self.expiries: list[tuple[float, str]] = []   # heap of (expiry, signature)

    def __len__(self) -> int:
        return len(self.seen)

    def first_use(self, header: str, now: float | None = None) -> bool:
        """Record a verified signature; False if it was seen inside the window already."""
        current = time.time() if now is None else now
        self._expire(current)
        parsed = parse_request_signature(header)
        if parsed is None:
            return False
        timestamp, digest = parsed
        key = f"{timestamp}.{digest}"
        if key in self.seen:
            return False
        if len(self.seen) >= self.capacity:
            raise ReplayGuard.Full(self.capacity)
        self.seen.add(key)
        heapq.heappush(self.expiries, (timestamp + self.window, key))
        return True

    def _expire(self, now: float) -> None:
        expiries = self.expiries
        while expiries and expiries[0][0] < now:
            self.seen.discard(heapq.heappop(expiries)[1])
