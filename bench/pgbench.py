"""Running pgbench against a target and reading its summary and per-transaction log."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.procstat import machine_busy_seconds, process_cpu_seconds
from bench.targets import Target, raise_fd_limit

PGBENCH = shutil.which("pgbench") or "pgbench"


@dataclass
class RunResult:
    """One pgbench run: what ran, what pgbench reported, and the CPU it cost."""

    target: str
    mode: str | None  # pool mode; None for direct PostgreSQL
    protocol: str  # simple | extended | prepared
    clients: int
    duration: int
    connect_each: bool  # pgbench -C: a new connection per transaction
    transactions: int = 0
    failed: int = 0
    aborted_clients: int = 0
    tps: float = 0.0
    latency_avg_ms: float | None = None
    latency_p99_ms: float | None = None
    connection_avg_ms: float | None = None
    initial_connection_ms: float | None = None
    proxy_cpu_s: float | None = None
    machine_cpu_s: float = 0.0
    wall_s: float = 0.0
    error: str | None = None

    @property
    def proxy_cpu_us_per_tx(self) -> float | None:
        if self.proxy_cpu_s is None or not self.transactions:
            return None
        return self.proxy_cpu_s / self.transactions * 1e6

    @property
    def machine_cpu_us_per_tx(self) -> float | None:
        return self.machine_cpu_s / self.transactions * 1e6 if self.transactions else None

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["proxy_cpu_us_per_tx"] = self.proxy_cpu_us_per_tx
        data["machine_cpu_us_per_tx"] = self.machine_cpu_us_per_tx
        return data


def pgbench_env(password: str) -> dict[str, str]:
    return dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="60")


def init_pgbench(host: str, port: int, user: str, password: str, dbname: str, scale: int) -> None:
    """Load pgbench's tables at `scale` into `dbname` (which must exist)."""
    cmd = [PGBENCH, "-i", "-q", "-s", str(scale), "-h", host, "-p", str(port), "-U", user, dbname]
    proc = subprocess.run(cmd, env=pgbench_env(password), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench -i failed ({proc.returncode}):\n{proc.stderr}")


def run_pgbench(
    target: Target,
    mode: str | None,
    protocol: str,
    clients: int,
    duration: int,
    log_dir: Path | None,
    connect_each: bool = False,
) -> RunResult:
    """Run select-only pgbench for `duration` seconds and measure the proxy's CPU around it."""
    result = RunResult(target.name, mode, protocol, clients, duration, connect_each)
    cmd = [
        PGBENCH,
        "-n",
        "-S",
        "-M",
        protocol,
        "-c",
        str(clients),
        "-j",
        str(min(2, clients)),
        "-T",
        str(duration),
        "-h",
        target.host,
        "-p",
        str(target.port),
        "-U",
        target.user,
    ]
    if connect_each:
        cmd.append("-C")
    prefix = None
    if log_dir is not None:
        prefix = log_dir / f"pgbench-{time.monotonic_ns()}"
        cmd += ["--log", f"--log-prefix={prefix}"]
    cmd.append(target.dbname(mode))
    cpu_before = process_cpu_seconds(target.pid) if target.pid else None
    busy_before, started = machine_busy_seconds(), time.monotonic()
    try:
        proc = subprocess.run(
            cmd,
            env=pgbench_env(target.password),
            capture_output=True,
            text=True,
            timeout=duration + 180,
            preexec_fn=raise_fd_limit,
        )
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        stdout, stderr = _text(exc.stdout), _text(exc.stderr) + "\npgbench timed out"
    result.wall_s = time.monotonic() - started
    result.machine_cpu_s = machine_busy_seconds() - busy_before
    if cpu_before is not None and target.pid:
        result.proxy_cpu_s = process_cpu_seconds(target.pid) - cpu_before
    parse_summary(stdout, stderr, result)
    if prefix is not None:
        result.latency_p99_ms = p99_from_logs(prefix)
    return result


def parse_summary(stdout: str, stderr: str, result: RunResult) -> None:
    """Fill `result` from pgbench's printed summary; record an error when there is none."""

    def number(pattern: str) -> float | None:
        match = re.search(pattern, stdout)
        return float(match.group(1)) if match else None

    processed = number(r"number of transactions actually processed: (\d+)")
    tps = number(r"(?m)^tps = ([\d.]+)")
    result.transactions = int(processed or 0)
    result.failed = int(number(r"number of failed transactions: (\d+)") or 0)
    result.tps = tps or 0.0
    result.latency_avg_ms = number(r"latency average = ([\d.]+) ms")
    result.connection_avg_ms = number(r"average connection time = ([\d.]+) ms")
    result.initial_connection_ms = number(r"initial connection time = ([\d.]+) ms")
    result.aborted_clients = len(re.findall(r"client \d+ aborted", stderr))
    if processed is None or tps is None or "Run was aborted" in stderr + stdout:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        result.error = tail or "pgbench printed no summary"


def p99_from_logs(prefix: Path) -> float | None:
    """99th percentile latency in ms from pgbench's per-transaction logs; removes the logs."""
    latencies: list[int] = []
    for path in glob.glob(f"{prefix}.*"):
        with open(path) as log:
            for line in log:
                field = line.split(None, 3)[2]
                if field.isdigit():
                    latencies.append(int(field))
        os.unlink(path)
    if not latencies:
        return None
    latencies.sort()
    return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000.0


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")
