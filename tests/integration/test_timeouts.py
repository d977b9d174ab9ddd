"""Timeouts: each fires with its own error, only when it should, set globally or per pool."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator

import asyncpg
import psycopg
import pytest

from tests.support.pgcluster import PgServer
from tests.support.proxy import (
    DEFAULT_POOL,
    SCRAM_PASSWORD,
    SCRAM_USER,
    backends,
    pool_entry,
    running_proxy,
    wait_backends,
)
from tests.support.proxy import (
    superuser_conn as admin_conn,
)
from tests.support.wire import WireClient, error_fields, query

BOUND = 3.0  # seconds within which a timeout set to a fraction of a second must have fired


async def test_query_wait_timeout_notices_then_fails_the_queued_client(pg: PgServer) -> None:
    pool = pool_entry(size=1, query_wait_timeout=0.6, query_wait_notify=0.2)
    async with running_proxy(pg, [pool]) as proxy:
        holder = await proxy.asyncpg()
        waiter = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        notices: list[str] = []
        waiter.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        tx = holder.transaction()
        await tx.start()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as info:
            await waiter.execute("SELECT 1")
        waited = time.monotonic() - started
        assert info.value.sqlstate == "57P03"
        assert "query_wait_timeout" in str(info.value)
        assert 0.5 <= waited < BOUND
        assert any("No server connection available" in n for n in notices), notices
        await tx.rollback()
        await holder.close()
        await waiter.close()


async def test_query_wait_timeout_spares_a_client_served_in_time(pg: PgServer) -> None:
    pool = pool_entry(size=1, query_wait_timeout=1.0, query_wait_notify=0)
    async with running_proxy(pg, [pool]) as proxy:
        holder = await proxy.asyncpg()
        waiter = await proxy.asyncpg()
        tx = holder.transaction()
        await tx.start()
        query = asyncio.ensure_future(waiter.fetchval("SELECT 7"))
        await asyncio.sleep(0.3)
        await tx.commit()
        assert await query == 7
        await holder.close()
        await waiter.close()


async def test_client_login_timeout_ends_a_client_that_never_logs_in(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry()], proxy={"client_login_timeout": 0.3}) as proxy:
        loop = asyncio.get_running_loop()
        silent = socket.create_connection((proxy.host, proxy.port))
        half = socket.create_connection((proxy.host, proxy.port))
        try:
            body = b"user\x00" + SCRAM_USER.encode() + b"\x00database\x00testpool\x00\x00"
            half.sendall(struct.pack("!II", 8 + len(body), 196608) + body)
            for sock in (silent, half):
                sock.setblocking(False)
                started = time.monotonic()
                got = b""
                while True:
                    chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), BOUND)
                    if not chunk:
                        break
                    got += chunk
                assert time.monotonic() - started < BOUND
                assert b"client_login_timeout" in got
        finally:
            silent.close()
            half.close()
        conn = await proxy.asyncpg()
        await asyncio.sleep(0.5)
        assert await conn.fetchval("SELECT 1") == 1, "a logged-in client is not affected"
        await conn.close()


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[int]:
    """A TCP port that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for w in held:
            w.close()
        server.close()


async def test_server_connect_timeout_reports_a_server_that_never_answers(pg: PgServer) -> None:
    async with (
        black_hole() as port,
        running_proxy(
            pg,
            [pool_entry(server_connect_timeout=0.3)],
            cluster={"port": port},
        ) as proxy,
    ):
        started = time.monotonic()
        with pytest.raises(asyncpg.PostgresError) as info:
            await proxy.asyncpg()
        assert time.monotonic() - started < BOUND
        assert info.value.sqlstate == "08001"
        assert "server_connect_timeout" in str(info.value)


async def test_idle_transaction_timeout_ends_an_idle_transaction_only(pg: PgServer) -> None:
    pool = pool_entry(size=1, idle_transaction_timeout=0.4)
    async with running_proxy(pg, [pool]) as proxy:
        admin = await admin_conn(pg)
        busy = await psycopg.AsyncConnection.connect(proxy.dsn())
        await busy.execute("SELECT pg_sleep(0.9)")
        await busy.execute("SELECT 2")
        await busy.commit()
        idle = await psycopg.AsyncConnection.connect(proxy.dsn())
        await idle.execute("CREATE TEMP TABLE left_behind (x int)")
        await asyncio.sleep(0.8)
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout) as info:
            await idle.execute("SELECT 1")
        assert info.value.sqlstate == "25P03"
        assert "idle_transaction_timeout" in str(info.value)
        await wait_backends(admin, SCRAM_USER, states=["idle in transaction"], timeout=BOUND)
        cur = await busy.execute("SELECT count(*) FROM pg_tables WHERE tablename = 'left_behind'")
        assert await cur.fetchone() == (0,)
        await busy.close()
        await admin.close()


