"""Cancel requests: forwarded to the client's own running query, never to another client's."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import psycopg
import pytest

from tests.integration.conftest import MakeProxy
from tests.support.proxy import MODES, SCRAM_USER, pool_entry, wait_backends
from tests.support.wire import WireClient, error_fields, send_cancel


@pytest.mark.parametrize("mode", MODES)
async def test_psycopg_cancel_stops_pg_sleep_with_57014_within_a_second(
    make_proxy: MakeProxy, mode: str
) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=1)])
    conn = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
    try:
        sleeper = asyncio.create_task(conn.execute("SELECT pg_sleep(10)"))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await conn.cancel_safe(timeout=2)
        with pytest.raises(psycopg.errors.QueryCanceled) as excinfo:
            await asyncio.wait_for(sleeper, 5)
        assert time.monotonic() - started < 1.0
        assert excinfo.value.sqlstate == "57014"
        cur = await conn.execute("SELECT 1")
        assert await cur.fetchone() == (1,)
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", MODES)
async def test_asyncpg_timeout_cancels_the_query_and_frees_the_server(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection, mode: str
) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=1)])
    conn = await proxy.asyncpg()
    try:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("SELECT pg_sleep(10)", timeout=0.3)
        assert await conn.fetchval("SELECT 2") == 2
        assert time.monotonic() - started < 1.5
        # Nothing of the cancelled statement still runs on the server.
        await wait_backends(pg_admin, SCRAM_USER, states=["active"], timeout=1.0)
    finally:
        await conn.close()


async def test_stale_cancel_key_does_not_cancel_the_next_clients_query(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection
) -> None:
    proxy = await make_proxy([pool_entry(mode="transaction", size=1)], proxy={"auth_type": "md5"})
    first = await WireClient.open(proxy.host, proxy.port)
    try:
        await first.login(SCRAM_USER, "testpool", "scram-secret")
        assert first.key is not None
        reply = await first.simple_query("SELECT pg_backend_pid()")
        first_pid = int(reply[1][1][6:])  # DataRow: int16 count, int32 length, text
        # The first client's query is over; the same backend now serves another client.
        second = await proxy.asyncpg()
        marker = uuid.uuid4().hex
        running = asyncio.create_task(
            second.fetchval(f"SELECT pg_backend_pid() FROM pg_sleep(0.6) /* {marker} */")
        )
        await asyncio.sleep(0.15)
        await send_cancel(proxy.host, proxy.port, *first.key)
        assert await asyncio.wait_for(running, 5) == first_pid
        await second.close()
    finally:
        await first.close()


async def test_cancel_with_a_forged_key_is_ignored(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([pool_entry(mode="session", size=1)])
    conn = await proxy.asyncpg()
    try:
        running = asyncio.create_task(conn.fetchval("SELECT 5 FROM pg_sleep(0.4)"))
        await asyncio.sleep(0.1)
        await send_cancel(proxy.host, proxy.port, 12345, 67890)
        assert await asyncio.wait_for(running, 5) == 5
    finally:
        await conn.close()


async def test_cancel_of_a_queued_client_returns_57014(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([pool_entry(size=1)], proxy={"auth_type": "md5"})
    holder = await proxy.asyncpg()
    await holder.execute("BEGIN")
    waiter = await WireClient.open(proxy.host, proxy.port)
    try:
        await waiter.login(SCRAM_USER, "testpool", "scram-secret")
        assert waiter.key is not None
        await waiter.send(b"Q\x00\x00\x00\x0dSELECT 1\x00")
        await proxy.wait_stats(cl_waiting=1)
        await send_cancel(proxy.host, proxy.port, *waiter.key)
        reply = await waiter.read_until("Z", timeout=2)
        assert reply[0][0] == "E"
        assert error_fields(reply[0][1])["C"] == "57014"
        assert reply[-1] == ("Z", b"I")
        assert await holder.fetchval("SELECT 3") == 3  # the holder keeps its server
    finally:
        await waiter.close()
        await holder.close()
