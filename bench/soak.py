"""`python -m bench.soak`: pyproxy for minutes under steady load with thousands of idle clients,
watching its memory, open files and latency for growth.

It starts a throwaway PostgreSQL (pgbench data, scale 1) and pyproxy with a transaction pool,
logs in the idle clients (raw startup, then silence), connects the active clients (asyncpg), and
runs the workload for --duration seconds. Every --interval seconds it samples pyproxy's RSS and
open file descriptors and the active clients' p50/p99 latency, throughput and errors over the
interval; at the end it says whether RSS, fds and p99 stayed flat (bench.soak_report.Rule) and
writes soak.md and soak.json under bench/results/. Everything runs on 127.0.0.1 and ends by
itself.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench.environment import Environment, environment
from bench.idle_rss import open_clients, run_async
from bench.procstat import process_cpu_seconds, process_open_fds, process_rss_bytes
from bench.soak_report import (
    Rule,
    Sample,
    Verdict,
    check_line,
    flatness,
    percentile,
    write_report,
)
from bench.sysinfo import machine_info
from bench.targets import POOL_NAMES, Target

SCALE = 1
ROWS = 100_000 * SCALE  # pgbench_accounts rows
WORKLOADS = {
    "pgbench": "SELECT abalance FROM pgbench_accounts WHERE aid = $1",  # pgbench -S
    "select1": "SELECT 1",
}
FD_MARGIN = 200  # files the load generator needs besides its client sockets
LOGIN_CONCURRENCY = 200
QUERY_TIMEOUT = 30.0
CONNECT_TIMEOUT = 60.0
RETRY_PAUSE = 0.5
SETUP_ALLOWANCE = 300.0  # seconds allowed for logging the clients in and shutting down
MAX_ERROR_TEXTS = 5


class SoakError(RuntimeError):
    """The soak cannot run as asked (the message says why and what to change)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--duration", type=float, default=300, help="seconds of load (300)")
    parser.add_argument("--idle", type=int, default=5000, help="idle logged-in clients (5000)")
    parser.add_argument("--active", type=int, default=100, help="clients running queries (100)")
    parser.add_argument("--pool-size", type=int, default=20, help="transaction pool size (20)")
    parser.add_argument("--interval", type=float, default=30, help="seconds between samples (30)")
    parser.add_argument(
        "--warmup", type=float, help="seconds of load before the baseline sample (= --interval)"
    )
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="pgbench")
    parser.add_argument("--out", type=Path, help="results directory (bench/results/soak-<time>)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.interval <= 0 or args.idle < 0 or args.active < 1:
        parser.error("--duration and --interval must be positive, --active at least 1")
    if args.warmup is None:
        args.warmup = min(args.interval, args.duration / 2)
    return args


def ensure_fd_limit(needed: int) -> int:
    """Raise this process's open-file soft limit to ``needed`` (the hard limit allowing); the
    limit in force. SoakError when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SoakError(
            f"the soak needs {needed} open files but the hard limit (ulimit -Hn) is {hard}: "
            f"raise it (as root `ulimit -Hn {needed}`, LimitNOFILE= for a systemd unit, nofile "
            "in /etc/security/limits.conf) or run with fewer --idle clients"
        )
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (ValueError, OSError) as exc:
        raise SoakError(f"could not raise the open-file limit to {needed}: {exc}") from exc
    return needed


class ActiveClients:
    """asyncpg connections that each run the workload in a loop, recording every query's
    latency and every error; ``take()`` hands over what was recorded since the last call."""

    def __init__(self, target: Target, dbname: str, workload: str) -> None:
        self.options: dict[str, Any] = {
            "host": target.host,
            "port": target.port,
            "user": target.user,
            "password": target.password,
            "database": dbname,
            "timeout": CONNECT_TIMEOUT,
        }
        self.sql = WORKLOADS[workload]
        self.takes_aid = "$1" in self.sql
        self.conns: list[asyncpg.Connection] = []
        self.latencies: list[float] = []
        self.errors = 0
        self.total_errors = 0
        self.error_texts: list[str] = []
        self.stopping = False

    async def connect(self, count: int) -> None:
        found = await asyncio.gather(
            *(self._connect() for _ in range(count)), return_exceptions=True
        )
        self.conns = [c for c in found if isinstance(c, asyncpg.Connection)]
        failed = [f"{type(e).__name__}: {e}" for e in found if isinstance(e, BaseException)]
        if failed:
            raise SoakError(
                f"{len(failed)} of {count} active clients could not connect: {failed[0]}"
            )

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(**self.options)

    def take(self) -> tuple[list[float], int]:
        latencies, errors = self.latencies, self.errors
        self.latencies, self.errors = [], 0
        return latencies, errors

    async def run(self) -> None:
        await asyncio.gather(*(self._worker(i) for i in range(len(self.conns))))

    async def close(self) -> None:
        await asyncio.gather(*(c.close(timeout=5) for c in self.conns), return_exceptions=True)

    def _error(self, exc: BaseException) -> None:
        self.errors += 1
        self.total_errors += 1
        text = f"{type(exc).__name__}: {exc}".strip()
        if len(self.error_texts) < MAX_ERROR_TEXTS and text not in self.error_texts:
            self.error_texts.append(text)

    async def _worker(self, index: int) -> None:
        perf = time.perf_counter
        while not self.stopping:
            conn = self.conns[index]
            args = (random.randint(1, ROWS),) if self.takes_aid else ()
            started = perf()
            try:
                await conn.fetchval(self.sql, *args, timeout=QUERY_TIMEOUT)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                if self.stopping:
                    return
                self._error(exc)
                await self._recover(index)
                continue
            self.latencies.append(perf() - started)

    async def _recover(self, index: int) -> None:
        """After an error: reconnect if the connection is gone; pause either way."""
        await asyncio.sleep(RETRY_PAUSE)
        if not self.conns[index].is_closed() or self.stopping:
            return
        try:
            self.conns[index] = await self._connect()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            self._error(exc)


def _alive(transports: list[asyncio.BaseTransport]) -> int:
    return sum(not t.is_closing() for t in transports)


class Sampler:
    """Reads pyproxy's counters and the clients' records into Samples, printing each."""

    def __init__(
        self,
        pid: int,
        idle: list[asyncio.BaseTransport],
        load: ActiveClients,
        say: Callable[[str], None],
    ) -> None:
        self.pid, self.idle, self.load, self.say = pid, idle, load, say
        self.samples: list[Sample] = []
        self.started = self.last = time.monotonic()
        self.cpu = process_cpu_seconds(pid)

    def start(self) -> Sample:
        """The sample before the load: t = 0."""
        self.started = self.last = time.monotonic()
        self.cpu = process_cpu_seconds(self.pid)
        sample = Sample(
            0.0, process_rss_bytes(self.pid), process_open_fds(self.pid), _alive(self.idle)
        )
        return self._keep(sample)

    def sample(self) -> Sample:
        now, cpu = time.monotonic(), process_cpu_seconds(self.pid)
        latencies, errors = self.load.take()
        sample = Sample(
            t_s=now - self.started,
            rss_bytes=process_rss_bytes(self.pid),
            open_fds=process_open_fds(self.pid),
            idle_alive=_alive(self.idle),
            queries=len(latencies),
            errors=errors,
            interval_s=now - self.last,
            p50_ms=_ms(percentile(latencies, 50)),
            p99_ms=_ms(percentile(latencies, 99)),
            proxy_cpu_s=cpu - self.cpu,
        )
        self.last, self.cpu = now, cpu
        return self._keep(sample)

    def _keep(self, s: Sample) -> Sample:
        self.samples.append(s)
        p50 = "-" if s.p50_ms is None else f"{s.p50_ms:.2f} ms"
        p99 = "-" if s.p99_ms is None else f"{s.p99_ms:.2f} ms"
        self.say(
            f"t={s.t_s:5.0f} s  RSS {s.rss_bytes / 2**20:7.1f} MiB  fds {s.open_fds:5}  "
            f"idle {s.idle_alive:5}  {s.qps:8,.0f} q/s  p50 {p50}  p99 {p99}  "
            f"errors {s.errors}  pyproxy CPU {s.proxy_cpu_pct:3.0f} %"
        )
        return s


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


async def soak(
    args: argparse.Namespace, target: Target, say: Callable[[str], None]
) -> tuple[list[Sample], dict[str, Any]]:
    """Log the clients in, run the load, sample; the samples and the error counts."""
    assert target.pid is not None
    dbname = POOL_NAMES["transaction"]
    started = time.monotonic()
    idle, login_errors = await open_clients(
        target.host, target.port, target.user, dbname, args.idle, LOGIN_CONCURRENCY
    )
    say(f"{len(idle)} idle clients logged in ({time.monotonic() - started:.1f} s)")
    load = ActiveClients(target, dbname, args.workload)
    dropped = 0
    try:
        await load.connect(args.active)
        say(f"{args.active} active clients connected; load for {args.duration:g} s")
        sampler = Sampler(target.pid, idle, load, say)
        sampler.start()
        workers = asyncio.ensure_future(load.run())
        intervals = max(1, round(args.duration / args.interval))
        for k in range(1, intervals + 1):
            due = sampler.started + min(k * args.interval, args.duration)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if workers.done():  # a worker crashed: stop here, the error says why
                workers.result()
            sampler.sample()
        dropped = len(idle) - _alive(idle)  # before this side closes them
        load.stopping = True
        done, _ = await asyncio.wait({workers}, timeout=QUERY_TIMEOUT + 5)
        if not done:
            workers.cancel()
            await asyncio.gather(workers, return_exceptions=True)
    finally:
        load.stopping = True
        await load.close()
        for transport in idle:
            transport.abort()
    errors = {
        "total": load.total_errors,
        "idle_dropped": dropped,
        "idle_login_failed": args.idle - len(idle),
        "first": load.error_texts + login_errors[:MAX_ERROR_TEXTS],
    }
    return sampler.samples, errors


def run(args: argparse.Namespace, argv: list[str], say: Callable[[str], None]) -> int:
    needed = args.idle + args.active + FD_MARGIN
    ensure_fd_limit(needed)  # pyproxy's child process raises its own limit to the hard limit
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = args.out or Path(__file__).parent / "results" / f"soak-{stamp}"
    started_wall, started = datetime.datetime.now().astimezone(), time.monotonic()
    rule = Rule(warmup_s=args.warmup)

    def log(text: str) -> None:
        say(f"-- {text}")

    with environment(SCALE, args.pool_size, log, with_pgbouncer=False, with_relay=False) as env:
        target = _pyproxy(env)
        limit = SETUP_ALLOWANCE + args.duration

        async def bounded() -> tuple[list[Sample], dict[str, Any]]:
            try:
                async with asyncio.timeout(limit):
                    return await soak(args, target, say)
            except TimeoutError:
                raise SoakError(f"the soak did not finish within {limit:g} s") from None

        samples, errors = run_async(bounded())
        report: dict[str, Any] = {
            "kind": "soak",
            "command": " ".join(["python -m bench.soak", *argv]),
            "started": started_wall.isoformat(timespec="seconds"),
            "machine": machine_info(env.postgres_version),
            "pyproxy_event_loop": env.pyproxy_event_loop,
            "settings": {
                "duration_s": args.duration,
                "interval_s": args.interval,
                "idle_clients": args.idle,
                "active_clients": args.active,
                "pool_size": args.pool_size,
                "pool_mode": "transaction",
                "workload": f"{args.workload}: {WORKLOADS[args.workload]}",
                "client_auth": "trust",
            },
            "errors": errors,
        }
    verdict = flatness(samples, rule)
    report["elapsed_s"] = time.monotonic() - started
    md_path, json_path = write_report(report, samples, verdict, out_dir)
    _summary(samples, verdict, errors, say)
    say(f"report: {md_path} and {json_path}")
    clean = not errors["total"] and not errors["idle_dropped"] and not errors["idle_login_failed"]
    return 0 if verdict.flat and clean else 1


def _pyproxy(env: Environment) -> Target:
    target = env.targets.get("pyproxy")
    if target is None or target.pid is None:
        raise SoakError("pyproxy did not start: " + "; ".join(env.errors))
    return target


def _summary(
    samples: list[Sample], verdict: Verdict, errors: dict[str, Any], say: Callable[[str], None]
) -> None:
    word = {True: "stayed flat", False: "did NOT stay flat", None: "unknown (too few samples)"}
    say(f"RSS, fds and p99 {word[verdict.flat]}; rule: {verdict.rule.describe()}")
    for check in verdict.checks:
        say("  " + check_line(check))
    queries = sum(s.queries for s in samples)
    say(
        f"{queries:,} queries, {errors['total']} errors, {errors['idle_dropped']} idle clients "
        f"dropped, {errors['idle_login_failed']} idle logins failed"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        return run(args, argv, lambda text: print(text, flush=True))
    except SoakError as exc:
        print(f"bench.soak: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
