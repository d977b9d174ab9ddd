"""`python -m bench.isolation`: pyproxy's isolation guarantees at full scale, black-box.

It starts a throwaway PostgreSQL and, for each check, a `pyproxy serve` child with the pools the
check needs, runs the check's clients against it within a time bound, and reports the figures:
cancel storm, session-mode aborts, hostile inputs, split points, kill loop, admin API under
slow-header clients. It writes isolation.md and isolation.json under bench/results/ and exits 1
if any check failed (a requirement not met, the time bound exceeded, a crash), 2 if it could not
run at all.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.idle_rss import run_async
from bench.isolation_aborts import session_aborts
from bench.isolation_checks import (
    admin_slow_headers,
    cancel_storm,
    hostile_inputs,
    kill_loop,
    split_points,
)
from bench.isolation_report import CheckResult, exit_code, summary_line, write_report
from bench.isolation_world import World
from bench.sysinfo import machine_info
from bench.targets import REPO_ROOT, raise_fd_limit
from tests.support.pgcluster import run_sql, start_postgres

POSTGRES_GONE = (
    "PostgreSQL stopped or could not be reached after this check (not something pyproxy "
    "can do: another process stopped it or removed its directory); the figures are void"
)
Runner = Callable[[World, CheckResult, argparse.Namespace], Awaitable[None]]


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    run: Runner
    time_bound: Callable[[argparse.Namespace], float]  # seconds, from the sizes asked for


CHECKS = (
    Check(
        "cancel-storm",
        "cancels never reach a bystander",
        lambda w, r, a: cancel_storm(w, r, a.storm_rounds, a.storm_seconds, a.storm_clients),
        lambda a: 120 + 3 * a.storm_rounds * a.storm_seconds,
    ),
    Check(
        "session-aborts",
        "a session-mode client that ends badly leaves no state on its server",
        lambda w, r, a: session_aborts(w, r, a.aborts, a.seed),
        lambda a: 120 + 0.5 * a.aborts,
    ),
    Check(
        "hostile-inputs",
        "hostile byte streams never reach well-behaved clients",
        lambda w, r, a: hostile_inputs(w, r, a.hostile, a.seed),
        lambda a: 120 + 0.2 * a.hostile,
    ),
    Check(
        "split-points",
        "a pipeline split at any byte gets its replies in every mode",
        lambda w, r, a: split_points(w, r, a.random_splits, a.seed),
        lambda a: 180 + 0.05 * a.random_splits,
    ),
    Check(
        "kill-loop",
        "queries survive backends killed every 50 ms",
        lambda w, r, a: kill_loop(w, r, a.kill_seconds),
        lambda a: 120 + 2 * a.kill_seconds,
    ),
    Check(
        "admin-slow-headers",
        "the admin API answers while slow-header connections are open",
        lambda w, r, a: admin_slow_headers(r, a.admin_slow, a.admin_seconds),
        lambda a: 120 + 2 * a.admin_seconds,
    ),
)
NAMES = tuple(c.name for c in CHECKS)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.isolation", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help=f"run only these checks (repeatable): {', '.join(NAMES)}",
    )
    add = parser.add_argument
    add("--storm-rounds", type=int, default=5, help="cancel storm rounds (5)")
    add("--storm-seconds", type=float, default=5.0, help="seconds per cancel storm round (5)")
    add("--storm-clients", type=int, default=20, help="sleepers, and as many bystanders (20)")
    add("--aborts", type=int, default=2000, help="session-mode aborts (2000)")
    add("--hostile", type=int, default=5000, help="generated hostile inputs (5000)")
    add("--random-splits", type=int, default=1000, help="random 3-way splits per mode (1000)")
    add("--kill-seconds", type=float, default=30.0, help="seconds of the kill loop (30)")
    add("--admin-slow", type=int, default=200, help="slow-header connections (200)")
    add("--admin-seconds", type=float, default=30.0, help="seconds of admin calls (30)")
    add("--seed", type=int, default=1, help="seed of every random choice (1)")
    add("--out", type=Path, help="results directory (bench/results/isolation-<time>)")
    args = parser.parse_args(argv)
    only = [name.strip() for item in args.only for name in item.split(",") if name.strip()]
    unknown = sorted(set(only) - set(NAMES))
    if unknown:
        parser.error(f"unknown check {', '.join(unknown)}; the checks are {', '.join(NAMES)}")
    args.only = [name for name in NAMES if name in only] or list(NAMES)
    return args


async def run_check(check: Check, world: World, args: argparse.Namespace) -> CheckResult:
    """Run one check within its time bound; a timeout or crash is recorded, not raised."""
    bound = check.time_bound(args)
    result = CheckResult(check.name, check.title, bound)
    started = time.monotonic()
    try:
        async with asyncio.timeout(bound):
            await check.run(world, result, args)
    except TimeoutError:
        result.error = f"did not finish within its time bound of {bound:.0f} s"
    except Exception as exc:  # a crashed check is a failed check; the others still run
        frames = traceback.format_exception(exc)
        result.error = f"{type(exc).__name__}: {exc}"
        result.note("crash: " + " | ".join(line.strip() for line in frames[-6:]), limit=20)
    result.elapsed_s = time.monotonic() - started
    return result


async def run_all(world: World, args: argparse.Namespace, say: Callable[[str], None]) -> list:
    results = []
    postgres_gone = False
    for check in CHECKS:
        if check.name not in args.only:
            continue
        if postgres_gone:  # every check after it would fail for a reason not pyproxy's
            result = CheckResult(check.name, check.title, check.time_bound(args))
            result.error = "not run: PostgreSQL stopped during an earlier check"
            results.append(result)
            say(f"{check.name}: not run")
            continue
        say(f"-- {check.name}: {check.title} (time bound {check.time_bound(args):.0f} s)")
        result = await run_check(check, world, args)
        results.append(result)
        if not await world.postgres_alive():
            postgres_gone = True
            result.note(POSTGRES_GONE, limit=20)
        say(summary_line(result))
        for line in result.failures():
            say(f"   {line}")
        for note in result.notes:
            say(f"   saw: {note}")
    return results


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty", "--abbrev=7"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
    except OSError:
        return None
    return out.stdout.strip() or None


def run(args: argparse.Namespace, argv: list[str], say: Callable[[str], None]) -> int:
    raise_fd_limit()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = args.out or REPO_ROOT / "bench" / "results" / f"isolation-{stamp}"
    started_wall, started = datetime.datetime.now().astimezone(), time.monotonic()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    say("-- starting PostgreSQL")
    pg = start_postgres()
    try:
        version = run_sql(pg, "SHOW server_version").strip()
        say(f"-- PostgreSQL {version} on port {pg.port}")
        results = run_async(run_all(World(pg, workdir), args, say))
    finally:
        try:
            pg.close()
        except OSError as exc:  # its directory is gone (see POSTGRES_GONE): report anyway
            say(f"-- stopping PostgreSQL failed: {exc}")
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "kind": "isolation",
        "command": " ".join(["python -m bench.isolation", *argv]),
        "commit": _commit(),
        "started": started_wall.isoformat(timespec="seconds"),
        "elapsed_s": time.monotonic() - started,
        "machine": machine_info(version),
        "load_average": {"start": load_before, "end": os.getloadavg()},  # the machine is shared
    }
    md_path, json_path = write_report(report, results, out_dir)
    code = exit_code(results)
    verdict = "every check passed" if code == 0 else "a check FAILED"
    say(f"{verdict}; report: {md_path} and {json_path}")
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        return run(args, argv, lambda text: print(text, flush=True))
    except RuntimeError as exc:  # PostgreSQL could not be started, and the like
        print(f"bench.isolation: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