async def test_query_timeout_kills_a_long_query_and_its_backend_work(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=2, query_timeout=0.4)]) as proxy:
        admin = await admin_conn(pg)
        conn = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        await conn.execute("SELECT pg_sleep(0.1)")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            await conn.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - started < BOUND
        assert "query_timeout" in str(info.value)
        rows = await wait_backends(admin, SCRAM_USER, states=["active"], timeout=BOUND)
        assert not [r for r in rows if "pg_sleep" in (r["query"] or "")]
        await admin.close()


async def test_query_timeout_ends_a_client_queued_longer_than_it(pg: PgServer) -> None:
    pool = pool_entry(size=1, query_timeout=0.5, query_wait_timeout=30, query_wait_notify=0)
    async with running_proxy(pg, [pool]) as proxy:
        holder = await proxy.asyncpg()
        waiter = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        tx = holder.transaction()
        await tx.start()  # holds the only server, idle in transaction: no query running
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            await waiter.execute("SELECT 1")
        waited = time.monotonic() - started
        assert "query_timeout" in str(info.value)
        assert "waited" in str(info.value)
        assert 0.4 <= waited < BOUND
        # The client holding the server is untouched and goes on with its transaction.
        assert await holder.fetchval("SELECT 41 + 1") == 42
        await tx.commit()
        await holder.close()
        await waiter.close()


async def test_query_timeout_counts_the_time_a_query_spent_queued(pg: PgServer) -> None:
    # 1.0 s queued behind the holder + 1.0 s running > 1.5 s: the waiter's query times out,
    # although neither its wait nor its run alone would.
    pool = pool_entry(size=1, query_timeout=1.5, query_wait_timeout=30, query_wait_notify=0)
    async with running_proxy(pg, [pool]) as proxy:
        holder = await proxy.asyncpg()
        waiter = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        first = asyncio.ensure_future(holder.fetchval("SELECT pg_sleep(1.0)::text || 'ok'"))
        await asyncio.sleep(0.05)
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            await waiter.execute("SELECT pg_sleep(1.0)")
        assert "query_timeout" in str(info.value)
        assert await first == "ok"  # 1.0 s < 1.5 s: the holder's query was not touched
        assert await holder.fetchval("SELECT 1") == 1
        await holder.close()
        await waiter.close()


@pytest.mark.parametrize("mode", ["transaction", "session"])
async def test_transaction_timeout_ends_a_long_transaction_not_a_short_one(
    pg: PgServer, mode: str
) -> None:
    pool = pool_entry(size=2, mode=mode, transaction_timeout=0.5)
    async with running_proxy(pg, [pool]) as proxy:
        short = await proxy.asyncpg()
        # Short transactions over a client lifetime longer than the timeout: never ended.
        for _ in range(3):
            async with short.transaction():
                await short.fetchval("SELECT pg_sleep(0.1)")
            await asyncio.sleep(0.2)
        long = await psycopg.AsyncConnection.connect(proxy.dsn())
        # The FATAL reaches libpq one of two ways. Usually a statement is running and it is that
        # statement's error. When it lands right after a ReadyForQuery, libpq is idle and hands
        # it to the notice handler, and the next statement finds the connection closed.
        fatal_notices: list[tuple[str | None, str | None, str | None]] = []
        long.add_notice_handler(
            lambda d: fatal_notices.append((d.severity_nonlocalized, d.sqlstate, d.message_primary))
        )
        started = time.monotonic()
        with pytest.raises(psycopg.Error) as info:
            for _ in range(30):
                await long.execute("SELECT pg_sleep(0.1)")
        assert time.monotonic() - started < BOUND
        if isinstance(info.value, psycopg.errors.TransactionTimeout):
            assert "transaction_timeout" in str(info.value)
        else:
            assert isinstance(info.value, psycopg.OperationalError), info.value
            assert "closed the connection" in str(info.value)
            assert len(fatal_notices) == 1, fatal_notices
            severity, sqlstate, message = fatal_notices[0]
            assert (severity, sqlstate) == ("FATAL", "25P04")
            assert message is not None and "transaction_timeout" in message
        assert await short.fetchval("SELECT 3") == 3
        await short.close()


