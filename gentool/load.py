"""How busy the machine is with other work: what makes a timing (the precision probe, img/s, an ETA) say more
about the other jobs than about this one. Linux reads /proc/stat; elsewhere the load average stands in."""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, or None where /proc/stat is not there."""
    try:
        with open("/proc/stat", encoding="ascii", errors="replace") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 5 or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9] if v.isdigit()]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks) - idle) / _TICKS, sum(ticks) / _TICKS


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def cores() -> int:
    return os.cpu_count() or 1


def usable_cores() -> int | None:
    """The cores this process may run on: its CPU affinity, bounded by a CPU quota of its cgroup (`quota_cores`);
    None where the system says neither."""
    try:
        affinity = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        affinity = None
    quota = quota_cores()
    return min(c for c in (affinity, quota) if c) if affinity or quota else None


def quota_cores(mountinfo: str = "/proc/self/mountinfo", cgroup: str = "/proc/self/cgroup") -> int | None:
    """The cores a CPU quota on this process's cgroup or an ancestor allows, rounded up (cgroup v2's cpu.max, v1's
    cpu.cfs_quota_us; the tightest): a container or batch job given 2 CPUs' time on a 64-core node by a quota, not
    an affinity mask, sees 64 cores, and torch's 64 threads then wait on each other. None without a quota, or where
    the files cannot be read (not Linux). Read by hand: no library in gentool's dependencies reads cgroups."""
    try:
        with open(cgroup, encoding="utf-8", errors="replace") as f:
            groups = f.read().splitlines()
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            mounts = [line.split(" - ", 1) for line in f.read().splitlines() if " - " in line]
    except OSError:
        return None
    limits = []
    for line in groups:
        hid, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        v2 = hid == "0" and not controllers
        if not v2 and "cpu" not in controllers.split(","):
            continue
        for head, tail in mounts:
            fstype, options = (tail.split() + ["", "", ""])[0], (tail.split() + ["", "", ""])[2]
            root, point = (head.split() + [""] * 5)[3:5]
            if (fstype != "cgroup2") if v2 else (fstype != "cgroup" or "cpu" not in options.split(",")):
                continue
            inside = os.path.relpath(path, root) if path.startswith(root) else "."
            folder = Path(_unescape(point), "" if inside == "." else inside)
            limits += _quotas(folder, Path(_unescape(point)), v2)
    return max(1, math.ceil(min(limits))) if limits else None


def _quotas(folder: Path, top: Path, v2: bool) -> list[float]:
    """The CPU quotas (in cores) set on `folder` and each ancestor up to the mount point `top`."""
    found = []
    for d in [folder, *folder.parents]:
        try:
            if v2:
                quota, period = (d / "cpu.max").read_text().split()[:2]
            else:
                quota, period = ((d / f"cpu.cfs_{k}_us").read_text().strip() for k in ("quota", "period"))
            if quota not in ("max", "-1") and float(period) > 0 and float(quota) > 0:
                found.append(float(quota) / float(period))
        except (OSError, ValueError):
            pass
        if d == top or len(d.parts) <= len(top.parts):
            break
    return found


def _unescape(field: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes come as octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class LoadMeter:
    """Measures, over a block, the share of the machine's cores that other processes kept busy."""

    def __enter__(self):
        self._start, self._own, self._wall = _cpu_seconds(), _own_seconds(), time.monotonic()
        return self

    def __exit__(self, *exc):
        self._end, self._own_end, self._wall_end = _cpu_seconds(), _own_seconds(), time.monotonic()
        return False

    @property
    def measured(self) -> bool:
        """Whether /proc/stat was read at both ends of the block (else other_share falls back on the load average)."""
        return self._start is not None and self._end is not None

    def own_share(self, threads: int) -> float:
        """The share of its `threads` cores this process got during the block: well below 1 when another process
        shared them (a busy core shows here even when the machine as a whole looks half idle)."""
        wall = self._wall_end - self._wall
        return (self._own_end - self._own) / (wall * threads) if wall > 0 else 1.0

    def busy(self, threads: int, other: float, own: float) -> bool:
        """Whether the block ran on a busy machine: other processes used more than `other` of all the cores, or
        this process got less than `own` of its own."""
        return self.other_share() > other or self.own_share(threads) < own

    def other_share(self) -> float:
        """0 (nothing else ran) to 1 (every core busy with other work) during the block."""
        if not self.measured:
            return max(0.0, min(1.0, (os.getloadavg()[0] - 1) / cores())) if hasattr(os, "getloadavg") else 0.0
        busy = self._end[0] - self._start[0] - (self._own_end - self._own)
        total = self._end[1] - self._start[1]
        return max(0.0, min(1.0, busy / total)) if total > 0 else 0.0


SLACK = 1.5  # load beyond the spare cores that is not yet "busy": the caller itself (a test runner, a shell loop)


def load_warning(threads: int, own: float = 0.0) -> str | None:
    """A warning when other work needs more than the cores this process left free, else None. Speeds and ETAs
    measured then are not what the machine does when quiet. The 1-minute load average (less `own`: what this
    process itself adds to it, about `threads` once it has run a minute) decides when it says quiet; when it says
    busy, a quarter-second look at /proc/stat confirms it, since the average still counts work that ended a minute
    ago (a run started right after another one would otherwise be told the machine is busy)."""
    if not hasattr(os, "getloadavg"):
        return None
    load, spare = os.getloadavg()[0], max(cores() - threads, 0)
    if load - own <= spare + SLACK:
        return None
    now = others_now()
    if now is not None and now <= spare + NOW_SLACK:
        return None
    seen = f"; other processes use {now:.1f} of them now" if now is not None else ""
    return (f"the machine is busy (load average {load:.1f} on {cores()} cores, {threads} of them for this "
            f"process{seen}): img/s, ETAs and timings now are not what it does when quiet")


NOW_SLACK = 0.5  # cores' worth of other work, measured now, that is not yet "busy" (a shell, a log tail)


def others_now(window: float = 0.25) -> float | None:
    """How many cores' worth of other processes' work ran during the next `window` seconds (this process waits
    meanwhile), or None where /proc/stat is not there."""
    with LoadMeter() as meter:
        time.sleep(window)
    return meter.other_share() * cores() if meter.measured else None
