"""Loopback ports and the server's process tree, read from /proc (no psutil here)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
from pathlib import Path


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports given to the servers of this test session, bound yet or not: servers made before any
# of them starts (a cluster's nodes) must not share one.
_given: set[int] = set()
LOWEST_PORT = 20000


def free_port() -> int:
    return free_port_range(1)


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive loopback ports, free now and given to no other server
    of this session; below the kernel's ephemeral range, so that no outgoing connection takes
    one before the server binds it."""
    top = max(_ephemeral_start(), LOWEST_PORT + 10000)
    for _ in range(500):
        base = random.randint(LOWEST_PORT, top - count)
        ports = range(base, base + count)
        if _given.isdisjoint(ports) and all(port_is_free(port) for port in ports):
            _given.update(ports)
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def descendant_pids(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in child_pids(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def rss_bytes(pids: list[int]) -> int:
    """The summed resident memory of ``pids`` (those gone count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "0A":  # 0A = LISTEN
                inodes.add(fields[9])
    return inodes


def pids_listening_on(port: int, candidates: list[int]) -> list[int]:
    """Which of ``candidates`` hold the listening socket of ``port``."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    holders = []
    for pid in candidates:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    holders.append(pid)
                    break
            except OSError:
                continue
    return holders


def stop_tree(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM ``process``, kill it if it lingers, then kill what it left behind."""
    descendants = {pid: cmdline(pid) for pid in descendant_pids(process.pid)}
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pid, command in descendants.items():
        if command and cmdline(pid) == command:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