async def test_session_mode_transaction_timeout_spares_pipelined_short_statements(
    pg: PgServer,
) -> None:
    # Twenty 0.05 s queries sent at once: the client waits 1 s without a pause, but each simple
    # Query is a transaction of its own, well under the timeout.
    pool = pool_entry(size=1, mode="session", transaction_timeout=0.5)
    async with running_proxy(pg, [pool], proxy={"auth_type": "md5"}) as proxy:
        client = await WireClient.open(proxy.host, proxy.port)
        try:
            login = await client.login(SCRAM_USER, DEFAULT_POOL, SCRAM_PASSWORD)
            assert login[-1][0] == "Z"
            started = time.monotonic()
            await client.send(b"".join(query(f"SELECT pg_sleep(0.05), {i}") for i in range(20)))
            replies = [await client.read_until("Z") for _ in range(20)]
            assert time.monotonic() - started >= 0.9
            assert all(r and r[-1] == ("Z", b"I") for r in replies), replies
            assert not [m for r in replies for m in r if m[0] == "E"]
            # ... while one transaction block of the same length is ended.
            await client.send(query("BEGIN"))
            await client.read_until("Z")
            for _ in range(20):
                reply = await client.simple_query("SELECT pg_sleep(0.05)")
                if not reply or reply[-1][0] != "Z":
                    break
            assert reply and reply[-1][0] == "E", reply
            assert error_fields(reply[-1][1])["C"] == "25P04"
        finally:
            await client.close()


@pytest.mark.parametrize("mode", ["transaction", "session"])
async def test_client_idle_timeout_closes_an_idle_client_only(pg: PgServer, mode: str) -> None:
    pool = pool_entry(size=2, mode=mode, client_idle_timeout=0.4)
    async with running_proxy(pg, [pool]) as proxy:
        active = await proxy.asyncpg()
        idle = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        await idle.execute("SELECT 1")
        for _ in range(8):
            assert await active.fetchval("SELECT 1") == 1
            await asyncio.sleep(0.1)
        with pytest.raises(psycopg.errors.IdleSessionTimeout) as info:
            await idle.execute("SELECT 1")
        assert "client_idle_timeout" in str(info.value)
        assert not active.is_closed()
        await active.close()


async def test_server_idle_timeout_closes_idle_servers(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=3, server_idle_timeout=0.3)]) as proxy:
        admin = await admin_conn(pg)
        conns = [await proxy.asyncpg() for _ in range(3)]
        await asyncio.gather(*(c.fetchval("SELECT pg_sleep(0.1)") for c in conns))
        assert len(await backends(admin, SCRAM_USER)) == 3
        await wait_backends(admin, SCRAM_USER, at_most=0, timeout=BOUND)
        assert await conns[0].fetchval("SELECT 5") == 5, "a new server is opened on demand"
        for c in conns:
            await c.close()
        await admin.close()


async def test_server_lifetime_closes_at_release_never_mid_transaction(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=1, server_lifetime=0.3)]) as proxy:
        admin = await admin_conn(pg)
        conn = await proxy.asyncpg()
        async with conn.transaction():
            first = await conn.fetchval("SELECT pg_backend_pid()")
            await asyncio.sleep(0.8)
            assert await conn.fetchval("SELECT pg_backend_pid()") == first
        deadline = time.monotonic() + BOUND
        while first in {r["pid"] for r in await backends(admin, SCRAM_USER)}:
            assert time.monotonic() < deadline, "the expired server was not closed"
            await asyncio.sleep(0.02)
        assert await conn.fetchval("SELECT pg_backend_pid()") != first
        await conn.close()
        await admin.close()


async def test_server_lifetime_ends_a_server_passed_from_client_to_client_under_load(
    pg: PgServer,
) -> None:
    # Four clients loop on one server: every release finds others queued, so the server goes
    # straight to the next client. It must still be replaced once its lifetime is over.
    async with running_proxy(pg, [pool_entry(size=1, server_lifetime=0.3)]) as proxy:
        conns = [await proxy.asyncpg() for _ in range(4)]
        pids: set[int] = set()
        stop = time.monotonic() + 1.2

        async def work(conn: asyncpg.Connection) -> None:
            while time.monotonic() < stop:
                pids.add(await conn.fetchval("SELECT pg_backend_pid()"))

        await asyncio.wait_for(asyncio.gather(*(work(c) for c in conns)), BOUND)
        assert len(pids) >= 2, "the server outlived server_lifetime while clients queued for it"
        for c in conns:
            await c.close()


async def test_a_global_timeout_applies_unless_a_pool_overrides_it(pg: PgServer) -> None:
    pools = [pool_entry("inherits", size=1), pool_entry("overrides", size=1, query_timeout=0)]
    async with running_proxy(pg, pools, proxy={"query_timeout": 0.3}) as proxy:
        strict = await proxy.asyncpg("inherits")
        lenient = await proxy.asyncpg("overrides")
        with pytest.raises(asyncpg.PostgresError, match="query_timeout"):
            await strict.fetchval("SELECT pg_sleep(2)")
        assert await lenient.fetchval("SELECT 1 FROM pg_sleep(0.8)") == 1
        await lenient.close()
