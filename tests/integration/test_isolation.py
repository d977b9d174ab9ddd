"""Isolation between clients: no cancel, byte, error or session state crosses from one client to
another, whatever a hostile or unlucky client does."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import psycopg
import pytest

from tests.integration.conftest import MakeProxy
from tests.support.extended import ExtendedClient, bind, describe, execute, kinds, parse, sync
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import (
    SCRAM_USER,
    TRUST_USER,
    pool_entry,
    superuser_conn,
    wait_for_query,
)
from tests.support.wire import CANCEL_REQUEST_CODE, WireClient, error_fields, query, typed

# ---- cancels --------------------------------------------------------------------------------


class CancelDelayer:
    """A TCP forwarder to PostgreSQL that holds back connections carrying a CancelRequest for
    ``delay`` seconds: the network between pooler and server is slow exactly when it hurts."""

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.target = (host, port)
        self.delay = delay
        self.server: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CancelDelayer:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            first = await reader.read(65536)
            if len(first) >= 8 and int.from_bytes(first[4:8]) == CANCEL_REQUEST_CODE:
                await asyncio.sleep(self.delay)
            up_writer.write(first)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()


async def test_a_late_cancel_never_reaches_the_next_client_of_the_server(
    make_proxy: MakeProxy, pg: PgServer
) -> None:
    """The cancel is forwarded while A's query runs but reaches PostgreSQL only after the query
    ended: B, who got the server next, must not be cancelled by it."""
    async with CancelDelayer(pg.host, pg.port, delay=0.6) as slow:
        proxy = await make_proxy(
            [pool_entry(size=1)], cluster={"host": "127.0.0.1", "port": slow.port}
        )
        a = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        b = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        try:
            running = asyncio.ensure_future(a.execute("SELECT pg_sleep(0.3)"))
            await proxy.wait_stats(sv_active=1)
            await asyncio.sleep(0.05)
            canceller = asyncio.ensure_future(a.cancel_safe(timeout=5))
            await asyncio.wait_for(running, 5)  # ends normally: the cancel is still on its way
            cur = await asyncio.wait_for(b.execute("SELECT 7 FROM pg_sleep(0.8)"), 10)
            assert await cur.fetchone() == (7,)
            await canceller
            cur = await a.execute("SELECT 8")
            assert await cur.fetchone() == (8,)
        finally:
            await a.close()
            await b.close()


async def test_servers_being_cancelled_are_counted_and_come_back(
    make_proxy: MakeProxy, pg: PgServer
) -> None:
    async with CancelDelayer(pg.host, pg.port, delay=0.5) as slow:
        proxy = await make_proxy(
            [pool_entry(size=1)], cluster={"host": "127.0.0.1", "port": slow.port}
        )
        a = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        try:
            running = asyncio.ensure_future(a.execute("SELECT pg_sleep(0.2)"))
            await proxy.wait_stats(sv_active=1)
            canceller = asyncio.ensure_future(a.cancel_safe(timeout=5))
            await asyncio.wait_for(running, 5)
            await proxy.wait_stats(sv_being_canceled=1, sv_idle=0)
            await canceller
            await proxy.wait_stats(sv_being_canceled=0, sv_idle=1, timeout=3)
        finally:
            await a.close()


async def test_cancel_storm_never_cancels_a_bystander(make_proxy: MakeProxy) -> None:
    """20 clients cancelled every 0.1 s and 20 bystanders share a transaction pool of 4."""
    proxy = await make_proxy([pool_entry(size=4, query_wait_timeout=30)])
    sleepers = [
        await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) for _ in range(20)
    ]
    bystanders = [await proxy.asyncpg() for _ in range(20)]
    stop = time.monotonic() + 4.0
    cancelled: list[BaseException] = []
    served = 0

    async def sleeper(conn: psycopg.AsyncConnection) -> None:
        while time.monotonic() < stop:
            with contextlib.suppress(psycopg.errors.QueryCanceled):
                await conn.execute("SELECT pg_sleep(0.1)")

    async def canceller() -> None:
        while time.monotonic() < stop:
            await asyncio.gather(*(c.cancel_safe(timeout=5) for c in sleepers))
            await asyncio.sleep(0.1)

    async def bystander(conn: asyncpg.Connection) -> None:
        nonlocal served
        while time.monotonic() < stop:
            try:
                await conn.execute("SELECT pg_sleep(0.01)")
                served += 1
            except asyncpg.QueryCanceledError as exc:
                cancelled.append(exc)

    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(sleeper(c) for c in sleepers), canceller(), *(bystander(c) for c in bystanders)
            ),
            60,
        )
    finally:
        for c in sleepers:
            await c.close()
        for b in bystanders:
            await b.close()
    assert served > 100
    assert cancelled == []


# ---- session state in session mode ------------------------------------------------------------

LEAVE_STATE = [
    "SET work_mem = '7MB'",
    "CREATE TEMP TABLE leaked_tmp (x int)",
    "LISTEN leaked_channel",
    "SELECT pg_advisory_lock(4242)",
    "BEGIN",
    "SELECT 1",
]


async def _assert_clean_session(conn: psycopg.AsyncConnection) -> None:
    cur = await conn.execute("SHOW work_mem")
    assert (await cur.fetchone())[0] == "4MB"
    cur = await conn.execute("SELECT to_regclass('pg_temp.leaked_tmp')")
    assert (await cur.fetchone())[0] is None
    cur = await conn.execute("SELECT count(*) FROM pg_listening_channels()")
    assert (await cur.fetchone())[0] == 0
    cur = await conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
    )
    assert (await cur.fetchone())[0] == 0
    cur = await conn.execute("SELECT current_setting('transaction_isolation'), now() = now()")
    assert (await cur.fetchone())[1] is True


@pytest.mark.parametrize("ending", ["disconnect", "idle_transaction_timeout"])
async def test_session_mode_client_leaving_inside_a_transaction_leaves_no_state(
    make_proxy: MakeProxy, ending: str
) -> None:
    proxy = await make_proxy([pool_entry(mode="session", size=1, idle_transaction_timeout=0.3)])
    for _ in range(3):
        first = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        cur = await first.execute("SELECT pg_backend_pid()")
        pid = (await cur.fetchone())[0]
        for sql in LEAVE_STATE:
            await first.execute(sql)
        if ending == "disconnect":
            await first.close()
        else:
            await asyncio.sleep(0.8)  # the timeout ends the client
            with pytest.raises(psycopg.Error):
                await first.execute("SELECT 1")
            await first.close()
        second = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        try:
            cur = await second.execute("SELECT pg_backend_pid()")
            assert (await cur.fetchone())[0] == pid  # the same server, reused
            await _assert_clean_session(second)
        finally:
            await second.close()


# ---- message types a client may not send ------------------------------------------------------


@pytest.mark.parametrize("kind", ["Z", "p", "1", "K", "R", "\x00", "y"])
async def test_unexpected_message_type_gets_fatal_08P01(make_proxy: MakeProxy, kind: str) -> None:
    proxy = await make_proxy([pool_entry(size=1)], proxy={"auth_type": "trust"})
    client = await ExtendedClient.connect(proxy.host, proxy.port, TRUST_USER, "testpool")
    assert kinds(await client.query("SELECT 1")) == "TDCZ"
    await client.send(typed(kind, b"\x00\x00\x00\x00"))
    msg = await client.wire.read_message()
    assert msg is not None and msg[0] == "E"
    fields = error_fields(msg[1])
    assert (fields["S"], fields["C"]) == ("FATAL", "08P01")
    assert "invalid frontend message type" in fields["M"]
    assert await client.wire.at_eof()
    await client.wire.close()


async def test_stray_message_then_disconnect_never_reaches_the_next_client(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(size=1)], proxy={"auth_type": "trust"})
    bystander = await proxy.asyncpg()
    try:
        for i in range(20):
            hostile = await WireClient.open(proxy.host, proxy.port)
            await hostile.login(TRUST_USER, "testpool")
            if i % 2:
                await hostile.simple_query("SELECT 1")  # keeps the server between transactions
            # A stray message, then gone: nothing is outstanding from pyproxy's point of view.
            await hostile.send(typed("Z" if i % 4 < 2 else "p", b"I"))
            await hostile.close()
            for _ in range(3):
                assert await bystander.fetchval("SELECT $1::int", i) == i
    finally:
        await bystander.close()


# ---- framing ----------------------------------------------------------------------------------

PIPELINE = (
    query("SELECT 1")
    + parse("", "SELECT $1::int + 1")
    + bind("", "", ["41"])
    + describe("P", "")
    + execute()
    + sync()
    + query("SELECT 'x'; SELECT 2")
)
PIPELINE_REPLY = "TDCZ" + "12TDCZ" + "TDCTDCZ"


@pytest.mark.parametrize("mode", ["session", "transaction", "statement"])
async def test_a_pipeline_split_at_every_byte_gets_its_replies(
    make_proxy: MakeProxy, mode: str
) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=2)], proxy={"auth_type": "trust"})
    client = await ExtendedClient.connect(proxy.host, proxy.port, TRUST_USER, "testpool")
    try:
        for cut in range(1, len(PIPELINE)):
            await client.send(PIPELINE[:cut])
            await asyncio.sleep(0.003)  # the two parts arrive as two reads
            await client.send(PIPELINE[cut:])
            assert kinds(await client.read(ready=3)) == PIPELINE_REPLY, f"cut at {cut}"
        assert client.errors == []
    finally:
        await client.close()


@pytest.mark.parametrize("head", [1, 2, 3, 4])
async def test_a_query_whose_first_segment_is_a_partial_header_is_answered(
    make_proxy: MakeProxy, head: int
) -> None:
    proxy = await make_proxy([pool_entry(size=1)], proxy={"auth_type": "trust"})
    client = await ExtendedClient.connect(proxy.host, proxy.port, TRUST_USER, "testpool")
    try:
        for _ in range(3):  # on a fresh link, then on the server kept between transactions
            msg = query("SELECT 42")
            await client.send(msg[:head])
            await asyncio.sleep(0.01)
            await client.send(msg[head:])
            replies = await client.read()
            assert kinds(replies) == "TDCZ"
            assert replies[1].detail == "42"
    finally:
        await client.close()


# ---- servers that die ---------------------------------------------------------------------------


async def _kill_loop(pg: PgServer, stop: float, every: float = 0.05) -> int:
    admin = await superuser_conn(pg)
    killed = 0
    try:
        while time.monotonic() < stop:
            killed += await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE usename = $1 AND datname = $2 AND pid <> pg_backend_pid()",
                SCRAM_USER,
                APP_DB,
            )
            await asyncio.sleep(every)
    finally:
        await admin.close()
    return killed


@pytest.mark.parametrize("mode", ["transaction", "statement"])
async def test_autocommit_queries_survive_backends_killed_every_50ms(
    make_proxy: MakeProxy, pg: PgServer, mode: str
) -> None:
    """asyncpg with its statement cache (Bind/Execute/Sync per query once prepared) and
    psycopg (Parse/Bind/Describe/Execute/Sync in one write): each query is one request sent
    while nothing else is outstanding, so a server that dies before answering is replaced."""
    proxy = await make_proxy(
        [pool_entry(mode=mode, size=4, server_login_retry=0)], proxy={"auth_type": "trust"}
    )
    drivers = [await proxy.asyncpg(user=TRUST_USER, statement_cache_size=100) for _ in range(4)]
    for conn in drivers:
        assert await conn.fetchval("SELECT $1::int", 0) == 0  # prepared before the kills
    psycopgs = [
        await psycopg.AsyncConnection.connect(proxy.dsn(user=TRUST_USER), autocommit=True)
        for _ in range(4)
    ]
    stop = time.monotonic() + 3.0
    errors: list[BaseException] = []
    done = 0

    async def with_asyncpg(conn: asyncpg.Connection) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            i += 1
            try:
                assert await conn.fetchval("SELECT $1::int", i) == i
                done += 1
            except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                errors.append(exc)

    async def with_psycopg(conn: psycopg.AsyncConnection) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            i += 1
            try:
                cur = await conn.execute("SELECT %s::int", (i,))
                assert await cur.fetchone() == (i,)
                done += 1
            except psycopg.Error as exc:
                errors.append(exc)

    try:
        killed, _ = await asyncio.gather(
            _kill_loop(pg, stop),
            asyncio.gather(
                *(with_asyncpg(c) for c in drivers), *(with_psycopg(c) for c in psycopgs)
            ),
        )
    finally:
        for c in drivers:
            await c.close()
        for p in psycopgs:
            await p.close()
    assert killed > 20
    assert done > 200
    assert errors == []


async def test_a_server_killed_while_kept_between_transactions_is_replaced_silently(
    make_proxy: MakeProxy, pg: PgServer
) -> None:
    proxy = await make_proxy([pool_entry(size=1)])
    conn = await proxy.asyncpg()
    admin = await superuser_conn(pg)
    try:
        for _ in range(10):
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            # At once: the FATAL may not have reached pyproxy yet.
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid
    finally:
        await admin.close()
        await conn.close()


async def test_a_request_that_waited_in_the_queue_is_retried_when_its_server_dies(
    make_proxy: MakeProxy, pg: PgServer
) -> None:
    """The retry window starts when the request reaches a server, not when it was queued: a
    request that waited 1.5 s for the pool's only server, whose backend is then terminated
    before it answers, is sent again and its client sees no error."""
    proxy = await make_proxy([pool_entry(size=1)])
    holder = await proxy.asyncpg()
    waiter = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
    admin = await superuser_conn(pg)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1")

        async def queued_query() -> object:
            cur = await waiter.execute("SELECT 7 FROM pg_sleep(0.5) /* queued */")
            row = await cur.fetchone()
            return None if row is None else row[0]

        queued = asyncio.create_task(queued_query())  # a simple Query, one request
        await asyncio.sleep(1.5)
        await tx.commit()  # the server goes to the waiter
        pid = await wait_for_query(admin, "/* queued */")
        await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        assert await asyncio.wait_for(queued, 10) == 7
    finally:
        await admin.close()
        await holder.close()
        await waiter.close()


# ---- accounting that a hostile client could fool (found by tests/integration/test_hostile_*) ----


async def test_copy_done_without_a_copy_never_ends_a_transaction_early(
    make_proxy: MakeProxy,
) -> None:
    """PostgreSQL ignores a CopyDone outside COPY; the Syncs before it are answered."""
    proxy = await make_proxy([pool_entry(size=1)], proxy={"auth_type": "trust"})
    bystander = await proxy.asyncpg()
    hostile = await ExtendedClient.connect(proxy.host, proxy.port, TRUST_USER, "testpool")
    try:
        for i in range(5):
            await hostile.send(sync(), sync(), typed("c", b""), query("SELECT pg_sleep(0.05)"))
            assert await bystander.fetchval("SELECT $1::int", i) == i
            assert kinds(await hostile.read(ready=3)) == "ZZTDCZ"
    finally:
        await hostile.close()
        await bystander.close()


async def test_a_malformed_flush_never_leaves_a_server_waiting_for_sync(
    make_proxy: MakeProxy,
) -> None:
    """A Flush with a body is an error that makes PostgreSQL skip messages until a Sync."""
    proxy = await make_proxy([pool_entry(size=1)], proxy={"auth_type": "trust"})
    bystander = await proxy.asyncpg()
    try:
        for i in range(5):
            hostile = await WireClient.open(proxy.host, proxy.port)
            await hostile.login(TRUST_USER, "testpool")
            await hostile.send(typed("H", b"xx"))
            await hostile.close()
            assert await bystander.fetchval("SELECT $1::int", i) == i
    finally:
        await bystander.close()
