"""File descriptors: each client socket is one, and the soft RLIMIT_NOFILE (1,024 on many
systems) caps them per process. Raised at start; running out is noticed and logged.

uvloop gives no sign of running out: when accept() fails with EMFILE or ENFILE, libuv closes a
descriptor it keeps in reserve, accepts every pending connection and closes it at once, takes
its reserve back and calls nobody (``uv__emfile_trick``); clients see their connection closed
before any answer. Only with no reserve does the listen callback get the error, and uvloop then
closes the listening socket for good, silently (``UVStreamServer._fatal_error``). So a ``Watch``
tries, once a second, to make a socket: that fails exactly when an accept would.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import resource
import socket

from .config import Config

log = logging.getLogger("shardcast.descriptors")
RESERVE = 64            # descriptors a process needs besides client sockets: IPC, pipes, files
NO_HARD_LIMIT = 1 << 20     # what to ask for when the hard limit is infinite (Linux's nr_open)
CHECK_EVERY = 1.0       # seconds
LOG_EVERY = 60.0        # seconds between two reports of the same shortage
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


def raise_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NO_HARD_LIMIT if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as error:
            log.warning("cannot raise RLIMIT_NOFILE from %d to %d: %s", soft, target, error)
            return soft
        return target
    return soft


def check_limit(config: Config, limit: int) -> None:
    """Warn when ``limit`` is below what the configured connection limits need."""
    needs = []
    if config.max_connections_per_shard:
        needs.append((config.max_connections_per_shard + RESERVE,
                      f"a shard, for max_connections_per_shard = "
                      f"{config.max_connections_per_shard}"))
    if config.max_long_polls:
        polls = config.max_long_polls * config.workers
        needs.append((polls + RESERVE, f"the API processes, for {polls} held long polls "
                      f"(max_long_polls = {config.max_long_polls} on each of {config.workers} "
                      "shards, any of them through one API process)"))
    short = [f"{need} in {what}" for need, what in needs if need > limit]
    if short:
        log.warning("RLIMIT_NOFILE is %d, below the file descriptors the configured limits may "
                    "need (%s): connections past it are refused. Raise the hard limit "
                    "(LimitNOFILE= in a systemd unit, ulimit -Hn) or lower those limits",
                    limit, "; ".join(short))


class Watch:
    """Logs, at most every LOG_EVERY seconds, while this process has no descriptor left,
    and once when it has some again."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.logged_at = -math.inf
        self.reported = False   # a shortage was logged, its end not yet

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Check now and every CHECK_EVERY seconds (for a process with no timer of its own)."""
        self.check(loop.time())
        loop.call_later(CHECK_EVERY, self.start, loop)

    def check(self, now: float) -> None:
        try:
            socket.socket().close()
        except OSError as error:
            if error.errno not in OUT_OF_DESCRIPTORS:
                raise
            self._short(now, error.errno)
            return
        if self.reported:
            self.reported = False
            log.warning("%s has file descriptors available again", self.process)

    def _short(self, now: float, code: int) -> None:
        if now - self.logged_at < LOG_EVERY:
            return
        self.logged_at = now
        self.reported = True
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        log.error("%s is out of file descriptors (%s; RLIMIT_NOFILE %d): new connections are "
                  "closed as soon as they are accepted. Raise the limit (LimitNOFILE= in a "
                  "systemd unit, ulimit -n) or spread the load", self.process,
                  os.strerror(code), limit)
