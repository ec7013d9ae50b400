"""What a loaded configuration may hold: which keys are out of range, and what each expected.
load_config runs these checks once every layer is in (a port is checked with the process
count that sets the last websocket port)."""

from __future__ import annotations

import ipaddress
import math
import re
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .config import Config

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
COOKIE_SECURE = ("auto", "true", "false")
MAX_PORT = 65535

# Keys checked alike, by kind.
_PORTS = ("port", "ws_port_base")
_TIMINGS = (
    "signature_max_age", "wake_connections_after", "gc_conns_after", "gc_users_after",
    "gc_channels_after", "heartbeat_interval", "ws_ping_interval", "signature_window",
    "shutdown_timeout", "node_timeout", "redis_timeout", "history_ttl", "http_header_timeout",
    "http_body_timeout", "http_keep_alive_timeout", "http_send_timeout",
)
_SIZES = ("max_body_size", "max_client_frame_size", "send_buffer_size", "max_shard_backlog",
          "catchup_size", "max_message_size", "replay_cache_size", "max_url_size",
          "max_header_size", "max_headers")
_LIMITS = ("max_channels_per_connection", "max_connections_per_user",
           "max_connections_per_shard", "max_state_keys", "max_long_polls",
           "admin_channels_limit", "max_connections_per_address")   # 0: no limit


def problems(config: Config) -> dict[str, str]:
    """key -> what was expected, for every value out of range."""
    return {**_process_problems(config), **_value_problems(config)}


def _process_problems(config: Config) -> dict[str, str]:
    """Ports and process counts."""
    problems = {}
    for key in _PORTS:
        if not 1 <= getattr(config, key) <= MAX_PORT:
            problems[key] = f"a port number 1..{MAX_PORT}"
    if config.api_workers < 0:
        problems["api_workers"] = "a positive number, or 0 for as many as shards"
    last_ws_port = config.ws_port_base + config.workers - 1
    if config.workers < 1:
        problems["workers"] = "at least 1"
    elif "ws_port_base" not in problems and last_ws_port > MAX_PORT:
        problems["workers"] = (
            f"at most {MAX_PORT - config.ws_port_base + 1}, so that the last websocket port "
            f"(ws_port_base + workers - 1) stays within {MAX_PORT}"
        )
    elif config.ws_port_base <= config.port <= last_ws_port:
        problems["port"] = (
            f"a port outside the websocket ports {config.ws_port_base}..{last_ws_port}"
        )
    return problems


def _value_problems(config: Config) -> dict[str, str]:
    """Timings, sizes, limits, names and addresses."""
    problems = {}
    for key in _TIMINGS:
        value = getattr(config, key)
        if not (math.isfinite(value) and value > 0):
            problems[key] = "a positive number of seconds"
    for key in _SIZES:
        if getattr(config, key) <= 0:
            problems[key] = "a positive integer"
    for key in _LIMITS:
        if getattr(config, key) < 0:
            problems[key] = "a positive integer, or 0 for no limit"
    if config.kernel_send_buffer and not 4096 <= config.kernel_send_buffer < 2**31:
        problems["kernel_send_buffer"] = "0 for the OS's own sizing, or 4096..2147483647 bytes"
    if config.log_level not in LOG_LEVELS:
        problems["log_level"] = "one of " + ", ".join(LOG_LEVELS)
    if config.log_format not in LOG_FORMATS:
        problems["log_format"] = "one of " + ", ".join(LOG_FORMATS)
    if config.admin_cookie_secure not in COOKIE_SECURE:
        problems["admin_cookie_secure"] = "one of " + ", ".join(COOKIE_SECURE)
    if config.ws_url_template and not _valid_ws_url_template(config.ws_url_template):
        problems["ws_url_template"] = (
            "a ws:// or wss:// URL using no placeholders but {host}, {port} and {shard}"
        )
    if bool(config.ssl_certfile) != bool(config.ssl_keyfile):
        problems["ssl_keyfile"] = "set together with ssl_certfile (both, or neither)"
    for address in config.allow_posting_from:
        if not _is_ip(address):
            problems["allow_posting_from"] = "IP addresses (0.0.0.0 allows all)"
    if config.redis_url and not _valid_redis_url(config.redis_url):
        problems["redis_url"] = "redis://[:password@]host[:port][/db], or empty for one node"
    if config.node_id and not _NAME.fullmatch(config.node_id):
        problems["node_id"] = "letters, digits and . _ - : only"
    if not _NAME.fullmatch(config.redis_prefix):
        problems["redis_prefix"] = "letters, digits and . _ - : only"
    return problems


def shown(key: str, value: object) -> str:
    """A value as an error shows it (logs keep it): a Redis URL without its password."""
    if key == "redis_url":
        value = _URL_PASSWORD.sub(r"\1***@", str(value))
    return repr(value)


_URL_PASSWORD = re.compile(r"(//[^/@]*:)[^/]*@")


def _valid_ws_url_template(template: str) -> bool:
    try:
        url = template.format(host="example.com", port=8100, shard=0)
    except (KeyError, IndexError, ValueError, AttributeError):
        return False
    return url.startswith(("ws://", "wss://"))


_NAME = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _valid_redis_url(url: str) -> bool:
    from .redis.resp import Address      # imported only when a cluster is configured
    return _parses(Address.parse, url)


def _is_ip(address: str) -> bool:
    return _parses(ipaddress.ip_address, address)


def _parses(parse: Callable[[str], object], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True
