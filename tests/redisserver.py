"""A real ``redis-server`` on a free loopback port in a temporary directory (no system
service), for the cluster tests; ``tests/setup.sh`` installs Debian's when missing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time

from processes import free_port

START_TIMEOUT = 10.0


class RedisServer:
    def __init__(self, persist: bool = False, password: str | None = None) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="shardcast-redis-")
        self.persist = persist
        self.password = password
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def start(self) -> "RedisServer":
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed: run tests/setup.sh")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "yes" if self.persist else "no",
             "--appendfsync", "always", "--protected-mode", "no", "--loglevel", "warning",
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while self.command("PING") != b"+PONG":
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, *args: str) -> bytes | None:
        """One command over a fresh connection (signed in first when the server has a
        password): the first line of its reply (None: refused)."""
        commands = ([("AUTH", self.password)] if self.password else []) + [args]
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(b"".join(_encoded(command) for command in commands))
                reply = b""
                while reply.count(b"\r\n") < len(commands):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
                return reply.split(b"\r\n")[len(commands) - 1] if reply else None
        except OSError:
            return None


def _encoded(command: tuple[str, ...]) -> bytes:
    parts = [f"*{len(command)}\r\n"] + [f"${len(a.encode())}\r\n{a}\r\n" for a in command]
    return "".join(parts).encode()
