"""`python -m bench.run`: pgbench through pyproxy, PgBouncer, a bare relay and directly, with a
report."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.baseline import Baseline, BaselineError, materialise, working_tree
from bench.environment import Environment, environment
from bench.idle_rss import measure_idle_rss
from bench.metrics_cost import COMPANION as METRICS_OFF_COMPANION
from bench.metrics_cost import METRICS_OFF
from bench.metrics_cost import NOTE as METRICS_OFF_NOTE
from bench.pgbench import RunResult, run_pgbench
from bench.plan import (
    FULL,
    QUICK,
    REFERENCES,
    RELAY,
    Companion,
    MatrixSpec,
    Run,
    baseline_companion,
    build_plan,
    session_clients,
)
from bench.report import markdown, summarize, write_all
from bench.sysinfo import machine_info
from bench.targets import POOL_NAMES, pgbouncer_carries_prepared, pgbouncer_version, raise_fd_limit

PROXIES = ("pyproxy", "pgbouncer")
WARMUP_SECONDS = 2
CONNECT_CLIENTS = 10
# pgbench's -T clock includes connecting its clients: give big client counts time to connect.
CONNECT_ALLOWANCE = {1000: 5}


def run_seconds(duration: int, clients: int) -> int:
    return duration + max((s for c, s in CONNECT_ALLOWANCE.items() if clients >= c), default=0)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~3 minute subset of the matrix")
    parser.add_argument("--out", type=Path, help="results directory (default bench/results/<time>)")
    parser.add_argument("--duration", type=int, help="seconds per pgbench run (default 5)")
    parser.add_argument(
        "--repeat",
        type=int,
        help="rounds per cell; the report takes medians over them (quick 1, full 3)",
    )
    parser.add_argument("--idle-clients", type=int, help="idle clients for the RSS test")
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale factor")
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument("--asyncpg", action="store_true", help="run the asyncpg benchmark instead")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        help="compare pyproxy with these worker counts instead (bench.workers): TPS, proxy CPU",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run pyproxy's source at git commit REF, beside this tree's in the same rounds "
        "(transaction mode, simple and extended, 10/50/200 clients)",
    )
    parser.add_argument(
        "--metrics-cost",
        action="store_true",
        help="also run this tree with [proxy] metrics = false beside pyproxy in the same rounds "
        "(transaction mode, simple and extended, 10/50/200 clients): the CPU cost of /metrics",
    )
    args = parser.parse_args(argv)
    if args.baseline and args.asyncpg:
        parser.error("--baseline compares in the pgbench matrix, not with --asyncpg")
    if args.metrics_cost and args.asyncpg:
        parser.error("--metrics-cost compares in the pgbench matrix, not with --asyncpg")
    return args


class Progress:
    """Prints `[i/N] ... elapsed, ETA` lines, estimating from the runs finished so far."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()

    def report(self, text: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        print(
            f"[{self.done}/{self.total}] {text}  (elapsed {_clock(elapsed)}, ETA {_clock(eta)})",
            flush=True,
        )


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def log(text: str) -> None:
    print(f"-- {text}", flush=True)


def describe(result: RunResult) -> str:
    where = result.target + (f"/{result.mode}" if result.mode else "")
    text = f"{where} {result.protocol} c={result.clients}: {result.tps:,.0f} tps"
    if result.proxy_cpu_us_per_tx is not None:
        text += f", proxy {result.proxy_cpu_us_per_tx:.1f} µs/tx"
    if result.failed or result.aborted_clients or result.error:
        text += f", FAILED {result.failed} tx, {result.aborted_clients} clients aborted"
        text += f", {result.error.splitlines()[-1]}" if result.error else ""
    return text


def notes(
    spec: MatrixSpec,
    env: Environment,
    skipped_prepared: bool,
    idle_clients: int,
    baseline: Companion | None = None,
) -> list[str]:
    found = [
        "Targets of one cell run back to back, the first of them rotating from round to "
        "round and cell to cell, so drift of the machine hits all targets alike.",
        "Direct PostgreSQL has no pool mode: it runs once per (protocol, clients) and its "
        "figures are compared with every mode.",
        (
            f"The bare relay (bench/relay.py, {env.relay_event_loop}) is a Python asyncio byte "
            "relay with one PostgreSQL connection per client, no pooling and no protocol "
            "parsing: the floor of pure-Python per-transaction work on this machine, not a "
            "competitor. Like direct it has no pool mode and runs next to direct, only with "
            f"protocols {' and '.join(RELAY.protocols)} and {'/'.join(map(str, RELAY.clients))} "
            "clients."
        )
        if "relay" in env.targets
        else "The bare relay was not available: the floor section is missing.",
        "Client authentication is trust on every target (the benchmark's pg_hba.conf trusts "
        "127.0.0.1), so connection setup compares like with like.",
        "Before measuring, every pool is warmed by a short pgbench run, so its server "
        "connections are open.",
        "Proxy CPU = utime+stime of the proxy process (/proc/<pid>/stat) from just before "
        "pgbench starts to just after it exits, connection setup included, divided by the "
        "transactions. Machine CPU = busy time of all cores (/proc/stat) over the same window.",
        "p99 latency comes from pgbench's per-transaction log (--log).",
        "pgbench's -T clock includes connecting its clients, so runs with 1000 clients get "
        f"{CONNECT_ALLOWANCE[1000]} s more; TPS excludes the initial connection time.",
        f"Idle RSS: {idle_clients} clients complete the startup handshake with the "
        "transaction-mode pool and stay idle; bytes per client = growth of the proxy's VmRSS "
        "divided by the clients. It is measured before the pgbench matrix, right after warm-up.",
    ]
    if "session" in spec.modes:
        counts = ", ".join(map(str, session_clients(spec)))
        found.append(
            f"Session mode runs only with clients <= pool size ({counts}): a session-mode client "
            "holds a server for its whole connection, and pgbench connects all clients before it "
            "starts, so clients beyond the pool would wait until the run is over."
        )
    if skipped_prepared:
        found.append(
            "PgBouncer before 1.21 cannot carry protocol-level prepared statements in transaction "
            "or statement mode, so those cells have no PgBouncer run (-M prepared)."
        )
    if "pgbouncer" not in env.targets:
        found.append("PgBouncer was not available: its columns are empty.")
    if baseline is not None:
        found.append(
            f"{baseline.name} is pyproxy's source at the baseline commit (git archive into a "
            "temporary directory, the only pyproxy on its PYTHONPATH), with the same config on "
            f"its own port. It runs in {'/'.join(baseline.modes)} mode, protocols "
            f"{' and '.join(baseline.protocols)}, {'/'.join(map(str, baseline.clients))} "
            "clients, right beside pyproxy in each round: the two take one place in the "
            "rotation, and which of them goes first changes from round to round and cell to "
            "cell. It has no idle RSS or connection-setup figures."
        )
    return found


def warm_up(
    env: Environment, modes: tuple[str, ...], pool_size: int, companions: tuple[Companion, ...]
) -> None:
    own = {c.name: tuple(m for m in modes if m in c.modes) for c in companions}
    for name, target in env.targets.items():
        for mode in own.get(name, modes if name in PROXIES else (None,)):
            result = run_pgbench(target, mode, "simple", pool_size, WARMUP_SECONDS, None)
            if result.error or result.failed:
                env.errors.append(f"warm-up of {name}/{mode} failed: {result.error}")
            log(f"warm-up {describe(result)}")


def idle_rss(env: Environment, count: int) -> list[dict[str, Any]]:
    rows = []
    for name in PROXIES:
        target = env.targets.get(name)
        if target is None or target.pid is None:
            continue
        log(f"idle RSS: opening {count} clients to {name}")
        found = measure_idle_rss(
            name,
            target.pid,
            target.host,
            target.port,
            target.user,
            POOL_NAMES["transaction"],
            count,
        )
        per = found.bytes_per_client
        log(
            f"idle RSS {name}: {per:,.0f} B per client"
            if per
            else f"idle RSS {name}: {found.error}"
        )
        rows.append(found.to_dict())
    return rows


def connection_rate(env: Environment, duration: int) -> list[dict[str, Any]]:
    rows = []
    for name in ("direct", *PROXIES):
        target = env.targets.get(name)
        if target is None:
            continue
        mode = None if name == "direct" else "transaction"
        result = run_pgbench(
            target, mode, "simple", CONNECT_CLIENTS, duration, None, connect_each=True
        )
        log(f"pgbench -C {describe(result)}")
        rows.append(result.to_dict())
    return rows


def run_matrix(
    env: Environment, plan: list[Run], duration: int, log_dir: Path
) -> list[dict[str, Any]]:
    progress = Progress(len(plan))
    rows = []
    for run in plan:
        target = env.targets.get(run.target)
        if target is None:
            progress.report(f"{run.target} unavailable, skipped")
            continue
        seconds = run_seconds(duration, run.clients)
        result = run_pgbench(target, run.mode, run.protocol, run.clients, seconds, log_dir)
        rows.append(result.to_dict() | {"round": run.round})
        progress.report(f"round {run.round + 1}: {describe(result)}")
    return rows


def benchmark(
    args: argparse.Namespace, argv: list[str], baseline: Baseline | None = None
) -> dict[str, Any]:
    spec = QUICK if args.quick else FULL
    spec = MatrixSpec(spec.modes, spec.protocols, spec.clients, spec.extra_cells, args.pool_size)
    duration = args.duration or 5
    repeat = max(1, args.repeat or (1 if args.quick else 3))
    idle_clients = args.idle_clients or (2000 if args.quick else 10000)
    started_wall, started = datetime.datetime.now().astimezone(), time.monotonic()
    skip_prepared = not pgbouncer_carries_prepared(pgbouncer_version())
    skip = (
        {("pgbouncer", m, "prepared") for m in ("transaction", "statement")}
        if skip_prepared
        else set()
    )
    with environment(
        args.scale, args.pool_size, log, baseline=baseline, metrics_off=args.metrics_cost
    ) as env:
        base_companions = tuple(
            baseline_companion(b.name) for b in (baseline,) if b and b.name in env.targets
        )
        metrics_off = METRICS_OFF in env.targets
        companions = base_companions + ((METRICS_OFF_COMPANION,) if metrics_off else ())
        results: dict[str, Any] = {
            "kind": "quick" if args.quick else "full",
            "command": " ".join(["python -m bench.run", *argv]),
            "started": started_wall.isoformat(timespec="seconds"),
            "machine": machine_info(env.postgres_version),
            "pyproxy_event_loop": env.pyproxy_event_loop,
            "relay_event_loop": env.relay_event_loop,
            "settings": {
                "duration_s": duration,
                "repeat": repeat,
                "scale": args.scale,
                "pool_size": args.pool_size,
                "threads": 2,
                "idle_clients": idle_clients,
                "client_auth": "trust",
            },
            "notes": notes(
                spec,
                env,
                skip_prepared and "prepared" in spec.protocols,
                idle_clients,
                base_companions[0] if base_companions else None,
            )
            + ([METRICS_OFF_NOTE] if metrics_off else []),
            "pyproxy_source": {
                "describe": working_tree(),
                "module": _module(env, "pyproxy"),
            },
        }
        if baseline is not None:
            results["baseline"] = baseline.describe() | {"module": _module(env, baseline.name)}
        warm_up(env, spec.modes, args.pool_size, companions)
        results["idle_rss"] = idle_rss(env, idle_clients)
        results["connection_rate"] = connection_rate(env, max(4, duration // 2))
        proxies = tuple(p for p in PROXIES if p in env.targets)
        references = tuple(r for r in REFERENCES if r.name in env.targets)
        plan = build_plan(spec, proxies, skip, repeat, references, companions)
        log(f"matrix: {len(plan)} pgbench runs of {duration} s ({repeat} rounds per cell)")
        with tempfile.TemporaryDirectory(prefix="bench-logs-") as log_dir:
            results["runs"] = run_matrix(env, plan, duration, Path(log_dir))
        results["errors"] = env.errors
    results["elapsed_s"] = time.monotonic() - started
    return results


def _module(env: Environment, name: str) -> str | None:
    target = env.targets.get(name)
    return str(target.module) if target is not None and target.module else None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    raise_fd_limit()
    if args.workers:
        from bench.workers import main as workers_main

        extra = ["--out", str(args.out)] if args.out else []
        extra += ["--duration", str(args.duration)] if args.duration else []
        return workers_main(["--workers", *map(str, args.workers), *extra])
    if args.asyncpg:
        from bench.asyncpg_bench import main as asyncpg_main

        return asyncpg_main(args, argv)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = args.out or Path(__file__).parent / "results" / stamp
    with contextlib.ExitStack() as stack:
        try:
            baseline = stack.enter_context(materialise(args.baseline)) if args.baseline else None
        except BaselineError as exc:
            print(exc, file=sys.stderr)
            return 2
        if baseline is not None:
            log(f"baseline: {baseline.ref} = {baseline.commit}, its pyproxy in {baseline.source}")
        results = benchmark(args, argv, baseline)
    charted = write_all(results, out_dir)
    text = markdown(results)
    print("\n" + text[text.index("## Acceptance") :])
    print(f"results: {out_dir}/results.md, results.json" + (", results.png" if charted else ""))
    ok = not results["errors"] and all(
        row["pyproxy_failed"] == 0 and not row["baseline_failed"]
        for row in summarize(results["runs"])
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
