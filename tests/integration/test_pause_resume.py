"""PAUSE and RESUME: running transactions finish, new queries wait, nothing is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.admin_api import FILE_POOL, admin_config, running_admin
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import (
    CLUSTER_ID,
    MD5_USER,
    SCRAM_PASSWORD,
    SCRAM_USER,
    RunningProxy,
    backends,
    pool_entry,
    running_proxy,
)

WORKERS = 12


async def fresh_table(pg: PgServer, name: str) -> asyncpg.Connection:
    direct = await asyncpg.connect(pg.dsn(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
    await direct.execute(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (w int, i int)")
    return direct


async def load(
    proxy: RunningProxy, pool: str, table: str, stop: asyncio.Event, user: str = SCRAM_USER
) -> list[int]:
    """Workers writing two rows per transaction until ``stop``; commits counted per worker."""
    commits = [0] * WORKERS

    async def worker(w: int) -> None:
        conn = await proxy.asyncpg(pool, user)
        try:
            while not stop.is_set():
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {table} VALUES ($1, 1)", w)
                    await conn.execute(f"INSERT INTO {table} VALUES ($1, 2)", w)
                commits[w] += 1
        finally:
            await conn.close()

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    return commits


async def test_pause_under_load_waits_holds_and_loses_nothing(pg: PgServer) -> None:
    table = "pause_probe"
    direct = await fresh_table(pg, table)
    pools = [pool_entry(size=4, query_wait_timeout=0.3), pool_entry("otherpool", size=2)]
    async with running_proxy(pg, pools) as proxy:
        stop = asyncio.Event()
        loader = asyncio.ensure_future(load(proxy, "testpool", table, stop))
        other = await proxy.asyncpg("otherpool")
        await asyncio.sleep(0.3)
        assert await proxy.app.registry.pause("testpool", timeout=5) == ["testpool"]
        assert await backends(direct, SCRAM_USER, states=["active", "idle in transaction"]) == []
        assert proxy.pool_stats()["sv_total"] == 0, "paused pools close their idle servers"
        rows_paused = await direct.fetchval(f"SELECT count(*) FROM {table}")
        await asyncio.sleep(0.6)  # longer than query_wait_timeout: waiting clients must stay
        assert await other.fetchval("SELECT 1") == 1, "other pools keep serving"
        assert await direct.fetchval(f"SELECT count(*) FROM {table}") == rows_paused
        assert proxy.pool_stats()["cl_waiting"] == WORKERS
        assert proxy.app.registry.resume("testpool") == ["testpool"]
        await asyncio.sleep(0.3)
        stop.set()
        commits = await asyncio.wait_for(loader, 10)
        assert await direct.fetchval(f"SELECT count(*) FROM {table}") == 2 * sum(commits)
        assert await direct.fetchval(f"SELECT count(*) FROM {table}") > rows_paused
        await other.close()
    await direct.close()


async def test_pause_all_waits_for_a_running_transaction_to_commit(pg: PgServer) -> None:
    table = "pause_commit_probe"
    direct = await fresh_table(pg, table)
    async with running_proxy(pg, [pool_entry(size=2)]) as proxy:
        conn = await proxy.asyncpg()
        waiter = await proxy.asyncpg()

        async def long_transaction() -> None:
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES (0, 0)")
                await conn.execute("SELECT pg_sleep(0.4)")

        running = asyncio.ensure_future(long_transaction())
        await asyncio.sleep(0.1)
        started = time.monotonic()
        assert await proxy.app.registry.pause(None, timeout=5) == ["testpool"]
        assert time.monotonic() - started >= 0.2
        assert await direct.fetchval(f"SELECT count(*) FROM {table}") == 1, "it had committed"
        await asyncio.wait_for(running, 1)
        held = asyncio.ensure_future(waiter.fetchval("SELECT 11"))
        await asyncio.sleep(0.2)
        assert not held.done(), "a new query waits while paused"
        proxy.app.registry.resume(None)
        assert await asyncio.wait_for(held, 5) == 11
        await conn.close()
        await waiter.close()
    await direct.close()


async def test_pause_that_cannot_drain_in_time_is_undone(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=1)]) as proxy:
        holder = await proxy.asyncpg()
        await holder.execute("BEGIN")
        with pytest.raises(TimeoutError):
            await proxy.app.registry.pause("testpool", timeout=0.2)
        assert not proxy.app.registry.is_paused("testpool")
        await holder.execute("COMMIT")
        other = await proxy.asyncpg()
        assert await other.fetchval("SELECT 2") == 2
        with pytest.raises(KeyError):
            await proxy.app.registry.pause("no-such-pool")
        await other.close()
        await holder.close()


async def test_pause_and_resume_over_the_admin_api(pg: PgServer, tmp_path: Path) -> None:
    table = "pause_http_probe"
    direct = await fresh_table(pg, table)
    async with running_admin(admin_config(pg, tmp_path / "state.db")) as admin:
        http = admin.http
        proxy = RunningProxy(admin.app, "127.0.0.1", admin.client_port)
        pool_url = f"/v2/databases/{CLUSTER_ID}/pools/{FILE_POOL}"
        stop = asyncio.Event()
        loader = asyncio.ensure_future(load(proxy, FILE_POOL, table, stop, user=MD5_USER))
        await asyncio.sleep(0.3)
        resp = await http.post(f"{pool_url}/pause", json={"timeout_seconds": 5})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"paused": [FILE_POOL]}
        rows_paused = await direct.fetchval(f"SELECT count(*) FROM {table}")
        await asyncio.sleep(0.3)
        assert await direct.fetchval(f"SELECT count(*) FROM {table}") == rows_paused
        resp = await http.post(f"{pool_url}/resume")
        assert (resp.status_code, resp.json()) == (200, {"resumed": [FILE_POOL]})
        resp = await http.post(f"/v2/databases/{CLUSTER_ID}/pause")
        assert (resp.status_code, resp.json()) == (200, {"paused": [FILE_POOL]})
        resp = await http.post(f"/v2/databases/{CLUSTER_ID}/resume")
        assert (resp.status_code, resp.json()) == (200, {"resumed": [FILE_POOL]})
        await asyncio.sleep(0.2)
        stop.set()
        commits = await asyncio.wait_for(loader, 10)
        assert await direct.fetchval(f"SELECT count(*) FROM {table}") == 2 * sum(commits)
        assert await direct.fetchval(f"SELECT count(*) FROM {table}") > rows_paused

        holder = await proxy.asyncpg(FILE_POOL, MD5_USER)
        await holder.execute("BEGIN")
        resp = await http.post(f"{pool_url}/pause", json={"timeout_seconds": 0.2})
        assert resp.status_code == 503, resp.text
        assert "pause undone" in resp.json()["message"]
        await holder.execute("COMMIT")
        await holder.close()
        resp = await http.post(f"{pool_url}/pause", json={"timeout_seconds": -1})
        assert resp.status_code == 400
        resp = await http.post(f"/v2/databases/{CLUSTER_ID}/pools/nosuchpool/pause")
        assert resp.status_code == 404
        async with httpx.AsyncClient(base_url=str(http.base_url)) as anonymous:
            assert (await anonymous.post(f"{pool_url}/pause")).status_code == 401
    await direct.close()
