"""Limits: max_client_conn (proxy and pool), min_pool_size, the reserve pool, parallel opening."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.support.pgcluster import PgServer
from tests.support.proxy import (
    SCRAM_USER,
    backends,
    pool_entry,
    running_proxy,
)
from tests.support.proxy import (
    superuser_conn as admin_conn,
)

BOUND = 3.0


async def test_max_client_conn_refuses_the_client_over_the_proxy_limit(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry()], proxy={"max_client_conn": 2}) as proxy:
        first = await proxy.asyncpg()
        second = await proxy.asyncpg()
        with pytest.raises(asyncpg.PostgresError) as info:
            await proxy.asyncpg()
        assert info.value.sqlstate == "53300"
        assert "max_client_conn" in str(info.value)
        await first.close()
        third = await proxy.asyncpg()
        assert await third.fetchval("SELECT 1") == 1
        await second.close()
        await third.close()


async def test_pool_max_client_conn_limits_one_pool_only(pg: PgServer) -> None:
    pools = [pool_entry("small", max_client_conn=1), pool_entry("other")]
    async with running_proxy(pg, pools) as proxy:
        first = await proxy.asyncpg("small")
        with pytest.raises(asyncpg.PostgresError) as info:
            await proxy.asyncpg("small")
        assert info.value.sqlstate == "53300"
        assert "small" in str(info.value)
        other = await proxy.asyncpg("other")
        assert await other.fetchval("SELECT 1") == 1
        await first.close()
        await asyncio.sleep(0.05)
        again = await proxy.asyncpg("small")
        await again.close()
        await other.close()


async def test_min_pool_size_keeps_warm_servers(pg: PgServer) -> None:
    pool = pool_entry(size=4, min_pool_size=3, server_idle_timeout=0.2)
    async with running_proxy(pg, [pool]) as proxy:
        admin = await admin_conn(pg)
        deadline = time.monotonic() + BOUND
        while len(await backends(admin, SCRAM_USER)) < 3:
            assert time.monotonic() < deadline, "min_pool_size servers were not opened"
            await asyncio.sleep(0.02)
        conns = [await proxy.asyncpg() for _ in range(4)]
        await asyncio.gather(*(c.fetchval("SELECT pg_sleep(0.1)") for c in conns))
        await asyncio.sleep(0.6)  # well past server_idle_timeout
        assert len(await backends(admin, SCRAM_USER)) == 3
        stats = proxy.pool_stats()
        assert stats["sv_total"] == 3
        for c in conns:
            await c.close()
        await admin.close()


async def test_reserve_pool_serves_a_client_that_waited_reserve_pool_timeout(
    pg: PgServer,
) -> None:
    pool = pool_entry(size=1, reserve_pool_size=1, reserve_pool_timeout=0.4)
    async with running_proxy(pg, [pool]) as proxy:
        holder = await proxy.asyncpg()
        waiter = await proxy.asyncpg()
        tx = holder.transaction()
        await tx.start()
        started = time.monotonic()
        query = asyncio.ensure_future(waiter.fetchval("SELECT 42"))
        await asyncio.sleep(0.2)
        assert proxy.pool_stats()["cl_waiting"] == 1, "the reserve is not used before its timeout"
        assert await asyncio.wait_for(query, BOUND) == 42
        assert time.monotonic() - started >= 0.35  # served by a reserve server, after the timeout
        third = await proxy.asyncpg()
        third_q = asyncio.ensure_future(third.fetchval("SELECT 43"))
        async with waiter.transaction():
            await waiter.execute("SELECT 1")
            await asyncio.sleep(0.6)
            assert not third_q.done(), "the reserve is one server, not more"
        assert await asyncio.wait_for(third_q, BOUND) == 43
        await tx.rollback()
        for c in (holder, waiter, third):
            await c.close()


async def test_200_clients_at_once_through_20_servers_opened_in_parallel(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=20)], proxy={"auth_type": "md5"}) as proxy:
        peak = 0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, proxy.pool_stats()["sv_login"])
                await asyncio.sleep(0)

        async def client(i: int) -> int:
            conn = await proxy.asyncpg(timeout=30)
            try:
                return await conn.fetchval("SELECT $1::int + 0 FROM pg_sleep(0.05)", i)
            finally:
                await conn.close()

        watcher = asyncio.ensure_future(watch())
        results = await asyncio.gather(*(client(i) for i in range(200)))
        done.set()
        await watcher
        assert results == list(range(200))
        assert peak > 1, "servers were opened one at a time"
        assert proxy.pool_stats()["sv_total"] <= 20
