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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from types import FrameType
from typing import Any

import pyproxy
from pyproxy.net.client import ClientConn
from pyproxy.proto import messages as m
from tests.support.fakes import POOL_SIZE, message, transactions, world

__all__ = ["MODES", "POOL_SIZE", "PROTOCOLS", "SITUATIONS", "measure", "start_clients"]

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
    situation: str, protocol: str, count: int, mode: str = "transaction"
) -> tuple[float, float]:
    """(µs, bytecode instructions) per transaction."""
    servers, clients = world(SITUATIONS[situation], mode)
    request = start_clients(clients, protocol)
    transactions(servers, request, 1000)  # warm up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        transactions(servers, request, count)
        best = min(best, time.perf_counter() - started)
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
    return best / count * 1e6, sum(instructions.values()) / 1000


async def _main(count: int) -> None:
    print(f"{'mode':12} {'situation':10} {'protocol':9} {'µs/tx':>7} {'instructions/tx':>16}")
    for mode in MODES:
        for situation in SITUATIONS:
            for protocol in PROTOCOLS:
                micros, instructions = measure(situation, protocol, count, mode)
                print(f"{mode:12} {situation:10} {protocol:9} {micros:7.2f} {instructions:16.0f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--transactions", type=int, default=100_000)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.transactions))


if __name__ == "__main__":
    main()
