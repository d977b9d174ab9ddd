"""Process and machine counters read from /proc: CPU seconds, resident memory, open files."""

from __future__ import annotations

import os
import re
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by all threads of process `pid`."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces; the fields after ")" are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def process_rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) of process `pid`, in bytes."""
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    if match is None:
        raise RuntimeError(f"no VmRSS for pid {pid}")
    return int(match.group(1)) * 1024


def process_open_fds(pid: int) -> int:
    """How many file descriptors process `pid` has open (entries of /proc/<pid>/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (the 'cpu' line of /proc/stat)."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guests are in user already.
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / CLOCK_TICKS


def maps_mention(pid: int, needle: str) -> bool:
    """Whether a shared object whose path contains `needle` is mapped into process `pid`."""
    try:
        return needle in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False
