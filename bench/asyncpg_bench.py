"""asyncpg with default settings through a pyproxy transaction pool against direct PostgreSQL.

Run as `python -m bench.run --asyncpg [--quick] [--duration S] [--out DIR]`. asyncpg's statement
cache gives every query a named prepared statement, which a transaction pool must carry across
server connections by rewriting Parse/Bind/Close. A session pool passes them through untouched, so
pyproxy's CPU per transaction in transaction mode minus that in session mode is what the rewriting
(plus transaction pooling) costs. One connection per pool slot keeps session mode from queueing.
Runs with `statement_cache_size=0` (unnamed statements, one more round trip per query in asyncpg)
are shown for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.environment import BENCH_DB, environment
from bench.idle_rss import run_async
from bench.procstat import machine_busy_seconds, process_cpu_seconds
from bench.sysinfo import machine_info
from bench.targets import POOL_NAMES, Target

SELECT_SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
BRANCH_SQL = "SELECT bbalance FROM pgbench_branches WHERE bid = $1"
WORKLOADS = ("select", "transaction")
# (target, pool mode, statement_cache_size); asyncpg's default cache size is 100.
CONFIGS = (
    ("direct", None, 100),
    ("pyproxy", "transaction", 100),
    ("pyproxy", "session", 100),
    ("pyproxy", "transaction", 0),
)


@dataclass
class AsyncpgRun:
    target: str
    mode: str | None
    workload: str  # select: one query; transaction: BEGIN, two queries, COMMIT
    statement_cache_size: int
    connections: int
    seconds: float
    transactions: int = 0
    errors: int = 0
    first_error: str | None = None
    proxy_cpu_s: float | None = None
    machine_cpu_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tps"] = self.transactions / self.seconds if self.seconds else 0.0
        data["proxy_cpu_us_per_tx"] = (
            self.proxy_cpu_s / self.transactions * 1e6
            if self.proxy_cpu_s is not None and self.transactions
            else None
        )
        data["machine_cpu_us_per_tx"] = (
            self.machine_cpu_s / self.transactions * 1e6 if self.transactions else None
        )
        return data


async def _unit(conn: asyncpg.Connection, workload: str, rows: int, branches: int) -> None:
    aid = random.randint(1, rows)
    if workload == "select":
        await conn.fetchrow(SELECT_SQL, aid)
        return
    async with conn.transaction():
        await conn.fetchrow(SELECT_SQL, aid)
        await conn.fetchval(BRANCH_SQL, random.randint(1, branches))


async def _load(
    target: Target,
    mode: str | None,
    workload: str,
    cache_size: int,
    connections: int,
    seconds: int,
    scale: int,
) -> AsyncpgRun:
    options = {
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "password": target.password,
        "database": target.dbname(mode),
        "statement_cache_size": cache_size,
    }
    conns = [await asyncpg.connect(**options) for _ in range(connections)]
    run = AsyncpgRun(target.name, mode, workload, cache_size, connections, float(seconds))

    async def worker(index: int) -> None:
        while time.monotonic() < deadline:
            try:
                await _unit(conns[index], workload, scale * 100000, scale)
                run.transactions += 1
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                run.errors += 1
                run.first_error = run.first_error or f"{type(exc).__name__}: {exc}"
                if conns[index].is_closed():
                    conns[index] = await asyncpg.connect(**options)

    cpu_before = process_cpu_seconds(target.pid) if target.pid else None
    busy_before, started = machine_busy_seconds(), time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(worker(i) for i in range(connections)))
    run.seconds = time.monotonic() - started
    run.machine_cpu_s = machine_busy_seconds() - busy_before
    if cpu_before is not None and target.pid:
        run.proxy_cpu_s = process_cpu_seconds(target.pid) - cpu_before
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return run


def _markdown(results: dict[str, Any]) -> str:
    header = [
        "target",
        "mode",
        "workload",
        "statement cache",
        "connections",
        "TPS",
        "errors",
        "pyproxy CPU µs/tx",
        "machine CPU µs/tx",
        "vs direct TPS",
    ]
    lines = [
        "# asyncpg with default settings through pyproxy and direct",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {results['machine']['nproc']} CPUs, {results['machine']['cpu_model']}; "
        f"PostgreSQL {results['machine']['postgresql']}; asyncpg {asyncpg.__version__}; "
        f"pyproxy event loop {results['pyproxy_event_loop']}",
        "",
        f"{results['connections']} asyncpg connections in one uvloop process, "
        f"{results['duration_s']} s per run, pool size {results['pool_size']}. select = one "
        "parameterised query; transaction = BEGIN, two parameterised queries, COMMIT.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    direct = {r["workload"]: r["tps"] for r in results["runs"] if r["target"] == "direct"}
    for r in results["runs"]:
        cpu = r["proxy_cpu_us_per_tx"]
        versus = r["tps"] / direct[r["workload"]] if direct.get(r["workload"]) else None
        cells = [
            r["target"],
            r["mode"] or "-",
            r["workload"],
            str(r["statement_cache_size"]),
            str(r["connections"]),
            f"{r['tps']:,.0f}",
            str(r["errors"]) + (f" ({r['first_error']})" if r["errors"] else ""),
            "-" if cpu is None else f"{cpu:.1f}",
            "-" if r["machine_cpu_us_per_tx"] is None else f"{r['machine_cpu_us_per_tx']:.1f}",
            "-" if versus is None else f"{versus:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for workload, extra in rewriting_cost(results["runs"]).items():
        text = (
            "not measured" if extra is None else f"{extra:+.1f} µs of pyproxy CPU per transaction"
        )
        lines.append(
            f"- {workload}: transaction mode against session mode (named statements "
            f"rewritten against passed through): {text}"
        )
    return "\n".join(lines) + "\n"


def rewriting_cost(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """pyproxy CPU per transaction, transaction pool minus session pool, asyncpg's default cache."""

    def cpu(workload: str, mode: str) -> float | None:
        for r in runs:
            key = (r["target"], r["mode"], r["workload"], r["statement_cache_size"])
            if key == ("pyproxy", mode, workload, 100):
                return r["proxy_cpu_us_per_tx"]
        return None

    found: dict[str, float | None] = {}
    for workload in WORKLOADS:
        tx, session = cpu(workload, "transaction"), cpu(workload, "session")
        found[workload] = tx - session if tx is not None and session is not None else None
    return found


