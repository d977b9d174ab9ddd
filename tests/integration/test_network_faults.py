"""pyproxy behind and in front of a fault proxy: bytes that arrive split or late still make
whole answers, and a server connection cut under a client ends in a SQLSTATE, not a hang."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import psycopg
import pytest

from tests.integration.conftest import MakeProxy
from tests.support.extended import ExtendedClient, kinds
from tests.support.faultproxy import FaultProxy
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import (
    SCRAM_PASSWORD,
    SCRAM_USER,
    TRUST_USER,
    RunningProxy,
    pool_entry,
    wait_for_query,
)


@pytest.fixture
async def proxy(make_proxy: MakeProxy) -> RunningProxy:
    return await make_proxy([pool_entry(size=2)], proxy={"auth_type": "scram-sha-256"})


@pytest.fixture
async def front(proxy: RunningProxy) -> AsyncIterator[FaultProxy]:
    """A fault proxy between the clients and pyproxy."""
    async with FaultProxy(proxy.host, proxy.port) as fp:
        yield fp


async def asyncpg_via(fp: FaultProxy, **kwargs: object) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1", port=fp.port, user=SCRAM_USER, password=SCRAM_PASSWORD,
        database="testpool", timeout=30, **kwargs,
    )  # fmt: skip


async def extended_workload(conn: asyncpg.Connection) -> None:
    """Extended-protocol queries only (what asyncpg sends for fetch*): no Query message."""
    assert await conn.fetchval("SELECT 6 * 7") == 42
    assert await conn.fetchval("SELECT $1::int + $2::int", 40, 2) == 42
    assert await conn.fetchval("SELECT current_database()") == APP_DB
    rows = await conn.fetch("SELECT g, repeat('x', g) FROM generate_series(1, 20) g")
    assert [r[0] for r in rows] == list(range(1, 21)) and rows[-1][1] == "x" * 20


async def simple_workload(conn: asyncpg.Connection) -> None:
    """Simple-protocol Query messages: a transaction block and two statements in one string."""
    async with conn.transaction():  # BEGIN and COMMIT go as Query messages
        assert await conn.fetchval("SELECT 1") == 1
    await conn.execute("SELECT 1; SELECT 2")


async def error_within(
    conn: asyncpg.Connection, work: Awaitable[object], seconds: float
) -> asyncpg.PostgresError:
    """The error ``work`` ends with; fails the test if it has no answer within ``seconds``
    (asyncpg's own cancellation would wait for an answer too, so the connection is dropped)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        conn.terminate()
        await asyncio.gather(task, return_exceptions=True)
        pytest.fail(f"no answer within {seconds} s: the client hangs")
    exc = task.exception()
    assert isinstance(exc, asyncpg.PostgresError), repr(exc)
    return exc


# --- client -> fault proxy -> pyproxy -> PostgreSQL -----------------------------------------


async def test_asyncpg_logs_in_and_runs_extended_queries_with_every_byte_its_own_segment(
    front: FaultProxy,
) -> None:
    front.split("to_server", 1)
    conn = await asyncpg_via(front, statement_cache_size=100)
    try:
        await extended_workload(conn)
    finally:
        await conn.close()
    assert front.counters.segments["to_server"] == front.counters.bytes["to_server"]


async def test_asyncpg_simple_queries_with_every_byte_its_own_segment(front: FaultProxy) -> None:
    front.split("to_server", 1)
    conn = await asyncpg_via(front)
    try:
        await simple_workload(conn)
    finally:
        conn.terminate()


async def test_simple_queries_with_every_client_byte_its_own_segment(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(user=TRUST_USER)], proxy={"auth_type": "trust"})
    async with FaultProxy(proxy.host, proxy.port) as fp:
        client = await ExtendedClient.connect("127.0.0.1", fp.port, TRUST_USER, "testpool")
        try:
            fp.split("to_server", 1)
            assert kinds(await client.query("SELECT 1")) == "TDCZ"
        finally:
            await client.wire.close()


async def test_psycopg_works_with_every_client_byte_its_own_segment(front: FaultProxy) -> None:
    front.split("to_server", 1)
    dsn = (
        f"host=127.0.0.1 port={front.port} user={SCRAM_USER} password={SCRAM_PASSWORD} "
        f"dbname=testpool connect_timeout=30"
    )
    async with await psycopg.AsyncConnection.connect(dsn, prepare_threshold=0) as conn:
        cur = await conn.execute("SELECT %s::int * 2, current_user", (21,))
        assert await cur.fetchone() == (42, SCRAM_USER)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_asyncpg_works_with_writes_split_at_random_bytes_both_ways(
    front: FaultProxy, seed: int
) -> None:
    front.split_randomly("both", seed=seed, max_piece=9)
    conn = await asyncpg_via(front, statement_cache_size=100)
    try:
        await extended_workload(conn)
    finally:
        await conn.close()


