"""Between transactions a client keeps its server while nobody else needs it."""

from __future__ import annotations

import asyncio

from tests.integration.conftest import MakeProxy
from tests.support.proxy import DEFAULT_POOL, SCRAM_PASSWORD, SCRAM_USER, pool_entry
from tests.support.wire import WireClient, typed


async def test_consecutive_transactions_stay_on_one_server_when_nobody_waits(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(mode="transaction", size=4)])
    a = await proxy.asyncpg()
    b = await proxy.asyncpg()
    try:
        pids_a = {await a.fetchval("SELECT pg_backend_pid()") for _ in range(20)}
        pids_b = {await b.fetchval("SELECT pg_backend_pid()") for _ in range(20)}
        assert len(pids_a) == 1 and len(pids_b) == 1
        stats = proxy.pool_stats("testpool")
        assert stats["cl_active"] == 0  # kept servers do not count as clients in a transaction
    finally:
        await a.close()
        await b.close()


async def test_a_kept_server_is_taken_back_at_once_for_another_client(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(mode="transaction", size=1, query_wait_timeout=0.5)])
    a = await proxy.asyncpg()
    b = await proxy.asyncpg()
    try:
        pid = await a.fetchval("SELECT pg_backend_pid()")  # a now keeps the only server
        # b must not wait for a: the pool takes the kept server back for it.
        assert await asyncio.wait_for(b.fetchval("SELECT pg_backend_pid()"), 0.3) == pid
        assert await a.fetchval("SELECT pg_backend_pid()") == pid  # and a gets it again
        async with b.transaction():
            await b.execute("SELECT 1")
        assert await a.fetchval("SELECT 2") == 2
    finally:
        await a.close()
        await b.close()


async def test_kept_servers_go_back_to_the_pool_when_the_client_idles(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(mode="transaction", size=2)])
    a = await proxy.asyncpg()
    try:
        await a.fetchval("SELECT 1")
        await asyncio.sleep(0.6)
        stats = proxy.pool_stats("testpool")
        assert stats["sv_active"] == 0 and stats["sv_idle"] >= 1
    finally:
        await a.close()


async def test_terminate_closes_the_client_and_leaves_its_kept_server_reusable(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(mode="transaction", size=1)], proxy={"auth_type": "md5"})
    table = "terminate_probe"
    other = await proxy.asyncpg()
    try:
        await other.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (x int)")
        pid = await other.fetchval("SELECT pg_backend_pid()")
        for _ in range(2):
            client = await WireClient.open(proxy.host, proxy.port)
            try:
                assert (await client.login(SCRAM_USER, DEFAULT_POOL, SCRAM_PASSWORD))[-1][0] == "Z"
                reply = await client.simple_query(f"INSERT INTO {table} VALUES (1)")
                assert reply[-1] == ("Z", b"I")  # the client now keeps the only server
                await client.send(typed("X", b""))
                assert await client.at_eof(), "pyproxy closes the connection at Terminate"
            finally:
                await client.close()
            # The server was neither closed nor left dirty: the same backend serves on.
            assert await asyncio.wait_for(other.fetchval("SELECT pg_backend_pid()"), 2) == pid
        assert await other.fetchval(f"SELECT count(*) FROM {table}") == 2
        await other.execute(f"DROP TABLE {table}")
    finally:
        await other.close()
