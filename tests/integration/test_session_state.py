"""Statements whose effect cannot be replayed on another server get a NOTICE (warn) or 0A000
(error); SET ROLE is refused unless the pool pins; session settings are replayed, silently."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.support.pgcluster import PgServer
from tests.support.proxy import SCRAM_PASSWORD, SCRAM_USER, RunningProxy, pool_entry, running_proxy

# (kind, statement, cleanup run afterwards on the same server; pools have one server)
UNSAFE = [
    ("listen", "LISTEN pyproxy_channel", "UNLISTEN pyproxy_channel"),
    ("prepare", "PREPARE {name} AS SELECT 1", "DEALLOCATE {name}"),
    ("declare_with_hold", "DECLARE {name} CURSOR WITH HOLD FOR SELECT 1", "CLOSE {name}"),
    ("temp_table", "CREATE TEMP TABLE {name} (a int)", "DROP TABLE {name}"),
    ("temp_table", "create temporary table {name} as select 1 as a", "DROP TABLE {name}"),
    ("advisory_lock", "SELECT pg_advisory_lock(4242)", "SELECT pg_advisory_unlock(4242)"),
    (
        "advisory_lock",
        "SELECT pg_try_advisory_lock_shared(1, 2)",
        "SELECT pg_advisory_unlock_all()",
    ),
]

SAFE = [
    "SELECT 1",
    "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL statement_timeout = 1000; COMMIT",
    "BEGIN; CREATE TEMP TABLE {name} (a int) ON COMMIT DROP; INSERT INTO {name} VALUES (1); COMMIT",
    "BEGIN; SELECT pg_advisory_xact_lock(77); COMMIT",
    "SELECT set_config('enable_seqscan', 'off', true)",
    "SET search_path = public",
    "SET statement_timeout = 0",
    "SELECT 'SET enable_seqscan = off; LISTEN x' AS text_in_a_string",
    "SELECT 1 -- LISTEN x; PREPARE p AS SELECT 1\n",
    "/* DECLARE c CURSOR WITH HOLD FOR SELECT 1 */ SELECT 2",
    "SELECT $$ CREATE TEMP TABLE t (a int); SELECT pg_advisory_lock(1) $$",
    'SELECT 1 AS "listen", 2 AS "reset"',
    "SELECT 'pg_advisory_lock(1)' AS note",
    "WITH settings AS (SELECT 1 AS set) SELECT set FROM settings",
    "SELECT E'it''s SET x = 1; LISTEN y' AS escaped",
    "SHOW search_path",
    "RESET search_path",
    # Session settings: replayed on every server the client gets, so nothing to report.
    "SET enable_seqscan = off",
    "SET SESSION enable_hashjoin TO off",
    "RESET enable_seqscan",
    "SELECT set_config('enable_seqscan', 'off', false)",
    "SET ROLE NONE",
    "RESET enable_hashjoin",
]


@pytest.fixture(scope="module")
async def proxy(pg: PgServer) -> AsyncIterator[RunningProxy]:
    pools = [
        pool_entry("warnpool", size=1, session_state="warn"),
        pool_entry("errpool", size=1, session_state="error"),
        pool_entry("allowpool", size=1, session_state="allow"),
    ]
    async with running_proxy(pg, pools) as running:
        yield running


def counters(proxy: RunningProxy, pool: str) -> tuple[int, int]:
    c = proxy.app.registry.pool_counters(pool)
    return c["session_state_warnings"], c["session_state_errors"]


def conninfo(proxy: RunningProxy, pool: str) -> str:
    return (
        f"host={proxy.host} port={proxy.port} user={SCRAM_USER} password={SCRAM_PASSWORD} "
        f"dbname={pool}"
    )


def fill(sql: str | None, name: str) -> str | None:
    return sql.format(name=name) if sql is not None else None


class AsyncpgNotices:
    """An asyncpg connection (simple queries via execute) that collects its NOTICEs."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.notices: list[Any] = []
        conn.add_log_listener(lambda _c, msg: self.notices.append(msg))

    async def settle(self) -> None:
        await self.conn.fetchval("SELECT 1")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("kind", "sql", "cleanup"), UNSAFE, ids=[u[1][:30] for u in UNSAFE])
async def test_unsafe_statement_warns_with_a_notice_and_is_counted(
    proxy: RunningProxy, kind: str, sql: str, cleanup: str | None
) -> None:
    name = "pp_" + uuid.uuid4().hex[:8]
    client = AsyncpgNotices(await proxy.asyncpg("warnpool"))
    before = counters(proxy, "warnpool")
    await client.conn.execute(fill(sql, name))
    await client.settle()
    assert counters(proxy, "warnpool") == (before[0] + 1, before[1])
    mine = [n for n in client.notices if "pooling mode" in n.message]
    assert len(mine) == 1
    assert fill(sql, name).split()[0] in mine[0].message
    assert "transaction pooling mode" in mine[0].message
    assert mine[0].hint and "session" in mine[0].hint
    if cleanup:
        await client.conn.execute(fill(cleanup, name))
    await client.conn.close()


