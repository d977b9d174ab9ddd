"""The benchmark's bare relay (bench.relay): real clients log in and query through it, each on
its own backend, either side closing closes the other, and SIGTERM stops it."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import asyncpg
import psycopg
import pytest

from tests.support.listening_child import listening_child
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import SCRAM_PASSWORD, SCRAM_USER

Relay = tuple[asyncio.subprocess.Process, int]


@pytest.fixture
async def relay(pg: PgServer) -> AsyncIterator[Relay]:
    """``python -m bench.relay`` in front of the test PostgreSQL; yields the process and port."""
    async with listening_child(
        "-m", "bench.relay", "--listen-port", "0", "--pg-host", pg.host, "--pg-port", str(pg.port)
    ) as (proc, port):  # fmt: skip
        yield proc, port


async def _connect(port: int) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1", port=port, user=SCRAM_USER, password=SCRAM_PASSWORD,
        database=APP_DB, timeout=10,
    )  # fmt: skip


async def _backend_gone(admin: asyncpg.Connection, pid: int) -> bool:
    for _ in range(200):
        if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_clients_log_in_and_query_through_the_relay_on_their_own_backends(
    relay: Relay, pg_admin: asyncpg.Connection
) -> None:
    _proc, port = relay
    first, second = await _connect(port), await _connect(port)
    try:
        assert await first.fetchval("SELECT 6 * 7") == 42
        assert await first.fetchval("SELECT $1::int + $2::int", 40, 2) == 42
        assert await first.fetchval("SELECT current_database()") == APP_DB
        # a reply far bigger than a socket buffer arrives whole
        rows = await first.fetch("SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g")
        assert len(rows) == 50000 and rows[-1][0] == 50000
        big = "y" * 3_000_000
        assert await first.fetchval("SELECT length($1::text)", big) == len(big)
        pids = {await first.fetchval("SELECT pg_backend_pid()")}
        pids.add(await second.fetchval("SELECT pg_backend_pid()"))
        assert len(pids) == 2
        # a session setting stays on its own backend: there is no pooling
        await first.execute("SET application_name = 'relay-first'")
        assert await first.fetchval("SHOW application_name") == "relay-first"
        assert await second.fetchval("SHOW application_name") != "relay-first"
    finally:
        await first.close()
        await second.close()


async def test_libpq_clients_work_through_the_relay(relay: Relay) -> None:
    _proc, port = relay
    dsn = (
        f"host=127.0.0.1 port={port} user={SCRAM_USER} password={SCRAM_PASSWORD} "
        f"dbname={APP_DB} connect_timeout=10"
    )
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT %s::int * 2, current_user", (21,))
        assert await cur.fetchone() == (42, SCRAM_USER)


async def test_a_client_closing_ends_its_backend(
    relay: Relay, pg_admin: asyncpg.Connection
) -> None:
    _proc, port = relay
    conn = await _connect(port)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    await conn.close()
    assert await _backend_gone(pg_admin, pid)


async def test_a_backend_ending_closes_its_client(
    relay: Relay, pg_admin: asyncpg.Connection
) -> None:
    _proc, port = relay
    conn = await _connect(port)
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        assert await pg_admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        for _ in range(200):  # the relay closes the client's socket: asyncpg sees it closed
            if conn.is_closed():
                break
            await asyncio.sleep(0.05)
        assert conn.is_closed()
    finally:
        conn.terminate()
    # the relay itself still serves new clients
    other = await _connect(port)
    assert await other.fetchval("SELECT 1") == 1
    await other.close()


async def test_sigterm_stops_the_relay_and_closes_its_connections(
    relay: Relay, pg_admin: asyncpg.Connection
) -> None:
    proc, port = relay
    conn = await _connect(port)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    try:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert await _backend_gone(pg_admin, pid)
        with pytest.raises((OSError, asyncpg.PostgresError, asyncio.TimeoutError)):
            late = await _connect(port)
            await late.close()
    finally:
        conn.terminate()
    assert proc.stderr is not None
    assert b"Traceback" not in await proc.stderr.read()
