"""Cancel requests while the pool is full: for the running query, and for a queued client."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from tests.support.pgcluster import PgServer
from tests.support.proxy import pool_entry, running_proxy

BOUND = 2.0


async def test_cancel_of_the_running_query_under_a_full_pool(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=1)]) as proxy:
        running = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        queued = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        sleep = asyncio.ensure_future(running.execute("SELECT pg_sleep(10)"))
        await proxy.wait_stats(sv_active=1)
        waiting = asyncio.ensure_future(queued.execute("SELECT 21"))
        await proxy.wait_stats(cl_waiting=1)
        started = time.monotonic()
        await running.cancel_safe()
        with pytest.raises(psycopg.errors.QueryCanceled):
            await asyncio.wait_for(sleep, BOUND)
        assert time.monotonic() - started < BOUND
        cur = await asyncio.wait_for(waiting, BOUND)
        assert await cur.fetchone() == (21,)
        assert proxy.pool_stats()["sv_total"] == 1, "a cancel never takes a pool server"
        cur = await running.execute("SELECT 22")
        assert await cur.fetchone() == (22,)
        await running.close()
        await queued.close()


async def test_cancel_of_a_queued_client_takes_it_out_of_the_queue(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=1, query_wait_timeout=30)]) as proxy:
        holder = await psycopg.AsyncConnection.connect(proxy.dsn())
        await holder.execute("SELECT 1")  # a transaction is open: the only server is taken
        queued = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
        waiting = asyncio.ensure_future(queued.execute("SELECT 31"))
        await proxy.wait_stats(cl_waiting=1)
        await queued.cancel_safe()
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            await asyncio.wait_for(waiting, BOUND)
        assert info.value.sqlstate == "57014"
        await proxy.wait_stats(cl_waiting=0, sv_active=1)
        await holder.commit()
        cur = await queued.execute("SELECT 32")
        assert await cur.fetchone() == (32,), "the canceled client carries on"
        await holder.close()
        await queued.close()
