"""What one client of an HTTP port may make the server hold, and for how long: the size of a
request's head and body, the time each part of a request may take, connections per address."""
from __future__ import annotations

from .config import Config

# What a connection reads: nothing yet, nothing (between requests), a head, a body.
FRESH, IDLE, HEAD, BODY = range(4)


class HttpLimits:
    """The limits of one HTTP server, shared by its connections (which count themselves in)."""

    def __init__(self, config: Config) -> None:
        self.max_body = config.max_body_size
        self.max_url = config.max_url_size
        self.max_head = config.max_header_size
        self.max_headers = config.max_headers
        self.header_timeout = config.http_header_timeout
        self.body_timeout = config.http_body_timeout
        self.keep_alive_timeout = config.http_keep_alive_timeout
        self.send_timeout = config.http_send_timeout
        # A connection's timer wakes at least this often: every deadline it is given lies at
        # least this far ahead, so moving a deadline never needs a new timer (see HttpProtocol).
        self.tick = min(self.header_timeout, self.body_timeout, self.keep_alive_timeout,
                        self.send_timeout)
        self.per_address = config.max_connections_per_address
        self.open: dict[str, int] = {}      # connections per client address, when capped
        # The 4xx answers, each naming what to configure.
        self.url_too_long = f"The URL is over the {self.max_url} byte limit (max_url_size)"
        self.head_too_large = (f"The request line and headers are over the {self.max_head} "
                               "byte limit (max_header_size)")
        self.too_many_headers = f"More than {self.max_headers} different headers (max_headers)"
        self.body_too_large = f"Request body is over the {self.max_body} byte limit (max_body_size)"
        self.head_late = (f"The request line and headers did not arrive within "
                          f"{self.header_timeout:g} s (http_header_timeout)")
        self.body_late = (f"The request body did not arrive within {self.body_timeout:g} s "
                          "(http_body_timeout)")
        # By what the connection reads: how long the client may take, and the 408 answer if
        # it takes longer (None: the connection closes quietly, nothing was asked).
        self.timeouts = (self.header_timeout, self.keep_alive_timeout, self.header_timeout,
                         self.body_timeout)
        self.late = (None, None, self.head_late, self.body_late)

    def admit(self, address: str) -> str | None:
        """Count a new connection in; the reason to refuse it, if any."""
        if not self.per_address:
            return None
        count = self.open.get(address, 0)
        if count >= self.per_address:
            return (f"{address} holds {count} connections, the most allowed "
                    "(max_connections_per_address); reuse or close one")
        self.open[address] = count + 1
        return None

    def release(self, address: str) -> None:
        if not self.per_address:
            return
        count = self.open.pop(address) - 1
        if count:
            self.open[address] = count
