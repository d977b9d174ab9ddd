"""`python -m bench.hotpath`: the per-transaction Python cost of pyproxy's data path, no sockets.

Real pyproxy objects (pool, client and server protocols) are driven with fake transports through
`pgbench -S`-shaped transactions: a client request goes in, the server's reply comes back, and
the pool keeps, passes on or queues; the fake servers answer each request as PostgreSQL would.
It prints microseconds and Python bytecode instructions per transaction for the simple, extended
and prepared protocols and two situations of a pool of 20, in transaction and in statement mode:

- ``kept``: 10 clients, so nobody waits and each client keeps its server between transactions;
- ``queued``: 200 clients, so every finished transaction hands the server to a queued client.

Instruction counts are exact and repeatable, unlike timings on a shared machine: use them to see
whether a change to the hot path adds or removes work. This complements `bench.run`, which
measures the real thing (sockets, kernel, PostgreSQL) against PgBouncer.

With ``--metrics-cost`` it measures every case twice, with ``[proxy] metrics`` on and off
(alternating batches, the fastest of each), and prints the difference: what the per-transaction
figures of /metrics cost on the data path.

With ``--baseline REF`` it also measures pyproxy's source at git commit REF, with this harness,
in a child process whose PYTHONPATH puts that source first, and prints both side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pyproxy
from bench.baseline import (
    REPO_ROOT,
    Baseline,
    BaselineError,
    child_env,
    has_file,
    materialise,
    working_tree,
)
from pyproxy.net.client import ClientConn
from pyproxy.proto import messages as m
from tests.support.fakes import message, transactions, world

SITUATIONS = {"kept": 10, "queued": 200}
MODES = ("transaction", "statement")
SQL = b"SELECT abalance FROM pgbench_accounts WHERE aid = "
# A Bind's body after the portal and statement names: no format codes, one parameter, 12345.
_BIND_BODY = b"\x00\x00\x00\x01\x00\x00\x00\x0512345\x00\x00"
_EXECUTE = message(b"D", b"P\x00") + message(b"E", b"\x00\x00\x00\x00\x00") + message(b"S", b"")
# (a client's first request, the request of every later transaction), as pgbench -M sends them.
PROTOCOLS: dict[str, tuple[bytes, bytes]] = {
    "simple": (m.query((SQL + b"12345;").decode()),) * 2,
    "extended": (
        message(b"P", b"\x00" + SQL + b"$1;\x00\x00\x00")
        + message(b"B", b"\x00\x00" + _BIND_BODY)
        + _EXECUTE,
    )
    * 2,
    "prepared": (
        message(b"P", b"P0_1\x00" + SQL + b"$1;\x00\x00\x00")
        + message(b"B", b"\x00P0_1\x00" + _BIND_BODY)
        + _EXECUTE,
        message(b"B", b"\x00P0_1\x00" + _BIND_BODY) + _EXECUTE,
    ),
}
_PYPROXY_DIR = os.path.dirname(pyproxy.__file__)


def start_clients(clients: list[ClientConn], protocol: str) -> bytes:
    """Every client sends its first request; returns the request of later transactions."""
    first, request = PROTOCOLS[protocol]
    for client in clients:
        client.data_received(first)
    return request


def measure(
    situation: str, protocol: str, count: int, mode: str = "transaction", metrics: bool = True
) -> tuple[float, float]:
    """(µs, bytecode instructions) per transaction; ``metrics``: [proxy] metrics."""
    servers, clients = world(SITUATIONS[situation], mode, metrics)
    request = start_clients(clients, protocol)
    transactions(servers, request, 1000)  # warm up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        transactions(servers, request, count)
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6, count_instructions(servers, request)


def count_instructions(servers: list[Any], request: bytes) -> float:
    """Bytecode instructions of pyproxy's code per transaction, over 1000 transactions."""
    instructions: Counter[str] = Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode" and frame.f_code.co_filename.startswith(_PYPROXY_DIR):
            instructions[frame.f_code.co_qualname] += 1
        return trace

    sys.settrace(trace)
    try:
        transactions(servers, request, 1000)
    finally:
        sys.settrace(None)
    return sum(instructions.values()) / 1000


BATCH = 2000  # transactions per timed batch of --metrics-cost


