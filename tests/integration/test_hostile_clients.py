"""Generated hostile byte streams from logged-in clients never reach well-behaved clients of the
same pool: they see zero errors, and pyproxy's event loop sees no exception."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import MakeProxy
from tests.support.extended import bind, close, describe, execute, flush, parse, sync
from tests.support.proxy import TRUST_USER, RunningProxy, pool_entry
from tests.support.wire import query, startup_message, typed

EXAMPLES = int(os.environ.get("PYPROXY_FUZZ_EXAMPLES", "300"))
GOOD_CLIENTS = 10

SQL = (
    "SELECT 1",
    "SELECT pg_sleep(0.01)",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SELECT 1/0",
    "not sql at all",
    "",
    "SELECT 1; SELECT 2",
    "BEGIN; SELECT 1",
    "COPY (SELECT 1) TO STDOUT",
    "CREATE TEMP TABLE IF NOT EXISTS fuzz_t (x int)",
    "COPY fuzz_t FROM STDIN",
    "SELECT repeat('x', 100000)",
)


def _message() -> st.SearchStrategy[bytes]:
    names = st.sampled_from(["", "s1", "s2", "PYPROXY_1"])
    well_formed = st.one_of(
        st.sampled_from(SQL).map(query),
        st.builds(parse, names, st.sampled_from(SQL)),
        st.builds(lambda p, s: bind(p, s, []), st.sampled_from(["", "p1"]), names),
        st.builds(describe, st.sampled_from(["S", "P", "X"]), names),
        st.builds(execute, st.sampled_from(["", "p1"]), st.integers(0, 3)),
        st.builds(close, st.sampled_from(["S", "P"]), names),
        st.just(sync()),
        st.just(flush()),
        st.binary(max_size=40).map(lambda b: typed("d", b)),
        st.just(typed("c", b"")),
        st.just(typed("f", b"fuzz\x00")),
        st.just(typed("F", b"\x00\x00\x00\x01")),
    )
    any_type = st.builds(
        lambda t, body: bytes([t]) + struct.pack("!I", len(body) + 4) + body,
        st.integers(0, 255),
        st.binary(max_size=24),
    )
    bad_length = st.builds(
        lambda t, n, body: bytes([t]) + struct.pack("!I", n) + body,
        st.sampled_from(b"QPBESDd"),
        st.one_of(st.integers(0, 3), st.integers(2**24, 2**32 - 1)),
        st.binary(max_size=8),
    )
    return st.one_of(well_formed, well_formed, any_type, bad_length, st.binary(max_size=16))


STREAMS = st.tuples(
    st.lists(_message(), min_size=1, max_size=8).map(b"".join),
    st.lists(st.integers(1, 64), max_size=6),  # cut points between writes
    st.booleans(),  # wait for some answer before leaving
)


def _hostile_session(port: int, stream: bytes, cuts: list[int], linger: bool) -> None:
    """Log in, send ``stream`` in pieces, maybe read a little, leave (blocking sockets: this
    runs in a thread while the proxy runs in the test's event loop)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(startup_message({"user": TRUST_USER, "database": "testpool"}))
        seen = b""
        while not seen.endswith(b"Z\x00\x00\x00\x05I"):
            chunk = sock.recv(65536)
            assert chunk, f"login failed: {seen!r}"
            seen += chunk
        pos = 0
        try:
            for cut in cuts:
                if pos >= len(stream):
                    break
                sock.sendall(stream[pos : pos + cut])
                pos += cut
                time.sleep(0.001)
            sock.sendall(stream[pos:])
            if linger:
                sock.settimeout(0.05)
                sock.recv(65536)
        except OSError:
            pass  # pyproxy (or PostgreSQL) ended the connection: that is allowed


async def _well_behaved(proxy: RunningProxy, stop: asyncio.Event, served: list[int]) -> list:
    conn = await proxy.asyncpg(user=TRUST_USER, statement_cache_size=100)
    errors: list[BaseException] = []
    i = 0
    try:
        while not stop.is_set():
            i += 1
            try:
                assert await conn.fetchval("SELECT $1::int", i) == i
                served.append(i)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, AssertionError) as exc:
                errors.append(exc)
                if isinstance(exc, asyncpg.InterfaceError):
                    break
    finally:
        await conn.close()
    return errors


@pytest.mark.timeout(600)
async def test_hostile_streams_never_reach_well_behaved_clients(
    make_proxy: MakeProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy(
        [pool_entry(size=3, query_wait_timeout=60)], proxy={"auth_type": "trust"}
    )
    stop = asyncio.Event()
    served: list[int] = []
    good = [asyncio.ensure_future(_well_behaved(proxy, stop, served)) for _ in range(GOOD_CLIENTS)]
    sessions = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(STREAMS)
    def hostile(case: tuple[bytes, list[int], bool]) -> None:
        nonlocal sessions
        _hostile_session(proxy.port, *case)
        sessions += 1

    caplog.set_level(logging.ERROR, logger="asyncio")
    try:
        await asyncio.to_thread(hostile)
    finally:
        stop.set()
        results = await asyncio.gather(*good)
    assert sessions >= EXAMPLES
    assert len(served) > GOOD_CLIENTS
    assert [e for errors in results for e in errors] == []
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
