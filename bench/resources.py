"""Operating-system resources: open-file limits, our own CPU use, the server's CPU, RSS and
open files."""
from __future__ import annotations

import contextlib
import os
import resource
import time
from typing import Any, Callable

import psutil

SATURATED_PCT = 90.0   # a load generator above this share of one core may be the bottleneck
QUIET_CORES = 0.2      # the machine counts as quiet below this many busy cores
QUIET_WAIT = 30.0      # longest wait for a quiet machine before a run


def raise_open_file_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
    return hard


class SelfUsage:
    """CPU time of this process over a window, as a share of one core."""

    def __init__(self) -> None:
        self.begin()

    def begin(self) -> None:
        self.wall0 = time.monotonic()
        self.cpu0 = _own_cpu()

    def report(self) -> dict:
        wall = max(time.monotonic() - self.wall0, 1e-9)
        cpu = _own_cpu() - self.cpu0
        return {"pid": os.getpid(), "cpu_s": round(cpu, 3), "wall_s": round(wall, 3),
                "cpu_pct": round(100.0 * cpu / wall, 1)}


def wait_until_quiet(limit: float, sample: float = 1.0) -> float:
    """Wait (at most ``limit`` s) until the machine keeps fewer than QUIET_CORES cores busy;
    return the busy cores last seen."""
    deadline = time.monotonic() + limit
    while True:
        busy0, wall0 = _machine_busy(), time.monotonic()
        time.sleep(sample)
        cores = (_machine_busy() - busy0) / (time.monotonic() - wall0)
        if cores < QUIET_CORES or time.monotonic() > deadline:
            return cores


def _machine_busy() -> float:
    """CPU seconds all cores spent on anything but idling, since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ServerProbe:
    """CPU time and RSS summed over a server process and all its descendants."""

    def __init__(self, root_pid: int | None) -> None:
        self.root_pid = root_pid

    def processes(self) -> list[psutil.Process]:
        if self.root_pid is None:
            return []
        try:
            root = psutil.Process(self.root_pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def parts(self) -> dict[str, "ServerProbe"]:
        """Named parts of the server whose CPU is reported besides the total (a cluster's
        nodes and Redis); none for one process tree."""
        return {}

    def cpu_seconds(self) -> float | None:
        """user + system CPU seconds of every server process (None: not measurable here)."""
        return self._total(lambda process: sum(process.cpu_times()[:2]))

    def rss_bytes(self) -> int | None:
        by_pid = self.rss_by_pid()
        return sum(by_pid.values()) if by_pid else None

    def open_fds(self) -> int | None:
        """File descriptors open in all server processes (each one's /proc/PID/fd)."""
        return self._total(lambda process: process.num_fds())

    def _total(self, read: Callable[[psutil.Process], float]) -> Any:
        """Σ ``read(process)`` over the server processes that are still there; None if none."""
        total, found = 0, False
        for process in self.processes():
            try:
                total += read(process)
                found = True
            except psutil.Error:
                continue
        return total if found else None

    def rss_by_pid(self) -> dict[int, int]:
        """RSS bytes of each server process."""
        found = {}
        for process in self.processes():
            with contextlib.suppress(psutil.Error):
                found[process.pid] = process.memory_info().rss
        return found


class Processes(ServerProbe):
    """A given set of a server's processes: one part of it."""

    def __init__(self, processes: list[psutil.Process]) -> None:
        super().__init__(None)
        self.found = processes

    def processes(self) -> list[psutil.Process]:
        return self.found


class CpuWindow:
    """Server CPU seconds spent between ``start()`` and ``stop()``, in total and per part."""

    def __init__(self, probe: ServerProbe) -> None:
        self.probe = probe
        self.cpu0: float | None = None
        self.wall0 = 0.0
        self.cpu: float | None = None
        self.wall = 0.0
        self.busy0 = self.busy = self.own0 = self.own = 0.0
        self.parts0: dict[str, float | None] = {}
        self.parts: dict[str, float] = {}      # part name -> CPU seconds

    def start(self) -> None:
        self.cpu0, self.parts0 = self._read()
        self.wall0 = time.monotonic()
        self.busy0, self.own0 = _machine_busy(), _own_cpu()

    def stop(self) -> None:
        cpu1, parts1 = self._read()
        self.wall = time.monotonic() - self.wall0
        self.busy = _machine_busy() - self.busy0
        self.own = _own_cpu() - self.own0
        if self.cpu0 is not None and cpu1 is not None:
            self.cpu = cpu1 - self.cpu0
        for name, after in parts1.items():
            before = self.parts0.get(name)
            if before is not None and after is not None:
                self.parts[name] = after - before

    def _read(self) -> tuple[float | None, dict[str, float | None]]:
        """The server's CPU seconds, and its parts'; a server of parts is read once, part by
        part, and its total is their sum (read again, it would not quite be)."""
        parts = {name: part.cpu_seconds() for name, part in self.probe.parts().items()}
        if not parts:
            return self.probe.cpu_seconds(), parts
        return (None if None in parts.values() else sum(parts.values())), parts

    def others_cores(self, loadgen_cpu: float) -> float | None:
        """Cores kept busy by everything but the server and the bench's processes (noise)."""
        if self.cpu is None or self.wall <= 0:
            return None
        others = self.busy - self.cpu - loadgen_cpu - self.own
        return round(max(others, 0.0) / self.wall, 2)

    def per_unit_us(self, units: int, cpu: float | None = None) -> float | None:
        """CPU µs per unit of the server (or of ``cpu`` seconds, a part's)."""
        cpu = self.cpu if cpu is None else cpu
        if cpu is None or not units:
            return None
        return round(cpu * 1e6 / units, 2)

    def cores(self, cpu: float | None = None) -> float | None:
        """Average number of cores the server (or ``cpu`` seconds, a part) kept busy."""
        cpu = self.cpu if cpu is None else cpu
        if cpu is None or self.wall <= 0:
            return None
        return round(cpu / self.wall, 2)
