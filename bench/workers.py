"""`python -m bench.run --workers 1 2` (or `python -m bench.workers`): pgbench through pyproxy
with each worker count in turn, in one run: TPS, the proxy's CPU (supervisor and workers added
up) and each worker's CPU, for the usual select-only cell and for a proxy-bound one (prepared
selects on a tiny table, many clients)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.environment import BENCH_DB, PG_SETTINGS, _trust_hba
from bench.pgbench import init_pgbench, run_pgbench
from bench.procstat import machine_busy_seconds, process_cpu_seconds
from bench.targets import PyproxyProcess, raise_fd_limit, wait_until
from tests.support.pgcluster import USERS, run_sql, start_postgres


@dataclass(frozen=True)
class Cell:
    label: str
    protocol: str
    clients: int


CELLS = (
    Cell("select-only, simple protocol, 20 clients", "simple", 20),
    Cell("proxy-bound: prepared selects, tiny table, 64 clients", "prepared", 64),
)


def children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return []


def cpu(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        try:
            out.append(process_cpu_seconds(pid))
        except OSError:
            out.append(0.0)
    return out


def log(text: str) -> None:
    print(f"[{datetime.datetime.now():%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def measure(
    workers: list[int], duration: int, pool_size: int
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    user, password = USERS["superuser"]
    results: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    try:
        settings = dict(PG_SETTINGS, hba_file=str(_trust_hba(workdir)))
        pg = start_postgres(settings)
        try:
            run_sql(pg, f"CREATE DATABASE {BENCH_DB}")
            init_pgbench(pg.host, pg.port, user, password, BENCH_DB, 1)  # 100,000 rows: tiny
            for n in workers:
                results += run_workers(workdir, pg, n, duration, pool_size)
            shift = shift_latency(workdir, pg) if max(workers) > 1 else None
        finally:
            pg.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results, shift


def run_workers(workdir: Path, pg: Any, n: int, duration: int, pool_size: int) -> list[Any]:
    """Every cell through one pyproxy with ``n`` workers."""
    user, password = USERS["superuser"]
    proxy = PyproxyProcess(
        workdir, pg.host, pg.port, user, password, pool_size, BENCH_DB, stem=f"pyproxy-w{n}"
    )
    text = proxy.config_path.read_text()
    proxy.config_path.write_text(text.replace("[proxy]\n", f"[proxy]\nworkers = {n}\n"))
    target = proxy.start()
    try:
        # The first worker listening opens the port; wait until every one listens.
        wait_until(
            lambda: n == 1 or f"({n} workers)" in proxy.log_path.read_text(),
            "every worker to listen",
            lambda: proxy.proc is not None and proxy.proc.poll() is None,
        )
        return [run_cell(target, n, cell, duration) for cell in CELLS]
    finally:
        proxy.stop()


async def _direct_logins(dsn: str) -> float:
    """Seconds for three new direct PostgreSQL connections to answer ``select 1``: the part
    of a shift that is PostgreSQL starting backends, whatever pyproxy does."""
    import psycopg

    async def one() -> None:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        await conn.execute("select 1")
        await conn.close()

    started = time.monotonic()
    await asyncio.gather(one(), one(), one())
    return time.monotonic() - started


async def _shift_rounds(dsn: str, direct: str, rounds: int) -> tuple[list[float], list[float]]:
    """Seconds until three clients of one worker all got a server while the other worker held
    the pool's three servers idle, alternating the roles each round."""
    import psycopg

    conns: dict[int, list[Any]] = {0: [], 1: []}
    extra = []
    while min(len(v) for v in conns.values()) < 3 and len(extra) < 200:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        side = conns[conn.info.backend_pid & 0x3F]
        (side if len(side) < 3 else extra).append(conn)
    took: list[float] = []
    logins: list[float] = []
    try:
        for i in range(rounds):
            holder, taker = conns[i % 2], conns[1 - i % 2]
            await asyncio.gather(*(c.execute("select pg_sleep(0.02)") for c in holder))
            await asyncio.sleep(0.3)  # idle for longer than IDLE_GRACE
            started = time.monotonic()
            await asyncio.gather(*(c.execute("select 1") for c in taker))
            took.append(time.monotonic() - started)
            logins.append(await _direct_logins(direct))
    finally:
        for conn in [*conns[0], *conns[1], *extra]:
            await conn.close()
    return took, logins