def main(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the asyncpg comparison and write asyncpg.json and asyncpg.md."""
    seconds = args.duration or (8 if args.quick else 20)
    connections = args.pool_size
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir: Path = args.out or Path(__file__).parent / "results" / f"{stamp}-asyncpg"
    runs: list[dict[str, Any]] = []
    with environment(
        args.scale, args.pool_size, lambda t: print(f"-- {t}", flush=True), with_pgbouncer=False
    ) as env:
        results: dict[str, Any] = {
            "command": " ".join(["python -m bench.run", *argv]),
            "machine": machine_info(env.postgres_version),
            "pyproxy_event_loop": env.pyproxy_event_loop,
            "duration_s": seconds,
            "connections": connections,
            "pool_size": args.pool_size,
            "database": BENCH_DB,
            "pool": POOL_NAMES["transaction"],
            "errors": env.errors,
        }
        for workload in WORKLOADS:
            for name, mode, cache_size in CONFIGS:
                if name not in env.targets:
                    continue
                found = run_async(
                    _load(
                        env.targets[name],
                        mode,
                        workload,
                        cache_size,
                        connections,
                        seconds,
                        args.scale,
                    )
                )
                row = found.to_dict()
                runs.append(row)
                print(
                    f"{name}/{mode} {workload} cache={cache_size}: {row['tps']:,.0f} tps, "
                    f"{found.errors} errors",
                    flush=True,
                )
    results["runs"] = runs
    results["rewriting_cost_us_per_tx"] = rewriting_cost(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "asyncpg.json").write_text(json.dumps(results, indent=2) + "\n")
    text = _markdown(results)
    (out_dir / "asyncpg.md").write_text(text)
    print("\n" + text + f"\nresults: {out_dir}/asyncpg.md, asyncpg.json")
    return 0 if not env.errors and all(r["errors"] == 0 for r in runs) else 1
