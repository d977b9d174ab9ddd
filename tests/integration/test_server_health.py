"""Server health: PostgreSQL going away and coming back, and a backend that died while idle."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.support.pgcluster import APP_DB, PgServer, start_postgres
from tests.support.proxy import (
    SCRAM_PASSWORD,
    SCRAM_USER,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    backends,
    pool_entry,
    running_proxy,
)
from tests.support.wire import WireClient, error_fields, typed

QUICK = 2.0  # a client must learn that the server is down within this many seconds
RECOVERY = 5.0  # service must be back within this many seconds of PostgreSQL's return


async def test_postgres_stopped_and_started_under_load(pg: PgServer) -> None:
    own = await asyncio.to_thread(start_postgres)
    try:
        await _stop_and_start_under_load(own)
    finally:
        await asyncio.to_thread(own.close)


async def _stop_and_start_under_load(own: PgServer) -> None:
    pool = pool_entry(size=4, query_wait_timeout=10, server_login_retry=0.5)
    async with running_proxy(own, [pool]) as proxy:
        down = asyncio.Event()
        errors: list[tuple[float, str]] = []  # (seconds the failing call took, message)
        hung: list[float] = []  # calls that got no answer at all
        recovered: dict[int, float] = {}  # worker -> seconds after PostgreSQL's return
        stop = asyncio.Event()
        returned_at = 0.0

        async def worker(n: int) -> None:
            conn: asyncpg.Connection | None = None
            while not stop.is_set():
                started = time.monotonic()
                try:
                    if conn is None or conn.is_closed():
                        conn = await proxy.asyncpg(timeout=RECOVERY)
                    query = conn.fetchval("SELECT 1 FROM pg_sleep(0.01)")
                    assert await asyncio.wait_for(query, RECOVERY) == 1
                    if returned_at and started >= returned_at and n not in recovered:
                        recovered[n] = time.monotonic() - returned_at
                except TimeoutError:
                    hung.append(time.monotonic() - started)
                    if conn is not None:
                        conn.terminate()
                    conn = None
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                    if down.is_set():
                        errors.append((time.monotonic() - started, str(exc)))
                    conn = None
                    await asyncio.sleep(0.05)
            if conn is not None:
                await conn.close()

        workers = [asyncio.ensure_future(worker(n)) for n in range(8)]
        await asyncio.sleep(0.3)
        down.set()
        await asyncio.to_thread(own.stop, "fast")
        await asyncio.sleep(1.5)
        await asyncio.to_thread(own.start)
        returned_at = time.monotonic()
        deadline = returned_at + RECOVERY
        while len(recovered) < 8 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*workers)

        assert not hung, "a client got no answer: never a silent hang"
        assert errors, "clients saw no error while PostgreSQL was down"
        slow = [e for e in errors if e[0] > QUICK]
        assert not slow, f"errors took too long: {slow[:3]}"
        reasons = {msg for _, msg in errors}
        assert any("could not connect" in r or "terminating connection" in r for r in reasons), (
            reasons
        )
        assert len(recovered) == 8, f"only {len(recovered)} of 8 clients recovered within 5 s"
        assert max(recovered.values()) < RECOVERY


@pytest.mark.parametrize("mode", ["transaction", "session"])
async def test_backend_killed_while_idle_is_replaced_transparently(pg: PgServer, mode: str) -> None:
    pool = pool_entry(size=1, mode=mode, server_check_delay=0.1)
    async with running_proxy(pg, [pool]) as proxy:
        admin = await asyncpg.connect(pg.dsn(SUPERUSER, SUPERUSER_PASSWORD, APP_DB))
        first = await proxy.asyncpg()
        pid = await first.fetchval("SELECT pg_backend_pid()")
        if mode == "session":
            await first.close()
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # idle longer than server_check_delay
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        while pid in {r["pid"] for r in await backends(admin, SCRAM_USER)}:
            await asyncio.sleep(0.01)
        conn = first if mode == "transaction" else await proxy.asyncpg()
        assert await conn.fetchval("SELECT pg_backend_pid()") != pid
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        await admin.close()


async def test_backend_killed_while_kept_between_transactions_is_replaced(pg: PgServer) -> None:
    # Right after a transaction nobody waits, so the client keeps its server; when PostgreSQL
    # ends that backend, the client's next statement runs on another one without an error.
    pool = pool_entry(size=2, mode="transaction")
    async with running_proxy(pg, [pool]) as proxy:
        admin = await asyncpg.connect(pg.dsn(SUPERUSER, SUPERUSER_PASSWORD, APP_DB))
        conn = await proxy.asyncpg()
        for _ in range(3):
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            while pid in {r["pid"] for r in await backends(admin, SCRAM_USER)}:
                await asyncio.sleep(0.005)
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid
        await conn.close()
        await admin.close()


async def test_new_pool_reports_postgres_login_error_with_its_sqlstate(pg: PgServer) -> None:
    pool = pool_entry(db="no_such_database")
    async with running_proxy(pg, [pool]) as proxy:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(asyncpg.PostgresError) as info:
                await proxy.asyncpg()
            assert time.monotonic() - started < QUICK
            assert info.value.sqlstate == "3D000"
            assert "no_such_database" in str(info.value)


async def test_backend_death_during_an_unsynced_extended_batch_ends_the_client(
    pg: PgServer,
) -> None:
    """Parse/Bind/Execute/Flush without Sync: the client waits for replies, so it must be told."""
    async with running_proxy(pg, [pool_entry(size=1)], proxy={"auth_type": "md5"}) as proxy:
        admin = await asyncpg.connect(pg.dsn(SUPERUSER, SUPERUSER_PASSWORD, APP_DB))
        client = await WireClient.open(proxy.host, proxy.port)
        try:
            login = await client.login(SCRAM_USER, "testpool", SCRAM_PASSWORD)
            assert login[-1][0] == "Z"
            parse_bind = typed("P", b"\0SELECT pg_sleep(5)\0\0\0") + typed("B", b"\0" * 8)
            await client.send(parse_bind + typed("H", b""))
            assert [k for k, _ in await client.read_until("2")] == ["1", "2"]
            await client.send(typed("E", b"\0" * 5) + typed("H", b""))
            rows = await wait_for_query(admin, "pg_sleep(5)")
            await admin.execute("SELECT pg_terminate_backend($1)", rows[0]["pid"])
            reply = await client.read_until("E", timeout=QUICK)
            assert reply and reply[-1][0] == "E"
            fields = error_fields(reply[-1][1])
            assert fields["S"] == "FATAL"
            assert fields["C"] == "57P01"
            assert await client.at_eof(timeout=QUICK)
        finally:
            await client.close()
            await admin.close()


async def wait_for_query(admin: asyncpg.Connection, text: str) -> list[asyncpg.Record]:
    deadline = time.monotonic() + QUICK
    while True:
        rows = [r for r in await backends(admin, SCRAM_USER) if text in (r["query"] or "")]
        if rows:
            return rows
        assert time.monotonic() < deadline, f"no backend runs {text}"
        await asyncio.sleep(0.02)