def shift_latency(workdir: Path, pg: Any, rounds: int = 20) -> dict[str, Any]:
    """How long capacity takes to move: a pool of 3, two workers, one holding all of it idle."""
    user, password = USERS["superuser"]
    proxy = PyproxyProcess(workdir, pg.host, pg.port, user, password, 3, BENCH_DB, stem="shift")
    text = proxy.config_path.read_text()
    proxy.config_path.write_text(text.replace("[proxy]\n", "[proxy]\nworkers = 2\n"))
    target = proxy.start()
    try:
        wait_until(
            lambda: "(2 workers)" in proxy.log_path.read_text(),
            "every worker to listen",
            lambda: proxy.proc is not None and proxy.proc.poll() is None,
        )
        dsn = f"postgresql://{user}@127.0.0.1:{target.port}/{target.dbname('transaction')}"
        direct = f"postgresql://{user}@{pg.host}:{pg.port}/{BENCH_DB}"
        took, logins = asyncio.run(_shift_rounds(dsn, direct, rounds))
    finally:
        proxy.stop()
    ms = sorted(round(t * 1000, 1) for t in took)
    row = {"rounds": rounds, "median_ms": ms[len(ms) // 2], "p90_ms": ms[int(len(ms) * 0.9)]}
    row["max_ms"] = ms[-1]
    row["direct_logins_median_ms"] = sorted(round(t * 1000, 1) for t in logins)[len(logins) // 2]
    log(f"share shift: {row}")
    return row


def run_cell(target: Any, n: int, cell: Cell, duration: int) -> dict[str, Any]:
    assert target.pid
    pids = [target.pid, *children(target.pid)]
    run_pgbench(target, "transaction", cell.protocol, cell.clients, 2, None)  # warm-up
    before = cpu(pids)
    busy = machine_busy_seconds()
    result = run_pgbench(target, "transaction", cell.protocol, cell.clients, duration, None)
    machine = machine_busy_seconds() - busy
    used = [a - b for a, b in zip(cpu(pids), before, strict=True)]
    wall = result.wall_s or duration
    row = {
        "workers": n,
        "cell": cell.label,
        "tps": round(result.tps),
        "proxy_cpu_cores": round(sum(used) / wall, 2),
        "per_worker_cpu_cores": [round(u / wall, 2) for u in used[1:]]
        or [round(used[0] / wall, 2)],
        "supervisor_cpu_cores": round(used[0] / wall, 3) if n > 1 else None,
        "machine_cpu_cores": round(machine / wall, 2),
        "proxy_cpu_us_per_tx": (
            round(sum(used) / result.transactions * 1e6, 1) if result.transactions else None
        ),
        "error": result.error,
    }
    log(f"workers={n} {cell.label}: {row['tps']} tps, proxy {row['proxy_cpu_cores']} cores")
    return row


def markdown(rows: list[dict[str, Any]], shift: dict[str, Any] | None, duration: int) -> str:
    lines = [
        f"pgbench -S -M <protocol> -c <clients> -j 2 -T {duration}, transaction pool of 20; "
        "CPU in cores (CPU seconds / wall seconds)",
        "",
        "| cell | workers | TPS | proxy CPU | µs/tx | per worker | supervisor | machine CPU |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        sup = "" if r["supervisor_cpu_cores"] is None else f"{r['supervisor_cpu_cores']}"
        per = " + ".join(f"{c}" for c in r["per_worker_cpu_cores"])
        lines.append(
            f"| {r['cell']} | {r['workers']} | {r['tps']} | {r['proxy_cpu_cores']} | "
            f"{r['proxy_cpu_us_per_tx']} | {per} | "
            f"{sup} | {r['machine_cpu_cores']} |"
        )
    if shift is not None:
        lines += [
            "",
            f"Share shift (pool of 3, one worker holding it idle, three clients of the other "
            f"asking; {shift['rounds']} rounds): median {shift['median_ms']} ms, "
            f"p90 {shift['p90_ms']} ms, max {shift['max_ms']} ms until all three were served; "
            f"three new direct PostgreSQL connections took {shift['direct_logins_median_ms']} ms "
            "(median) on the machine at the same time.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--duration", type=int, default=10, help="seconds per pgbench run")
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument("--out", type=Path, help="write results.json and results.md here")
    args = parser.parse_args(argv)
    raise_fd_limit()
    rows, shift = measure(args.workers, args.duration, args.pool_size)
    text = markdown(rows, shift, args.duration)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        data = {"runs": rows, "share_shift": shift}
        (args.out / "results.json").write_text(json.dumps(data, indent=2))
        (args.out / "results.md").write_text(text)
    return 0 if not any(r["error"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