@pytest.mark.parametrize(("kind", "sql", "cleanup"), UNSAFE, ids=[u[1][:30] for u in UNSAFE])
async def test_unsafe_statement_is_refused_with_0A000_under_error_policy(
    proxy: RunningProxy, kind: str, sql: str, cleanup: str | None
) -> None:
    name = "pp_" + uuid.uuid4().hex[:8]
    conn = await proxy.asyncpg("errpool")
    before = counters(proxy, "errpool")
    with pytest.raises(asyncpg.FeatureNotSupportedError) as info:
        await conn.execute(fill(sql, name))
    assert info.value.sqlstate == "0A000"
    assert "transaction pooling mode" in info.value.message
    assert "session" in (info.value.hint or "")
    assert counters(proxy, "errpool") == (before[0], before[1] + 1)
    # Refused means not run: the connection keeps working and nothing was left behind.
    assert await conn.fetchval("SELECT 1") == 1
    if kind == "temp_table":
        assert await conn.fetchval("SELECT to_regclass($1)", f"pg_temp.{name}") is None
    if kind == "prepare":
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_prepared_statements WHERE name = $1", name)
            == 0
        )
    await conn.close()


@pytest.mark.parametrize(("kind", "sql", "cleanup"), UNSAFE, ids=[u[1][:30] for u in UNSAFE])
async def test_unsafe_statement_prepared_by_psycopg_is_checked_when_it_runs(
    proxy: RunningProxy, kind: str, sql: str, cleanup: str | None
) -> None:
    """prepare_threshold=0: every statement is a named extended-protocol statement."""
    name = "pp_" + uuid.uuid4().hex[:8]
    notices: list[str] = []
    async with await psycopg.AsyncConnection.connect(
        conninfo(proxy, "warnpool"), prepare_threshold=0, autocommit=True
    ) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        before = counters(proxy, "warnpool")
        await conn.execute(fill(sql, name))
        assert counters(proxy, "warnpool") == (before[0] + 1, before[1])
        assert [n for n in notices if "pooling mode" in n]
        if cleanup:
            await conn.execute(fill(cleanup, name))
    async with await psycopg.AsyncConnection.connect(
        conninfo(proxy, "errpool"), prepare_threshold=0, autocommit=True
    ) as conn:
        before = counters(proxy, "errpool")
        with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
            await conn.execute(fill(sql, name))
        assert "session" in (info.value.diag.message_hint or "")
        assert counters(proxy, "errpool") == (before[0], before[1] + 1)
        cur = await conn.execute("SELECT 2")
        assert await cur.fetchone() == (2,)


async def test_asyncpg_cached_statement_warns_on_every_execution(proxy: RunningProxy) -> None:
    client = AsyncpgNotices(await proxy.asyncpg("warnpool", statement_cache_size=100))
    before = counters(proxy, "warnpool")
    for _ in range(3):
        assert await client.conn.fetchval("SELECT pg_advisory_lock($1)", 99) is None
        await client.conn.fetchval("SELECT pg_advisory_unlock($1)", 99)
    await client.settle()
    assert counters(proxy, "warnpool")[0] == before[0] + 3
    assert len([n for n in client.notices if "advisory" in n.message]) == 3
    await client.conn.close()
    err = await proxy.asyncpg("errpool", statement_cache_size=100)
    for _ in range(2):
        with pytest.raises(asyncpg.FeatureNotSupportedError):
            await err.fetchval("SELECT pg_advisory_lock($1)", 99)
        assert await err.fetchval("SELECT $1::int", 5) == 5
    await err.close()


@pytest.mark.parametrize("pool", ["warnpool", "errpool"])
async def test_safe_statements_trigger_nothing(proxy: RunningProxy, pool: str) -> None:
    name = "pp_" + uuid.uuid4().hex[:8]
    client = AsyncpgNotices(await proxy.asyncpg(pool))
    before = counters(proxy, pool)
    for sql in SAFE:
        await client.conn.execute(fill(sql, name))
    for sql in ("SELECT set_config('enable_seqscan', $1, true)", "SELECT $1::text AS listen"):
        await client.conn.fetchval(sql, "off")
    await client.settle()
    assert counters(proxy, pool) == before
    assert [n.message for n in client.notices] == []
    await client.conn.close()


async def test_allow_policy_runs_everything_silently(proxy: RunningProxy) -> None:
    name = "pp_" + uuid.uuid4().hex[:8]
    client = AsyncpgNotices(await proxy.asyncpg("allowpool"))
    for _kind, sql, cleanup in UNSAFE:
        await client.conn.execute(fill(sql, name))
        if cleanup:
            await client.conn.execute(fill(cleanup, name))
    await client.settle()
    assert client.notices == []
    assert counters(proxy, "allowpool") == (0, 0)
    await client.conn.close()


@pytest.mark.parametrize("pool", ["warnpool", "errpool", "allowpool"])
@pytest.mark.parametrize(
    "sql", [f"SET ROLE {SCRAM_USER}", f"SET SESSION AUTHORIZATION {SCRAM_USER}"]
)
async def test_set_role_is_never_replayed_silently(
    proxy: RunningProxy, pool: str, sql: str
) -> None:
    """Whatever the policy, short of pinning: refused with 0A000 before it runs."""
    conn = await proxy.asyncpg(pool)
    try:
        with pytest.raises(asyncpg.FeatureNotSupportedError) as info:
            await conn.execute(sql)
        assert "transaction pooling mode" in info.value.args[0]
        assert "pin" in (info.value.hint or "")
        assert await conn.fetchval("SELECT current_user = session_user") is True
    finally:
        await conn.close()
