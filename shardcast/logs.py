"""Log output of every shardcast process: plain text lines, or one JSON object per line."""
from __future__ import annotations

import logging
import math
from datetime import datetime, timezone

import orjson

TEXT_FORMAT = "%(asctime)s {process} %(levelname)s %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "process", "logger", "message"[, "exception"]}`` per record."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "process": self.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


class RateLimit(logging.Filter):
    """At most one record per ``interval`` seconds of each kind (logger and message template,
    whatever its arguments); the next one let through tells how many were held back. For lines
    that anyone can cause, such as garbage sent to a port: they must not flood the log."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval
        self.passed: dict[tuple[str, object], float] = {}    # kind -> when one last passed
        self.held: dict[tuple[str, object], int] = {}        # kind -> how many since

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.msg)
        if record.created - self.passed.get(kind, -math.inf) < self.interval:
            self.held[kind] = self.held.get(kind, 0) + 1
            return False
        self.passed[kind] = record.created
        held = self.held.pop(kind, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this since the last one, not logged)"
        return True


def setup(level: str, log_format: str, process: str) -> None:
    """Configure the root logger of this process; ``process`` names it in every line."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.format(process=process)))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
