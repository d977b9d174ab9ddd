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
from collections import Counter, deque
from types import FrameType
from typing import Any

import pyproxy
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