def measure_on_off(
    situation: str, protocol: str, count: int, mode: str
) -> tuple[float, float, float, float]:
    """(µs on, µs off, instructions on, instructions off) per transaction, [proxy] metrics on
    and off. The two worlds run alternately in batches of BATCH transactions and each keeps
    its fastest batch, so that a busy machine slows both alike and rarely both minima."""
    worlds = []
    for metrics in (True, False):
        servers, clients = world(SITUATIONS[situation], mode, metrics)
        request = start_clients(clients, protocol)
        transactions(servers, request, 1000)  # warm up
        worlds.append((servers, request))
    best = [float("inf")] * 2
    for _ in range(max(10, count // BATCH)):
        for i, (servers, request) in enumerate(worlds):
            started = time.perf_counter()
            transactions(servers, request, BATCH)
            best[i] = min(best[i], time.perf_counter() - started)
    on, off = (count_instructions(servers, request) for servers, request in worlds)
    return best[0] / BATCH * 1e6, best[1] / BATCH * 1e6, on, off


Row = dict[str, Any]


def measure_each(count: int, keep_going: bool = False) -> Iterator[Row]:
    """Every (mode, situation, protocol): µs and instructions per transaction. With
    `keep_going`, a measurement that fails gives a row with its `error` instead of raising.
    Call it with an event loop running: pyproxy's objects need one."""
    for mode in MODES:
        for situation in SITUATIONS:
            for protocol in PROTOCOLS:
                row: Row = {"mode": mode, "situation": situation, "protocol": protocol}
                try:
                    row["us"], row["instructions"] = measure(situation, protocol, count, mode)
                except Exception as exc:
                    if not keep_going:
                        raise
                    row["error"] = f"{type(exc).__name__}: {exc}"
                yield row


async def _measure_all(count: int, keep_going: bool = False) -> list[Row]:
    return list(measure_each(count, keep_going))


async def _print_table(count: int) -> None:
    print(f"{'mode':12} {'situation':10} {'protocol':9} {'µs/tx':>7} {'instructions/tx':>16}")
    for r in measure_each(count):
        print(
            f"{r['mode']:12} {r['situation']:10} {r['protocol']:9} "
            f"{r['us']:7.2f} {r['instructions']:16.0f}",
            flush=True,
        )


class BaselineUnmeasurable(RuntimeError):
    """The baseline's pyproxy cannot be driven by this harness (it lacks what it uses)."""


def measure_baseline(baseline: Baseline, count: int) -> tuple[Path, list[Row]]:
    """Run this harness in a child on `baseline`'s pyproxy: (its package dir, its rows).

    The child's cwd is the baseline's directory and its PYTHONPATH that directory, then this
    tree (for `bench` only: `pyproxy` is found first in the baseline's directory).
    """
    argv = [sys.executable, "-m", "bench.hotpath", "--json", "--transactions", str(count)]
    proc = subprocess.run(
        argv,
        cwd=baseline.source,
        env=child_env(baseline.source, REPO_ROOT),
        capture_output=True,
        text=True,
    )
    found = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    errors = {r.get("error") for r in found["rows"]} if found else set()
    if found is None or None not in errors:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        own = (
            f"measure both commits with that commit's own harness (git show "
            f"{baseline.short}:bench/hotpath.py)"
            if has_file(baseline.commit, "bench/hotpath.py")
            else "that commit has no bench/hotpath.py of its own"
        )
        raise BaselineUnmeasurable(
            f"the baseline {baseline.name} ({baseline.commit}) lacks something this "
            f"bench.hotpath needs: {min(errors - {None}) if found else last}\nThe harness "
            "drives pyproxy's internals (ClientConn, ServerConn, PoolRegistry, ProxyState); for a "
            f"commit older than what it drives, {own}"
        )
    module = Path(found["pyproxy"]).resolve().parent
    if module != baseline.package.resolve():
        raise BaselineUnmeasurable(
            f"the baseline's child imported pyproxy from {module}, not from {baseline.package}"
        )
    return module, found["rows"]


def _print_side_by_side(new: list[Row], base: list[Row], name: str) -> None:
    head = f"{'mode':12} {'situation':10} {'protocol':9}"
    print(
        f"{head} {'µs/tx':>7} {'µs/tx':>7} {'instructions/tx':>16} {'instructions/tx':>16}"
        f" {'new-base':>9} {'new/base':>8}"
    )
    print(f"{'':33} {'base':>7} {'new':>7} {name:>16} {'this tree':>16}")
    for n, b in zip(new, base, strict=True):
        where = f"{n['mode']:12} {n['situation']:10} {n['protocol']:9}"
        if "error" in b:
            print(f"{where} {'-':>7} {n['us']:7.2f} {'-':>16} {n['instructions']:16.0f}")
            print(f"{'':33} baseline: {b['error']}")
            continue
        diff = n["instructions"] - b["instructions"]
        print(
            f"{where} {b['us']:7.2f} {n['us']:7.2f} {b['instructions']:16.0f} "
            f"{n['instructions']:16.0f} {diff:+9.0f} {n['instructions'] / b['instructions']:8.3f}"
        )


async def _print_metrics_cost(count: int) -> None:
    """Each case with [proxy] metrics on and off (``measure_on_off``), and the difference."""
    print(
        f"{'mode':12} {'situation':10} {'protocol':9} {'µs on':>7} {'µs off':>7} {'µs diff':>7}"
        f" {'instr on':>9} {'instr off':>9} {'instr diff':>10}"
    )
    for mode in MODES:
        for situation in SITUATIONS:
            for protocol in PROTOCOLS:
                us_on, us_off, on, off = measure_on_off(situation, protocol, count, mode)
                print(
                    f"{mode:12} {situation:10} {protocol:9} {us_on:7.2f} {us_off:7.2f} "
                    f"{us_on - us_off:+7.2f} {on:9.0f} {off:9.0f} {on - off:+10.0f}",
                    flush=True,
                )


def measure_with_own_harness(ref: str, count: int) -> tuple[Path, list[Row]]:
    """The baseline measured by its own bench.hotpath (its pyproxy, bench and tests), for a
    commit whose internals this tree's harness no longer drives."""
    with materialise(ref, paths=("pyproxy", "bench", "tests")) as own:
        argv = [sys.executable, "-m", "bench.hotpath", "--transactions", str(count)]
        proc = subprocess.run(
            argv, cwd=own.source, env=child_env(own.source), capture_output=True, text=True
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BaselineUnmeasurable(f"its own bench.hotpath failed too: {last}")
        rows = []
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[0] in MODES:
                mode, situation, protocol, us, instructions = parts
                rows.append(
                    {
                        "mode": mode,
                        "situation": situation,
                        "protocol": protocol,
                        "us": float(us),
                        "instructions": float(instructions),
                    }
                )
        return own.package, rows


def compare(ref: str, count: int) -> int:
    """Measure the baseline at `ref` (in a child), then this tree; print both side by side."""
    try:
        with materialise(ref) as baseline:
            print(f"baseline {baseline.name}: commit {baseline.commit}", flush=True)
            try:
                module, base = measure_baseline(baseline, count)
            except BaselineUnmeasurable as exc:
                if not has_file(baseline.commit, "bench/hotpath.py"):
                    print(f"\n{exc}\n\nthis tree alone ({working_tree()}):", flush=True)
                    asyncio.run(_print_table(count))
                    return 1
                print("  this harness cannot drive it: measured by its own bench.hotpath")
                module, base = measure_with_own_harness(ref, count)
    except BaselineError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"  its pyproxy: {module}")
    print(f"this tree: {working_tree()}, pyproxy in {_PYPROXY_DIR}\n", flush=True)
    new = asyncio.run(_measure_all(count))
    _print_side_by_side(new, base, baseline.name)
    if any("error" in b for b in base):
        print("\nthe baseline could not run every measurement of this harness (see above)")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument(
        "--baseline", metavar="REF", help="also measure pyproxy at git commit REF, side by side"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the figures and pyproxy's path as JSON"
    )
    parser.add_argument(
        "--metrics-cost",
        action="store_true",
        help="measure with [proxy] metrics on and off, side by side",
    )
    args = parser.parse_args(argv)
    if args.metrics_cost:
        asyncio.run(_print_metrics_cost(args.transactions))
        return 0
    if args.baseline:
        return compare(args.baseline, args.transactions)
    if args.json:
        rows = asyncio.run(_measure_all(args.transactions, keep_going=True))
        print(json.dumps({"pyproxy": pyproxy.__file__, "rows": rows}))
        return 0
    asyncio.run(_print_table(args.transactions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