async def test_asyncpg_works_with_replies_split_and_both_directions_delayed(
    front: FaultProxy,
) -> None:
    front.split("to_client", 3)
    front.delay("both", 0.05)
    conn = await asyncpg_via(front)
    try:
        started = time.monotonic()
        assert await conn.fetchval("SELECT $1::text", "late") == "late"
        assert time.monotonic() - started >= 0.1  # one round trip, delayed each way
        await extended_workload(conn)
        await simple_workload(conn)
    finally:
        await conn.close()


async def test_a_client_stalled_mid_request_does_not_hold_up_the_others(
    front: FaultProxy, proxy: RunningProxy
) -> None:
    stalled = await asyncpg_via(front)
    other = await proxy.asyncpg()
    try:
        front.stall("to_server")
        pending = asyncio.ensure_future(stalled.fetchval("SELECT 'held'"))
        await asyncio.sleep(0.1)
        assert not pending.done()
        for _ in range(5):  # the pool (size 2) still serves other clients
            assert await other.fetchval("SELECT 1") == 1
        front.resume("to_server")
        assert await asyncio.wait_for(pending, 5) == "held"
    finally:
        await stalled.close()
        await other.close()


# --- client -> pyproxy -> fault proxy -> PostgreSQL -----------------------------------------


@pytest.fixture
async def back(pg: PgServer) -> AsyncIterator[FaultProxy]:
    """A fault proxy between pyproxy and PostgreSQL."""
    async with FaultProxy(pg.host, pg.port) as fp:
        yield fp


async def behind(make_proxy: MakeProxy, fp: FaultProxy, **proxy: object) -> RunningProxy:
    """pyproxy whose cluster is reached through ``fp``."""
    return await make_proxy(
        [pool_entry(size=1)], cluster={"host": "127.0.0.1", "port": fp.port}, proxy=proxy
    )


async def test_server_replies_split_at_every_byte_reach_the_client_whole(
    make_proxy: MakeProxy, back: FaultProxy
) -> None:
    proxy = await behind(make_proxy, back)
    back.split("both", 1, pause=0)
    conn = await proxy.asyncpg(statement_cache_size=100)
    try:
        await extended_workload(conn)
        await simple_workload(conn)
    finally:
        await conn.close()
    assert back.counters.segments["to_client"] == back.counters.bytes["to_client"]


async def test_server_connection_reset_under_a_query_gives_an_error_with_a_sqlstate(
    make_proxy: MakeProxy, back: FaultProxy, pg_admin: asyncpg.Connection
) -> None:
    proxy = await behind(make_proxy, back)
    conn = await proxy.asyncpg()
    marker = uuid.uuid4().hex
    try:
        assert await conn.fetchval("SELECT 1") == 1
        sleeper = conn.fetchval(f"SELECT pg_sleep(30) /* {marker} */")
        task = asyncio.ensure_future(error_within(conn, sleeper, 5))
        await wait_for_query(pg_admin, marker)
        assert await back.cut_all() == 1
        assert (await task).sqlstate == "08006"
        # the client goes on, on a new server connection
        assert await conn.fetchval("SELECT 2") == 2
    finally:
        await conn.close()
        # PostgreSQL does not notice the cut while pg_sleep runs: end it for the next tests.
        await pg_admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1",
            f"%{marker}%",
        )


async def test_server_connection_lost_in_the_middle_of_a_message_ends_the_client_not_a_hang(
    make_proxy: MakeProxy, back: FaultProxy
) -> None:
    proxy = await behind(make_proxy, back)
    conn = await proxy.asyncpg()
    try:
        assert await conn.fetchval("SELECT 1") == 1
        await back.cut_all()  # the next server connection is cut 100 kB into a 1 MB DataRow
        back.cut_next(after=100_000, direction="to_client")
        exc = await error_within(conn, conn.fetchval("SELECT repeat('y', 1000000)"), 5)
        assert exc.sqlstate.startswith("08")
    finally:
        conn.terminate()


async def test_server_connection_cut_during_its_login_gives_an_error_not_a_hang(
    make_proxy: MakeProxy, back: FaultProxy
) -> None:
    proxy = await behind(make_proxy, back)
    conn = await proxy.asyncpg()
    try:
        await back.cut_all()
        back.cut_next(after=10, direction="to_client")  # inside the server's first reply
        exc = await error_within(conn, conn.fetchval("SELECT 1"), 5)
        # pyproxy sends FATAL 08001; asyncpg, seeing the connection close, may report 08003
        assert exc.sqlstate in ("08001", "08003"), exc
        assert "server closed the connection during login" in str(exc)
    finally:
        conn.terminate()


async def test_a_server_that_never_answers_its_login_gives_an_error_after_the_timeout(
    make_proxy: MakeProxy, back: FaultProxy
) -> None:
    proxy = await behind(make_proxy, back, server_connect_timeout=0.5)
    back.stall("to_client")
    started = time.monotonic()
    with pytest.raises(asyncpg.PostgresError) as excinfo:
        conn = await proxy.asyncpg()
        try:
            await error_within(conn, conn.fetchval("SELECT 1"), 5)
        finally:
            conn.terminate()
    assert excinfo.value.sqlstate == "08001", excinfo.value
    assert "server_connect_timeout" in str(excinfo.value)
    assert time.monotonic() - started < 5
