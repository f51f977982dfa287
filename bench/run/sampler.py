"""CPU and RSS of the processes a row measures, sampled from /proc while it runs."""

from __future__ import annotations

import os
import re
import threading
import time

from bench.run.config import NCPU

CLK_TCK = os.sysconf("SC_CLK_TCK")
BACKEND = re.compile(r"\(\d+\)|\[local\]")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _read_stat(pid: str) -> tuple[int, str, int, int] | None:
    """(ppid, comm, cpu ticks, rss pages) of a process, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    close = raw.rfind(b")")
    comm = raw[raw.find(b"(") + 1 : close].decode(errors="replace")
    rest = raw[close + 2 :].split()
    return int(rest[1]), comm, int(rest[11]) + int(rest[12]), int(rest[21])


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def _tree(root: int, children: dict[int, list[int]]) -> set[int]:
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out


class Sampler(threading.Thread):
    """Samples CPU time of the server tree, the generator tree, PostgreSQL and the machine, and
    the server tree's RSS, every `interval` seconds (from /proc)."""

    GROUPS = ("server", "generator", "postgres", "harness")

    # Set by the harness: PostgreSQL backends of other databases (other sessions' tests on the
    # same server) are not ours; the server's shared processes (WAL writer, checkpointer…) are.
    database_mark: str | None = None

    def __init__(self, server_pid: int | None = None, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.server_pid = server_pid
        self._pg_ours: dict[int, bool] = {}
        self.generator_pid: int | None = None
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int], int, int]] = []
        self.rss_peak = 0
        self._last: dict[str, dict[int, int]] = {g: {} for g in self.GROUPS}
        self._stop_event = threading.Event()

    def snapshot(self) -> None:
        stats: dict[int, tuple[int, str, int, int]] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = _read_stat(name)
                if stat is not None:
                    stats[int(name)] = stat
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_) in stats.items():
            children.setdefault(ppid, []).append(pid)
        members = {
            "server": _tree(self.server_pid, children) if self.server_pid else set(),
            "generator": _tree(self.generator_pid, children) if self.generator_pid else set(),
            "postgres": {pid for pid, s in stats.items() if s[1] == "postgres" and self._ours(pid)},
            "harness": {os.getpid()},
        }
        for group, pids in members.items():
            last = self._last[group]
            for pid in pids:
                if pid in stats:
                    last[pid] = stats[pid][2]
        rss = sum(stats[p][3] for p in members["server"] if p in stats) * PAGE_SIZE
        self.rss_peak = max(self.rss_peak, rss)
        busy, total = _machine_ticks()
        totals = {g: sum(v.values()) for g, v in self._last.items()}
        self.samples.append((time.monotonic(), totals, busy, total))

    def _ours(self, pid: int) -> bool:
        known = self._pg_ours.get(pid)
        if known is not None:
            return known
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        mark = self.database_mark
        if mark is None or mark in cmdline:
            ours = True
        else:  # a backend or autovacuum worker of another database is someone else's
            ours = not (BACKEND.search(cmdline) or "autovacuum worker" in cmdline)
        self._pg_ours[pid] = ours
        return ours

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.snapshot()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.snapshot()

    def usage(self, start: float, end: float) -> dict[str, float]:
        """CPU % of one core per group over [start, end] (nearest samples), and the rest of the
        machine's busy time ("other": processes that are not part of the measurement)."""
        before = [s for s in self.samples if s[0] <= start] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= end] or self.samples[-1:]
        a, b = before[-1], after[0]
        seconds = b[0] - a[0]
        if seconds <= 0:
            return {}
        out = {g: 100 * (b[1][g] - a[1][g]) / CLK_TCK / seconds for g in self.GROUPS}
        machine = 100 * NCPU * (b[2] - a[2]) / max(b[3] - a[3], 1)
        out["machine"] = machine
        out["other"] = max(0.0, machine - sum(out[g] for g in self.GROUPS))
        return {k: round(v, 1) for k, v in out.items()}


def machine_busy(seconds: float) -> float:
    """Busy % of the whole machine (0–100) over `seconds`."""
    b0, t0 = _machine_ticks()
    time.sleep(seconds)
    b1, t1 = _machine_ticks()
    return 100 * (b1 - b0) / max(t1 - t0, 1)


def wait_for_quiet(max_wait: float, threshold: float) -> float:
    """Wait (up to `max_wait` s) until the machine is below `threshold` % busy; return the last
    reading. Other sessions' test suites share these cores: starting in a burst skews a run."""
    deadline = time.monotonic() + max_wait
    busy = machine_busy(0.5)
    while busy > threshold and time.monotonic() < deadline:
        time.sleep(1.0)
        busy = machine_busy(0.5)
    return round(busy, 1)
