"""A client's side of positions and resume, as the tests play it."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

from contract import delivered
from harness import Server
from wsclient import WsClient, open_websocket


def positioned(item: dict, epoch: str, offset: int, catchup: bool = False) -> dict:
    return {**delivered(item, catchup=catchup), "epoch": epoch, "offset": offset}


def with_query(url: str, **params: object) -> str:
    return url + "".join(f"&{key}={quote(value if isinstance(value, str) else json.dumps(value))}"
                         for key, value in params.items())


class Reader:
    """A client that keeps its positions and comes back with them after each drop."""

    def __init__(self, server: Server, username: str, channels: list[str]) -> None:
        self.server, self.username, self.channels = server, username, channels
        self.positions: dict[str, dict] = {}
        self.got: dict[str, list[dict]] = {name: [] for name in channels}
        self.statuses: list[dict] = []

    def connect(self, node: Server, **body) -> WsClient:
        reply = node.connect(self.username, self.channels, **body)
        params = {"since": self.positions} if self.positions else {"offsets": "1"}
        return open_websocket(with_query(reply["ws_url"], **params))

    def read(self, client, until: str | None = None, timeout: float = 10) -> None:
        """Keep what arrives until the websocket closes (or the message ``until`` arrives)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                frame = json.loads(client.connection.recv(timeout=0.2))
            except TimeoutError:
                continue
            except Exception:           # closed under it
                return
            for envelope in frame:
                if envelope["type"] == "recovery":
                    self.statuses.append(envelope["channels"])
                elif envelope["type"] == "message":
                    self.got[envelope["channel"]].append(envelope)
                    self.positions[envelope["channel"]] = {"epoch": envelope["epoch"],
                                                           "offset": envelope["offset"]}
                    if envelope["uuid"] == until:
                        return
