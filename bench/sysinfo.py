"""A description of the machine and the software versions a benchmark ran with."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path

from bench.targets import PGBOUNCER_BIN


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def _cpu_model() -> str:
    match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    return match.group(1).strip() if match else platform.processor() or "unknown"


def _ram_gib() -> float:
    match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return round(int(match.group(1)) / 1024 / 1024, 1) if match else 0.0


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(postgres_version: str) -> dict[str, object]:
    """nproc, CPU model, RAM, kernel and the versions of everything taking part."""
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": _ram_gib(),
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "postgresql": postgres_version,
        "pgbench": _first_line(["pgbench", "--version"]),
        "pgbouncer": _first_line([PGBOUNCER_BIN, "--version"]),
        "python": platform.python_version(),
        "uvloop": _package_version("uvloop"),
    }
