"""Pool size limits, the FIFO wait queue, query_wait_timeout and max_client_conn."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import psycopg
import pytest

from tests.integration.conftest import MakeProxy
from tests.support.proxy import MD5_USER, MODES, RunningProxy, backends, pool_entry, wait_backends

CLIENTS = 50
POOL_SIZE = 5


async def one_client(proxy: RunningProxy, i: int) -> int:
    conn = await proxy.asyncpg(user=MD5_USER)
    try:
        total = 0
        for j in range(3):
            total += await conn.fetchval("SELECT $1::int + $2::int FROM pg_sleep(0.005)", i, j)
        return total
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", MODES)
async def test_fifty_clients_share_five_backends(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection, mode: str
) -> None:
    await wait_backends(pg_admin, MD5_USER)  # leftovers of earlier tests are gone
    proxy = await make_proxy([pool_entry(mode=mode, size=POOL_SIZE, user=MD5_USER)])
    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            seen.append(len(await backends(pg_admin, MD5_USER)))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(one_client(proxy, i) for i in range(CLIENTS))), 30
        )
    finally:
        done.set()
        await watcher
    assert results == [3 * i + 3 for i in range(CLIENTS)]
    assert len(seen) >= 5, "pg_stat_activity was polled while the clients ran"
    assert max(seen) <= POOL_SIZE
    assert max(seen) >= 1
    assert proxy.pool_stats()["sv_total"] <= POOL_SIZE


async def hold_server(proxy: RunningProxy) -> asyncpg.Connection:
    """A client holding the pool's server inside an open transaction."""
    holder = await proxy.asyncpg()
    await holder.execute("BEGIN")
    await holder.fetchval("SELECT 1")
    return holder


async def test_queued_clients_are_served_first_come_first_served(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection
) -> None:
    seq = f"fifo_{uuid.uuid4().hex[:12]}"
    await pg_admin.execute(f"CREATE SEQUENCE {seq}; GRANT ALL ON SEQUENCE {seq} TO PUBLIC")
    try:
        proxy = await make_proxy([pool_entry(size=1)])
        holder = await hold_server(proxy)
        waiters = [await proxy.asyncpg() for _ in range(6)]
        tasks = []
        for n, conn in enumerate(waiters, start=1):
            tasks.append(asyncio.create_task(conn.fetchval(f"SELECT nextval('{seq}')")))
            await proxy.wait_stats(cl_waiting=n)  # queued strictly one after the other
        await holder.execute("COMMIT")
        served = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        # The single server ran the queued statements in the order the clients arrived.
        assert served == [1, 2, 3, 4, 5, 6]
        for conn in [holder, *waiters]:
            await conn.close()
    finally:
        await pg_admin.execute(f"DROP SEQUENCE {seq}")


async def test_client_waiting_past_query_wait_timeout_gets_57p03(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([pool_entry(size=1, query_wait_timeout=0.3)])
    holder = await hold_server(proxy)
    waiter = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
    try:
        started = time.monotonic()
        with pytest.raises(psycopg.Error) as excinfo:
            await waiter.execute("SELECT 1")
        waited = time.monotonic() - started
        assert excinfo.value.sqlstate == "57P03"
        assert str(excinfo.value).startswith("query_wait_timeout")
        assert 0.25 <= waited < 2.0
        # The holder was not disturbed and the pool serves again once it is free.
        assert await holder.fetchval("SELECT 2") == 2
        await holder.execute("COMMIT")
        late = await proxy.asyncpg()
        assert await late.fetchval("SELECT 3") == 3
        await late.close()
    finally:
        await holder.close()
        await waiter.close()


async def test_asyncpg_client_sees_the_query_wait_timeout_reason(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([pool_entry(size=1, query_wait_timeout=0.3)])
    holder = await hold_server(proxy)
    waiter = await proxy.asyncpg()
    try:
        # The error is FATAL, which asyncpg reports as a lost connection carrying the message.
        with pytest.raises(asyncpg.PostgresError, match="query_wait_timeout"):
            await waiter.fetchval("SELECT 1")
    finally:
        await holder.close()
        await waiter.close()


async def test_max_client_conn_refuses_extra_clients_with_53300(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(proxy={"max_client_conn": 3})
    conns = [await proxy.asyncpg() for _ in range(3)]
    try:
        with pytest.raises(asyncpg.PostgresError) as excinfo:
            await proxy.asyncpg()
        assert excinfo.value.sqlstate == "53300"
        assert all([await c.fetchval("SELECT 1") == 1 for c in conns])
        await conns.pop().close()
        await proxy.wait_stats(cl_total=2)
        conns.append(await proxy.asyncpg())  # room again
    finally:
        for c in conns:
            await c.close()


async def test_pool_max_client_conn_refuses_extra_clients_with_53300(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(max_client_conn=2), pool_entry("otherpool")])
    conns = [await proxy.asyncpg() for _ in range(2)]
    try:
        with pytest.raises(asyncpg.PostgresError) as excinfo:
            await proxy.asyncpg()
        assert excinfo.value.sqlstate == "53300"
        conns.append(await proxy.asyncpg(pool="otherpool"))  # other pools are not limited
    finally:
        for c in conns:
            await c.close()
