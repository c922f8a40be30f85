"""CPU time and resident memory of a process from Linux's /proc, sampled over time.

`parse_stat` and `parse_rss` read the text of /proc/<pid>/stat and /proc/<pid>/status;
`ProcSampler` samples a pid every `interval` seconds in the background and answers CPU % of
one core and RSS over any time window it covered. Where /proc is missing (not Linux) the
sampler reports nothing rather than failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def parse_stat(text: str, ticks_per_second: int = CLOCK_TICKS) -> float:
    """User + system CPU seconds from /proc/<pid>/stat (fields 14 and 15)."""
    # The command name (field 2) is in parentheses and may contain spaces.
    rest = text[text.rindex(")") + 2 :].split()
    utime, stime = int(rest[11]), int(rest[12])
    return (utime + stime) / ticks_per_second


def parse_rss(text: str) -> int:
    """Resident set size in bytes from /proc/<pid>/status (VmRSS, given in kB)."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError("no VmRSS line")


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # loop time
    cpu_seconds: float  # process: user + system; machine: user + nice + system, all CPUs
    rss_bytes: int
    irq_seconds: float = 0.0  # machine only: interrupt and softirq time (network stack)
    steal_seconds: float = 0.0  # machine only: time the hypervisor gave to others


def parse_system_stat(text: str, ticks_per_second: int = CLOCK_TICKS) -> tuple[float, float, float]:
    """(process time, irq + softirq time, steal time) in CPU seconds over all CPUs, from
    the `cpu` line of /proc/stat. Process time (user + nice + system) is what processes
    are charged for; interrupt work is not charged to any process."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]] + [0] * 8
            user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
            return (
                (user + nice + system) / ticks_per_second,
                (irq + softirq) / ticks_per_second,
                steal / ticks_per_second,
            )
    raise ValueError("no cpu line")


def read_sample(pid: int | None, at: float) -> Sample | None:
    """A sample of process `pid`, or of the whole machine (rss 0) when pid is None."""
    try:
        if pid is None:
            busy, irq, steal = parse_system_stat(Path("/proc/stat").read_text())
            return Sample(at, busy, 0, irq, steal)
        base = Path("/proc") / str(pid)
        cpu = parse_stat((base / "stat").read_text())
        rss = parse_rss((base / "status").read_text())
    except (OSError, ValueError, IndexError):
        return None
    return Sample(at, cpu, rss)


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_percent: float  # of one core, averaged over the window
    rss_bytes: int  # mean over the window
    rss_peak_bytes: int
    window_s: float
    irq_percent: float = 0.0
    steal_percent: float = 0.0


class ProcSampler:
    """Samples process `pid`, or with pid None the whole machine (CPU % of one core summed
    over all CPUs; no RSS)."""

    def __init__(self, pid: int | None, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def available(self) -> bool:
        path = Path("/proc/stat") if self.pid is None else Path("/proc") / str(self.pid) / "stat"
        return path.exists()

    def sample_now(self) -> Sample | None:
        sample = read_sample(self.pid, asyncio.get_running_loop().time())
        if sample is not None:
            self.samples.append(sample)
        return sample

    def start(self) -> None:
        if self._task is None and self.available:
            self._task = asyncio.create_task(self._run(), name=f"procstat-{self.pid or 'all'}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.sample_now()

    async def _run(self) -> None:
        while True:
            if self.sample_now() is None:
                return  # the process is gone
            await asyncio.sleep(self.interval)

    def usage(self, start: float, end: float) -> Usage | None:
        """CPU and RSS between loop times `start` and `end` (None without two samples in it)."""
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2 or inside[-1].at <= inside[0].at:
            return None
        first, last = inside[0], inside[-1]
        window = last.at - first.at

        def percent(value: float) -> float:
            return round(value / window * 100, 2)

        rss = [s.rss_bytes for s in inside]
        return Usage(
            percent(last.cpu_seconds - first.cpu_seconds),
            sum(rss) // len(rss),
            max(rss),
            round(window, 3),
            percent(last.irq_seconds - first.irq_seconds),
            percent(last.steal_seconds - first.steal_seconds),
        )

    def rss_before(self, at: float) -> int | None:
        """RSS of the last sample taken at or before `at`."""
        earlier = [s for s in self.samples if s.at <= at]
        return earlier[-1].rss_bytes if earlier else None


def listening_inodes(table: str, port: int) -> set[str]:
    """Socket inodes listening on `port` in a /proc/net/tcp or tcp6 table."""
    inodes = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
            inodes.add(inode)
    return inodes


def find_listening_pid(port: int) -> int | None:
    """The pid of a local process listening on TCP `port` (Linux, same user), else None."""
    inodes: set[str] = set()
    for name in ("tcp", "tcp6"):
        try:
            inodes |= listening_inodes((Path("/proc/net") / name).read_text(), port)
        except OSError:
            continue
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(proc.name)
        except OSError:
            continue
    return None
