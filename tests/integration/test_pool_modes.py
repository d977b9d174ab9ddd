"""What each pool mode means for server reuse, session state and transaction blocks."""

from __future__ import annotations

import asyncpg
import pytest

from tests.integration.conftest import MakeProxy
from tests.support.proxy import SCRAM_USER, backends, pool_entry

STATEMENT_BLOCK = (
    "transaction blocks are not allowed in statement pooling mode: use a pool in session or "
    "transaction mode"
)


async def assert_aborted_until_rollback(conn: asyncpg.Connection) -> None:
    """After a refused block the client is in an aborted block, as after an error: every
    statement gets 25P02 until ROLLBACK, and nothing of it runs."""
    for _ in range(2):
        with pytest.raises(asyncpg.InFailedSQLTransactionError):
            await conn.execute("SELECT 5")
    await conn.execute("ROLLBACK")
    assert await conn.fetchval("SELECT 5") == 5


async def test_session_mode_keeps_one_backend_for_the_whole_connection(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(mode="session", size=3)])
    conn = await proxy.asyncpg()
    others = [await proxy.asyncpg() for _ in range(2)]
    try:
        pids = set()
        for _ in range(5):
            pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
            for other in others:
                await other.fetchval("SELECT pg_backend_pid()")
            async with conn.transaction():
                pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
        assert len(pids) == 1
    finally:
        for c in [conn, *others]:
            await c.close()


@pytest.mark.parametrize("mode", ["transaction", "statement"])
async def test_clients_take_turns_on_one_backend(make_proxy: MakeProxy, mode: str) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=1)])
    a = await proxy.asyncpg()
    b = await proxy.asyncpg()
    try:
        pids = []
        for _ in range(3):
            pids.append(await a.fetchval("SELECT pg_backend_pid()"))
            pids.append(await b.fetchval("SELECT pg_backend_pid()"))
        assert len(set(pids)) == 1
    finally:
        await a.close()
        await b.close()


async def test_session_settings_are_reset_before_the_next_client(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([pool_entry(mode="session", size=1)])
    first = await proxy.asyncpg()
    default = await first.fetchval("SHOW work_mem")
    await first.execute("SET work_mem = '77MB'")
    assert await first.fetchval("SHOW work_mem") == "77MB"
    pid = await first.fetchval("SELECT pg_backend_pid()")
    await first.close()
    second = await proxy.asyncpg()
    try:
        assert await second.fetchval("SELECT pg_backend_pid()") == pid  # same server, reset
        assert await second.fetchval("SHOW work_mem") == default
    finally:
        await second.close()


async def test_custom_reset_query_runs_on_release(make_proxy: MakeProxy) -> None:
    pool = pool_entry(mode="session", size=1, server_reset_query="RESET work_mem")
    proxy = await make_proxy([pool])
    first = await proxy.asyncpg()
    await first.execute("SET work_mem = '77MB'; SET lock_timeout = '3s'")
    await first.close()
    second = await proxy.asyncpg()
    try:
        assert await second.fetchval("SHOW work_mem") != "77MB"
        assert await second.fetchval("SHOW lock_timeout") == "3s"  # not touched by RESET work_mem
    finally:
        await second.close()


async def assert_not_in_transaction(conn: asyncpg.Connection) -> None:
    """now() is the transaction's start: two statements outside a block see different values."""
    first = await conn.fetchval("SELECT clock_timestamp() - now() < interval '1 hour', now()")
    second = await conn.fetchval("SELECT now()")
    assert first is True
    t1 = await conn.fetchval("SELECT now()")
    await conn.fetchval("SELECT pg_sleep(0.01)")
    t2 = await conn.fetchval("SELECT now()")
    assert second is not None and t1 != t2


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN",
        "begin isolation level serializable",
        "START TRANSACTION",
        "/* comment */ BEGIN",
        "BEGIN; SELECT 1",
    ],
)
async def test_statement_mode_refuses_transaction_blocks(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection, sql: str
) -> None:
    proxy = await make_proxy([pool_entry(mode="statement", size=1)])
    conn = await proxy.asyncpg()
    try:
        with pytest.raises(asyncpg.PostgresError) as excinfo:
            await conn.execute(sql)
        assert excinfo.value.sqlstate == "25001"
        assert excinfo.value.args[0] == STATEMENT_BLOCK
        assert "session or transaction" in excinfo.value.hint
        await assert_aborted_until_rollback(conn)
        await assert_not_in_transaction(conn)
        assert await backends(pg_admin, SCRAM_USER, states=["idle in transaction"]) == []
    finally:
        await conn.close()


@pytest.mark.parametrize("sql", ["SELECT 1; BEGIN", "SELECT 1; BEGIN; SELECT 2"])
async def test_statement_mode_refuses_a_block_opened_later_in_a_query(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection, sql: str
) -> None:
    proxy = await make_proxy([pool_entry(mode="statement", size=1)])
    conn = await proxy.asyncpg()
    try:
        with pytest.raises(asyncpg.PostgresError) as excinfo:
            await conn.execute(sql)
        assert excinfo.value.sqlstate == "25001"
        assert excinfo.value.args[0] == STATEMENT_BLOCK
        await assert_aborted_until_rollback(conn)
        await assert_not_in_transaction(conn)
        assert await backends(pg_admin, SCRAM_USER, states=["idle in transaction"]) == []
    finally:
        await conn.close()


async def test_statement_mode_allows_single_statements_and_implicit_blocks(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(mode="statement", size=1)])
    conn = await proxy.asyncpg()
    try:
        # A multi-statement simple query without BEGIN runs as one implicit transaction.
        await conn.execute("SELECT 1; SELECT 2")
        assert await conn.fetchval("SELECT $1::int * 2", 21) == 42
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", ["session", "transaction"])
async def test_transaction_blocks_work_in_session_and_transaction_mode(
    make_proxy: MakeProxy, mode: str
) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=1)])
    conn = await proxy.asyncpg()
    other = await proxy.asyncpg()
    try:
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE block_probe (x int) ON COMMIT DROP")
            await conn.execute("INSERT INTO block_probe VALUES (1), (2)")
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            assert await conn.fetchval("SELECT sum(x) FROM block_probe") == 3
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
        if mode == "transaction":
            assert await other.fetchval("SELECT pg_backend_pid()") == pid
    finally:
        await conn.close()
        await other.close()
