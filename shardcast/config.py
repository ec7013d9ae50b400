"""Server configuration: one frozen Config, loaded from defaults < ini file < environment < flags.

Every key is declared once, as a Config field carrying its one-line description; the ini
template (`shardcast make-config`) and the README table are rendered from those fields;
config_checks holds what each value may be.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import os
import re
import socket
import typing
from collections.abc import Mapping
from typing import Any

from . import config_checks

SECTION = "shardcast"
ENV_PREFIX = "SHARDCAST_"


class ConfigError(ValueError):
    """A configuration key is unknown, or its value is malformed or out of range."""


def _key(default: Any, doc: str, *, default_text: str | None = None) -> Any:
    """A Config field with its description; a callable default is computed per instance."""
    meta = {"doc": doc, "default_text": default_text}
    if callable(default):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _cpu_count() -> int:
    return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class Config:
    host: str = _key("0.0.0.0", "bind address of the HTTP API port and the shard websocket ports")
    port: int = _key(8000, "HTTP API port, served by the supervisor")
    ws_port_base: int = _key(8100, "shard i serves websockets on port ws_port_base + i")
    workers: int = _key(_cpu_count, "number of shard processes", default_text="one per CPU")
    api_workers: int = _key(
        0, "HTTP API processes sharing the API port (SO_REUSEPORT); 0: as many as shards",
        default_text="as many as shards"
    )
    secret: str = _key("", "shared secret that signs API calls; empty: a random one per run")
    admin_user: str = _key("admin", "user name for the admin pages")
    admin_secret: str = _key("", "password for the admin pages; empty: admin login disabled")
    admin_cookie_secure: str = _key(
        "auto", "Secure flag on the admin cookie: auto (when ssl_certfile is set), true (behind "
        "a TLS proxy) or false"
    )
    allow_posting_from: tuple[str, ...] = _key(
        ("127.0.0.1",), "IP addresses allowed to call the server API; 0.0.0.0 allows all"
    )
    allow_cors: tuple[str, ...] = _key(
        (), "origins allowed by CORS; empty: Access-Control-Allow-Origin: *"
    )
    validate_requests: bool = _key(
        True, "refuse Channelstream-style signatures older than signature_max_age"
    )
    signature_max_age: float = _key(
        60.0, "seconds a signature stays valid when validate_requests is on"
    )
    allow_compat_signatures: bool = _key(
        True, "accept the Channelstream x-channelstream-secret header (and ?secret=); false: "
        "only x-shardcast-signature, which signs method, path, query and body"
    )
    signature_window: float = _key(
        60.0, "seconds the t of an x-shardcast-signature may differ from the server clock"
    )
    refuse_replayed_signatures: bool = _key(
        False, "refuse an x-shardcast-signature already accepted within signature_window"
    )
    replay_cache_size: int = _key(
        200000, "signatures remembered for refuse_replayed_signatures; when full, signed "
        "requests get 503 until older ones leave the window"
    )
    ws_url_template: str = _key(
        "",
        "websocket URL returned by /connect, before ?conn_id=...; {host} = host name the "
        "/connect call was addressed to, {port} = ws_port_base + shard, {shard} = shard index; "
        "empty: ws://{host}:{port}/ws (wss:// with ssl_certfile)",
    )
    ssl_certfile: str = _key(
        "", "PEM certificate (chain) for TLS on the API and websocket ports; empty: no TLS"
    )
    ssl_keyfile: str = _key("", "PEM private key of ssl_certfile")
    wake_connections_after: float = _key(5.0, "seconds a /listen long poll waits for messages")
    gc_conns_after: float = _key(15.0, "seconds of inactivity after which a connection is removed")
    gc_users_after: float = _key(
        86400.0, "seconds of inactivity after which a user without connections is forgotten"
    )
    gc_channels_after: float = _key(
        3600.0, "seconds of inactivity after which a channel with no members, no history and "
        "default settings is forgotten"
    )
    heartbeat_interval: float = _key(5.0, "seconds between [] heartbeat frames to clients")
    ws_ping_interval: float = _key(20.0, "seconds between websocket pings to detect dead peers")
    max_body_size: int = _key(1048576, "largest HTTP request body accepted, in bytes")
    max_url_size: int = _key(8192, "longest request URL (path and query) accepted, in bytes")
    max_header_size: int = _key(32768, "largest request line and headers accepted, in bytes")
    max_headers: int = _key(100, "most different headers one HTTP request may carry")
    http_header_timeout: float = _key(
        10.0, "seconds a client has to send a request line and headers (a new connection too)"
    )
    http_body_timeout: float = _key(
        30.0, "seconds a client has to send a request body once its headers are in"
    )
    http_keep_alive_timeout: float = _key(
        60.0, "seconds an idle keep-alive connection to the API port stays open"
    )
    http_send_timeout: float = _key(
        30.0, "seconds a client may leave its answers unread (socket full) before it is dropped"
    )
    max_connections_per_address: int = _key(
        0, "open API connections one client address may hold; 0: no limit"
    )
    max_client_frame_size: int = _key(
        65536, "largest websocket frame accepted from a client, in bytes"
    )
    send_buffer_size: int = _key(
        1048576, "bytes queued for one connection before it is dropped as too slow"
    )
    kernel_send_buffer: int = _key(
        131072, "bytes the kernel may hold unsent for one client socket (a websocket, an API "
        "connection), on top of send_buffer_size (SO_SNDBUF, which Linux doubles and caps at "
        "net.core.wmem_max); 0: the OS's own sizing, which on loopback starts near 1.3 MB"
    )
    max_shard_backlog: int = _key(
        33554432, "bytes an API process or a shard queues for a shard that does not read them "
        "(stopped, or far behind); past it, commands for that shard answer 503, and its "
        "subscribers who miss deliveries are closed with 3008"
    )
    max_message_size: int = _key(
        262144, "largest message payload of one /message item, in bytes of its JSON"
    )
    max_channels_per_connection: int = _key(1000, "channels one connection may be in; 0: no limit")
    max_connections_per_user: int = _key(
        100000, "connections one username may hold at once; 0: no limit"
    )
    max_connections_per_shard: int = _key(100000, "connections one shard may hold; 0: no limit")
    max_state_keys: int = _key(1000, "keys in one user's state; 0: no limit")
    max_long_polls: int = _key(10000, "/listen requests one shard may hold open; 0: no limit")
    catchup_size: int = _key(100, "envelopes kept per channel for catch-up on (re)connect")
    admin_channels_limit: int = _key(
        100, "channels admin.json lists (the first by name), the others only counted in its "
        "channels_left_out; 0: no limit"
    )
    shutdown_timeout: float = _key(
        5.0, "seconds SIGTERM waits for in-flight calls and shards before killing what is left"
    )
    redis_url: str = _key(
        "", "Redis that joins nodes into one cluster (redis://[:password@]host[:port][/db]); "
        "empty: this node alone, in memory"
    )
    redis_prefix: str = _key(
        "shardcast", "prefix of every Redis key, so that several clusters can share one Redis"
    )
    node_id: str = _key(
        "", "this node's name in the cluster (logs, admin, metrics); empty: host name and API "
        "port", default_text="host:port"
    )
    node_timeout: float = _key(
        10.0, "seconds after which a node that stopped reporting is declared dead and one "
        "other node removes its connections"
    )
    redis_timeout: float = _key(
        2.0, "seconds a Redis call may take: calls that need Redis answer 503 after this while "
        "it is unreachable"
    )
    history_ttl: float = _key(
        86400.0, "seconds Redis keeps a channel's history, and a channel without members, "
        "after its last use"
    )
    log_level: str = _key("info", "one of debug, info, warning, error")
    log_format: str = _key("text", "text, or json: one JSON object per log line")

    @property
    def websocket_url_template(self) -> str:
        """ws_url_template, else the shard ports themselves: wss:// when they serve TLS."""
        if self.ws_url_template:
            return self.ws_url_template
        return ("wss" if self.ssl_certfile else "ws") + "://{host}:{port}/ws"


    @property
    def api_processes(self) -> int:
        return self.api_workers or self.workers

    @property
    def node(self) -> str:
        """This node's id in the cluster."""
        return self.node_id or f"{socket.gethostname()}:{self.port}"


_FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
_TYPES: dict[str, type] = {
    name: typing.get_origin(hint) or hint for name, hint in typing.get_type_hints(Config).items()
}
_BOOLS = {"true": True, "1": True, "yes": True, "on": True,
          "false": False, "0": False, "no": False, "off": False}
_EXPECTED = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false (or 1/0, yes/no, on/off)",
    tuple: "a list separated by commas or spaces",
}


def env_var(key: str) -> str:
    """The environment variable that sets `key`, e.g. SHARDCAST_WS_PORT_BASE."""
    return ENV_PREFIX + key.upper()


def _normalize_key(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def _parse(kind: type, text: str) -> Any:
    """Convert a string from an ini file or the environment; ValueError if it does not fit."""
    text = text.strip()
    if kind is bool:
        if text.lower() not in _BOOLS:
            raise ValueError(text)
        return _BOOLS[text.lower()]
    if kind is tuple:
        return tuple(part for part in re.split(r"[\s,]+", text) if part)
    return kind(text)


def _convert(key: str, value: Any, source: str) -> Any:
    kind = _TYPES[key]
    try:
        if isinstance(value, str):
            return _parse(kind, value)
        if kind is tuple and isinstance(value, (list, tuple)):
            if all(isinstance(item, str) for item in value):
                return tuple(value)
        elif kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        elif isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
    except ValueError:
        pass
    raise ConfigError(f"{key} (from {source}): expected {_EXPECTED[kind]}, got {value!r}")


def _unknown_key(key: str, source: str) -> ConfigError:
    close = difflib.get_close_matches(key, _FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"unknown key {key!r} in {source}{hint}; `shardcast make-config` lists every key"
    )


def _read_ini(path: str) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not a valid ini file: {exc}") from None
    if not parser.has_section(SECTION):
        raise ConfigError(
            f"config file {path} has no [{SECTION}] section; "
            "write a complete one with `shardcast make-config -o FILE`"
        )
    values = {}
    for raw_key, value in parser.items(SECTION):
        key = _normalize_key(raw_key)
        if key not in _FIELDS:
            raise _unknown_key(raw_key, f"[{SECTION}] of config file {path}")
        values[key] = value
    return values


def load_config(
    path: str | None,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the Config: overrides (None values skipped) > SHARDCAST_<KEY> > ini file > defaults."""
    environ = os.environ if environ is None else environ
    layers: list[tuple[str, Any, str]] = []
    if path:
        layers += [(key, value, f"config file {path}") for key, value in _read_ini(path).items()]
    layers += [
        (key, environ[env_var(key)], f"environment variable {env_var(key)}")
        for key in _FIELDS
        if env_var(key) in environ
    ]
    for raw_key, value in (overrides or {}).items():
        key = _normalize_key(raw_key)
        if key not in _FIELDS:
            raise _unknown_key(raw_key, "command-line overrides")
        if value is not None:
            layers.append((key, value, "command line"))

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value, source in layers:
        values[key] = _convert(key, value, source)
        sources[key] = source
    for key in ("log_level", "log_format", "admin_cookie_secure"):
        if key in values:
            values[key] = values[key].lower()
    config = Config(**values)
    _validate(config, sources)
    return config


def _validate(config: Config, sources: Mapping[str, str]) -> None:
    problems = config_checks.problems(config)
    if problems:
        raise ConfigError("\n".join(
            f"{key} = {config_checks.shown(key, getattr(config, key))} (from "
            f"{sources.get(key, 'default')}): expected {expected}"
            for key, expected in problems.items()
        ))


def _format(value: Any) -> str:
    """A value as written in the ini file (the inverse of _parse)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value)


def _rows(config: Config | None) -> list[tuple[str, str, str, bool]]:
    """(key, value, doc, is_computed_default) per field, in declaration order."""
    shown = config or Config()
    rows = []
    for field in _FIELDS.values():
        default_text = field.metadata["default_text"]
        computed = config is None and default_text is not None
        value = f"({default_text})" if computed else _format(getattr(shown, field.name))
        rows.append((field.name, value, field.metadata["doc"], computed))
    return rows


_INI_HEADER = f"""\
# shardcast configuration, written by `shardcast make-config`.
# Use it with: shardcast serve -c FILE
# Precedence: command-line flags > {ENV_PREFIX}<KEY> environment variables > this file > defaults.
# Every key is optional: delete a line to get its default back.
"""


def render_ini(config: Config | None = None) -> str:
    """An ini file with every key and a one-line comment each; None renders the defaults."""
    lines = [_INI_HEADER, f"[{SECTION}]"]
    for key, value, doc, computed in _rows(config):
        assignment = f"{key} = {value}".rstrip()
        lines += [f"# {doc}", f"# {assignment}" if computed else assignment, ""]
    return "\n".join(lines)


def render_markdown_table() -> str:
    """The README's configuration table, rendered from the same field descriptions."""
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, value, doc, computed in _rows(None):
        default = value.strip("()") if computed else f"`{value}`" if value else "(empty)"
        lines.append(f"| `{key}` | {default} | {doc.replace('|', '&#124;')} |")
    return "\n".join(lines) + "\n"
