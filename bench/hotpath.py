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
from collections import Counter, deque
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
from pyproxy.config import parse_config
from pyproxy.net.client import READY, ClientConn
from pyproxy.net.server import IDLE, ServerConn
from pyproxy.net.state import ProxyState
from pyproxy.pool.manager import PoolManager
from pyproxy.proto import messages as m

POOL_SIZE = 20
SITUATIONS = {"kept": 10, "queued": 200}
MODES = ("transaction", "statement")


def _msg(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


SQL = b"SELECT abalance FROM pgbench_accounts WHERE aid = "
ROW_DESCRIPTION = _msg(
    b"T",
    b"\x00\x01abalance\x00"  # one column: name, table oid, column number
    b"\x00\x00\x40\x00\x00\x03"
    b"\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00",  # int4, size 4, typmod -1, text
)
ROWS = _msg(b"D", b"\x00\x01\x00\x00\x00\x041234") + _msg(b"C", b"SELECT 1\x00")
# What PostgreSQL answers to each request message (by type), for a one-row SELECT.
ANSWERS = {
    ord("Q"): ROW_DESCRIPTION + ROWS + m.READY_IDLE,
    ord("P"): _msg(b"1", b""),
    ord("B"): _msg(b"2", b""),
    ord("D"): ROW_DESCRIPTION,
    ord("E"): ROWS,
    ord("S"): m.READY_IDLE,
    ord("C"): _msg(b"3", b""),
}
# A Bind's body after the portal and statement names: no format codes, one parameter, 12345.
_BIND_BODY = b"\x00\x00\x00\x01\x00\x00\x00\x0512345\x00\x00"
_EXECUTE = _msg(b"D", b"P\x00") + _msg(b"E", b"\x00\x00\x00\x00\x00") + _msg(b"S", b"")
# (a client's first request, the request of every later transaction), as pgbench -M sends them.
PROTOCOLS: dict[str, tuple[bytes, bytes]] = {
    "simple": (m.query((SQL + b"12345;").decode()),) * 2,
    "extended": (
        _msg(b"P", b"\x00" + SQL + b"$1;\x00\x00\x00")
        + _msg(b"B", b"\x00\x00" + _BIND_BODY)
        + _EXECUTE,
    )
    * 2,
    "prepared": (
        _msg(b"P", b"P0_1\x00" + SQL + b"$1;\x00\x00\x00")
        + _msg(b"B", b"\x00P0_1\x00" + _BIND_BODY)
        + _EXECUTE,
        _msg(b"B", b"\x00P0_1\x00" + _BIND_BODY) + _EXECUTE,
    ),
}
_PYPROXY_DIR = os.path.dirname(pyproxy.__file__)


class _Transport:
    """Accepts writes and flow-control calls; sends nothing anywhere."""

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5432) if name == "peername" else None

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


_REPLIES: dict[bytes, bytes] = {}  # by request: the few distinct requests answered once


class _Backend(_Transport):
    """A server's transport: each write is answered as PostgreSQL would, message by message;
    ``answer()`` gives the reply to the oldest request not yet answered."""

    def __init__(self) -> None:
        self.replies: deque[bytes] = deque()
        self.last = b""  # the last request written

    def write(self, data: bytes) -> None:
        self.last = data
        reply = _REPLIES.get(data)
        if reply is None:
            out = []
            off = 0
            while off < len(data):
                out.append(ANSWERS[data[off]])
                off += 1 + int.from_bytes(data[off + 1 : off + 5], "big")
            reply = _REPLIES[data] = b"".join(out)
        self.replies.append(reply)

    def answer(self) -> bytes:
        return self.replies.popleft()


def _world(clients: int, mode: str = "transaction") -> tuple[list[ServerConn], list[ClientConn]]:
    cfg = parse_config(
        {
            "proxy": {"listen": "127.0.0.1:0", "auth_type": "trust", "query_wait_timeout": 120},
            "admin": {"enabled": False},
            "clusters": [
                {
                    "id": "00000000-0000-4000-8000-000000000001",
                    "max_connections": 100,
                    "users": [{"name": "app", "password": "secret"}],
                    "pools": [
                        {
                            "name": "bench_tx",
                            "db": "app",
                            "user": "app",
                            "size": POOL_SIZE,
                            "mode": mode,
                        }
                    ],
                }
            ],
        }
    )

    async def no_connect(pool: Any) -> Any:
        raise RuntimeError("the hot-path benchmark opens no connections")

    manager = PoolManager(cfg, no_connect)
    state = ProxyState(cfg, manager)
    pool = manager.get_pool("bench_tx", "app")
    assert pool is not None
    pool.welcome = {}
    servers = []
    for _ in range(POOL_SIZE):
        server = ServerConn(pool, max_packet=1 << 20, tracked=state.tracked)
        server.transport = _Backend()  # type: ignore[assignment]
        server.state = IDLE
        server._login.cancel()
        pool.idle.append(server)
        servers.append(server)
    conns = []
    for _ in range(clients):
        client = ClientConn(state)
        client.connection_made(_Transport())  # type: ignore[arg-type]
        client.pool = pool
        client.mode = pool.mode
        client.statement_mode = pool.mode == "statement"
        client.track = client.inspect = True
        client.params = {}
        client.state = READY
        conns.append(client)
    return servers, conns


def _start(clients: list[ClientConn], protocol: str) -> bytes:
    """Every client sends its first request; returns the request of later transactions."""
    first, request = PROTOCOLS[protocol]
    for client in clients:
        client.data_received(first)
    return request


def _transactions(servers: list[ServerConn], request: bytes, count: int) -> None:
    """Complete ``count`` transactions, round robin over the servers."""
    done = 0
    i = 0
    while done < count:
        server = servers[i % len(servers)]
        i += 1
        client = server.client
        if client is None:
            continue
        if server.held:  # kept between transactions: its client starts the next one
            client.data_received(request)
            continue
        server.data_received(server.transport.answer())  # type: ignore[union-attr]
        client.data_received(request)
        done += 1


def measure(
    situation: str, protocol: str, count: int, mode: str = "transaction"
) -> tuple[float, float]:
    """(µs, bytecode instructions) per transaction."""
    servers, clients = _world(SITUATIONS[situation], mode)
    request = _start(clients, protocol)
    _transactions(servers, request, 1000)  # warm up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        _transactions(servers, request, count)
        best = min(best, time.perf_counter() - started)
    instructions: Counter[str] = Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode" and frame.f_code.co_filename.startswith(_PYPROXY_DIR):
            instructions[frame.f_code.co_qualname] += 1
        return trace

    sys.settrace(trace)
    try:
        _transactions(servers, request, 1000)
    finally:
        sys.settrace(None)
    return best / count * 1e6, sum(instructions.values()) / 1000


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
            "drives pyproxy's internals (ClientConn, ServerConn, PoolManager, ProxyState); for a "
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


def compare(ref: str, count: int) -> int:
    """Measure the baseline at `ref` (in a child), then this tree; print both side by side."""
    try:
        with materialise(ref) as baseline:
            print(f"baseline {baseline.name}: commit {baseline.commit}", flush=True)
            try:
                module, base = measure_baseline(baseline, count)
            except BaselineUnmeasurable as exc:
                print(f"\n{exc}\n\nthis tree alone ({working_tree()}):", flush=True)
                asyncio.run(_print_table(count))
                return 1
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
    args = parser.parse_args(argv)
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
