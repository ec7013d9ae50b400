"""Log output of every shardcast process: plain text lines, or one JSON object per line."""
from __future__ import annotations

import logging
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


def setup(level: str, log_format: str, process: str) -> None:
    """Configure the root logger of this process; ``process`` names it in every line."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter(process))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.format(process=process)))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
