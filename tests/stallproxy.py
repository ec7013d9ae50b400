"""A TCP proxy in front of Redis that can silence the subscription connections it carries (it
stops passing Redis' bytes to them and keeps them open, a stall no socket error reveals), make
them lag (Redis' bytes reach them late, in order), or play a Redis that restarts and loads its
data for a while (every command of a new connection is answered LOADING meanwhile), or hold a
client's command naming a key until told to pass it on."""

from __future__ import annotations

import queue
import socket
import threading
import time

import hiredis

LOADING = b"-LOADING Redis is loading the dataset in memory\r\n"


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.subscriber = False
        self.silenced = False
        self.lag = 0.0

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class StallProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: list[_Pair] = []
        self.lock = threading.Lock()
        self.loading_until = 0.0
        self.refused_loading = 0        # connections answered LOADING
        self.holding: bytes | None = None
        self.held = threading.Event()       # a command was held
        self.passing = threading.Event()    # pass on what is held, and hold no more
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def silence_subscriptions(self) -> int:
        """Silence every subscription connection open now; how many there were."""
        chosen = self._subscriptions()
        for pair in chosen:
            pair.silenced = True
        return len(chosen)

    def lag_subscriptions(self, seconds: float) -> int:
        """Pass Redis' bytes to every subscription connection open now ``seconds`` late; how
        many there were."""
        chosen = self._subscriptions()
        for pair in chosen:
            pair.lag = seconds
        return len(chosen)

    def hold(self, key: bytes) -> None:
        """Hold the next command naming ``key``, and what its connection sends after it,
        until ``release``."""
        self.holding = key

    def release(self) -> None:
        self.holding = None
        self.passing.set()

    def _subscriptions(self) -> list[_Pair]:
        with self.lock:
            return [pair for pair in self.pairs if pair.subscriber]

    def restart_loading(self, seconds: float) -> None:
        """Drop every connection; those made in the next ``seconds`` get LOADING answers."""
        self.loading_until = time.monotonic() + seconds
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            pair.close()

    def close(self) -> None:
        self.listener.close()
        with self.lock:
            for pair in self.pairs:
                pair.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.loading_until:
                self.refused_loading += 1
                threading.Thread(target=self._load, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            pair = _Pair(client, upstream)
            with self.lock:
                self.pairs.append(pair)
            threading.Thread(target=self._pump, args=(pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, False), daemon=True).start()

    def _pump(self, pair: _Pair, outbound: bool) -> None:
        """Bytes one way: the client's to Redis at once; Redis' to the client through a
        sender that keeps each chunk until ``lag`` after it arrived (lags do not add up)."""
        source = pair.client if outbound else pair.upstream
        late: queue.SimpleQueue = queue.SimpleQueue()
        if not outbound:
            threading.Thread(target=self._send_late, args=(pair, late), daemon=True).start()
        try:
            while data := source.recv(65536):
                if not outbound:
                    late.put((time.monotonic() + pair.lag, data))
                    continue
                if b"SUBSCRIBE" in data.upper():
                    pair.subscriber = True
                if self.holding is not None and self.holding in data:
                    self.held.set()
                    self.passing.wait(60)
                pair.upstream.sendall(data)
        except OSError:
            pass
        late.put(None)
        pair.close()
        with self.lock:
            if pair in self.pairs:
                self.pairs.remove(pair)

    @staticmethod
    def _send_late(pair: _Pair, late: queue.SimpleQueue) -> None:
        try:
            while (chunk := late.get()) is not None:
                due, data = chunk
                if not pair.silenced:
                    time.sleep(max(0.0, due - time.monotonic()))
                    pair.client.sendall(data)
        except OSError:
            pass

    @staticmethod
    def _load(client: socket.socket) -> None:
        """Answer every command LOADING, as a Redis reading its data does, until the client
        closes the connection."""
        commands = hiredis.Reader()     # a command is a RESP array, as a reply can be
        try:
            while data := client.recv(65536):
                commands.feed(data)
                while commands.gets() is not False:
                    client.sendall(LOADING)
        except OSError:
            pass
        client.close()
