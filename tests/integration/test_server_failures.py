"""A backend that dies under a client, and clients that vanish with work in progress."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from tests.integration.conftest import MakeProxy
from tests.support.proxy import (
    MD5_USER,
    MODES,
    SCRAM_USER,
    RunningProxy,
    backends,
    pool_entry,
    wait_backends,
    wait_for_query,
)


@pytest.mark.parametrize("mode", MODES)
async def test_terminated_backend_gives_its_client_an_error_then_a_new_server(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection, mode: str
) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=1)])
    conn = await proxy.asyncpg()
    try:
        old_pid = await conn.fetchval("SELECT pg_backend_pid()")
        marker = uuid.uuid4().hex
        sleeper = asyncio.create_task(conn.fetchval(f"SELECT pg_sleep(10) /* {marker} */"))
        pid = await wait_for_query(pg_admin, marker)
        assert pid == old_pid
        assert await pg_admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(asyncpg.PostgresError) as excinfo:
            await asyncio.wait_for(sleeper, 5)
        assert excinfo.value.sqlstate in ("57P01", "08006")
        assert await conn.fetchval("SELECT 42") == 42
        assert await conn.fetchval("SELECT pg_backend_pid()") != old_pid
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", ["session", "transaction"])
async def test_client_gone_mid_transaction_leaves_no_open_transaction(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection, mode: str
) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=1, user=MD5_USER)])
    conn = await proxy.asyncpg(user=MD5_USER)
    await conn.execute("BEGIN")
    await conn.execute("CREATE TEMP TABLE gone_probe (x int)")
    rows = await backends(pg_admin, MD5_USER, states=["idle in transaction"])
    assert len(rows) == 1
    conn.terminate()  # drops the socket, no Terminate message
    await wait_backends(pg_admin, MD5_USER, states=["idle in transaction", "active"])
    await assert_pool_serves_clean(proxy)


@pytest.mark.parametrize("mode", MODES)
async def test_client_gone_during_a_query_leaves_no_running_query(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection, mode: str
) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=1, user=MD5_USER)])
    conn = await proxy.asyncpg(user=MD5_USER)
    marker = uuid.uuid4().hex
    sleeper = asyncio.create_task(conn.fetchval(f"SELECT pg_sleep(10) /* {marker} */"))
    await wait_for_query(pg_admin, marker)
    conn.terminate()
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        await sleeper
    await wait_backends(pg_admin, MD5_USER, states=["idle in transaction", "active"])
    await assert_pool_serves_clean(proxy)


@pytest.mark.parametrize("mode", ["session", "transaction"])
async def test_client_gone_in_a_failed_transaction_leaves_nothing_open(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection, mode: str
) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=1, user=MD5_USER)])
    conn = await proxy.asyncpg(user=MD5_USER)
    await conn.execute("BEGIN")
    with pytest.raises(asyncpg.DivisionByZeroError):
        await conn.execute("SELECT 1 / 0")
    conn.terminate()
    await wait_backends(
        pg_admin, MD5_USER, states=["idle in transaction", "idle in transaction (aborted)"]
    )
    await assert_pool_serves_clean(proxy)


async def assert_pool_serves_clean(proxy: RunningProxy) -> None:
    """The next client of the pool gets a server outside any transaction."""
    conn = await proxy.asyncpg(user=MD5_USER)
    try:
        t1 = await conn.fetchval("SELECT now()")
        await conn.fetchval("SELECT pg_sleep(0.01)")
        t2 = await conn.fetchval("SELECT now()")
        assert t1 != t2, "the next client's statements ran inside a leftover transaction"
        assert await conn.fetchval("SELECT to_regclass('pg_temp.gone_probe')") is None
    finally:
        await conn.close()


async def test_terminated_idle_server_is_replaced_for_the_next_client(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection
) -> None:
    proxy = await make_proxy([pool_entry(mode="transaction", size=1)])
    conn = await proxy.asyncpg()
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        assert await pg_admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await wait_backends(pg_admin, SCRAM_USER)
        assert await conn.fetchval("SELECT 7") == 7
        assert await conn.fetchval("SELECT pg_backend_pid()") != pid
    finally:
        await conn.close()
