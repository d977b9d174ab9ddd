"""A plain SET of an allow-listed parameter follows its client from server to server, alone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import psycopg
import pytest

from tests.support.pgcluster import PgServer
from tests.support.proxy import SCRAM_PASSWORD, SCRAM_USER, RunningProxy, pool_entry, running_proxy

DEFAULT_PATH = '"$user", public'
SHOW = (
    "SELECT current_setting('search_path'), current_setting('statement_timeout'), pg_backend_pid()"
)


@pytest.fixture
async def proxy(pg: PgServer) -> AsyncIterator[RunningProxy]:
    async with running_proxy(pg, [pool_entry(size=2)]) as running:
        yield running


async def settings_in_tx(conn: asyncpg.Connection) -> tuple[str, str, int]:
    async with conn.transaction():
        row = await conn.fetchrow(SHOW)
    return row[0], row[1], row[2]


async def switch_servers(
    a: asyncpg.Connection, b: asyncpg.Connection, c: asyncpg.Connection
) -> tuple[tuple[str, str, int], tuple[str, str, int], tuple[str, str, int]]:
    """Run ``a`` on one server, then force it onto the other; ``b``, ``c`` see those servers.

    a takes X; b takes Y; a leaves X to c; b leaves Y, so a's next transaction must run on Y.
    """
    ta, tb, tc = a.transaction(), b.transaction(), c.transaction()
    await ta.start()
    first = await a.fetchrow(SHOW)
    await tb.start()
    seen_b = await b.fetchrow(SHOW)
    await ta.commit()
    await tc.start()
    seen_c = await c.fetchrow(SHOW)
    await tb.commit()
    second = await settings_in_tx(a)
    await tc.commit()
    assert second[2] != first[2], "a should have moved to the other server"
    assert seen_c[2] == first[2] and seen_b[2] == second[2]
    return (first[0], first[1], first[2]), (seen_b[0], seen_b[1], 0), (seen_c[0], seen_c[1], 0)


async def test_replayed_set_follows_the_client_and_nobody_else(proxy: RunningProxy) -> None:
    a, b, c = [await proxy.asyncpg() for _ in range(3)]
    await a.execute("SET search_path = pyproxy_app, public")
    await a.execute("SET statement_timeout TO '4321'")
    for _ in range(3):
        first, seen_b, seen_c = await switch_servers(a, b, c)
        assert first[:2] == ("pyproxy_app, public", "4321ms")
        again = await settings_in_tx(a)
        assert again[:2] == ("pyproxy_app, public", "4321ms")
        assert seen_b[:2] == (DEFAULT_PATH, "0") and seen_c[:2] == (DEFAULT_PATH, "0")
    # A fresh client on the same servers sees the defaults.
    fresh = await proxy.asyncpg()
    for _ in range(2):
        assert (await settings_in_tx(fresh))[:2] == (DEFAULT_PATH, "0")
    assert await a.fetchval("SHOW search_path") == "pyproxy_app, public"
    for conn in (a, b, c, fresh):
        await conn.close()


async def test_reset_and_reset_all_clear_the_replayed_values(proxy: RunningProxy) -> None:
    a, b, c = [await proxy.asyncpg() for _ in range(3)]
    await a.execute("SET search_path = pyproxy_app")
    await a.execute("SET statement_timeout = 1234")
    await a.execute("RESET search_path")
    for _ in range(2):
        first, _, _ = await switch_servers(a, b, c)
        assert first[:2] == (DEFAULT_PATH, "1234ms")
    await a.execute("SET search_path = somewhere")
    await a.execute("RESET ALL")
    for _ in range(2):
        first, _, _ = await switch_servers(a, b, c)
        assert first[:2] == (DEFAULT_PATH, "0")
    await a.execute("SET search_path = again")
    await a.execute("DISCARD ALL")
    first, _, _ = await switch_servers(a, b, c)
    assert first[:2] == (DEFAULT_PATH, "0")
    for conn in (a, b, c):
        await conn.close()


async def test_set_through_prepared_extended_statements_is_replayed(
    proxy: RunningProxy,
) -> None:
    """psycopg with prepare_threshold=0 sends SET as a named Parse/Bind/Execute."""
    info = (
        f"host={proxy.host} port={proxy.port} user={SCRAM_USER} password={SCRAM_PASSWORD} "
        "dbname=testpool"
    )
    b, c = await proxy.asyncpg(), await proxy.asyncpg()
    async with await psycopg.AsyncConnection.connect(
        info, prepare_threshold=0, autocommit=True
    ) as conn:
        await conn.execute("SET search_path TO pyproxy_psycopg, public")
        pids = set()

        async def show() -> tuple[str, int]:
            cur = await conn.execute(SHOW)
            path, _, pid = await cur.fetchone()
            return path, pid

        for _ in range(3):
            # p takes X, b takes Y, c takes X after p, so p's next transaction runs on Y.
            await conn.execute("BEGIN")
            path, first = await show()
            assert path == "pyproxy_psycopg, public"
            hold_b = b.transaction()
            await hold_b.start()
            assert (await b.fetchrow(SHOW))[0] == DEFAULT_PATH
            await conn.execute("COMMIT")
            hold_c = c.transaction()
            await hold_c.start()
            assert (await c.fetchrow(SHOW))[0] == DEFAULT_PATH
            await hold_b.commit()
            await conn.execute("BEGIN")
            path, second = await show()
            await conn.execute("COMMIT")
            await hold_c.commit()
            assert path == "pyproxy_psycopg, public"
            assert second != first
            pids.update((first, second))
        assert len(pids) == 2
    await b.close()
    await c.close()


async def test_a_set_postgresql_refused_does_not_break_later_transactions(
    proxy: RunningProxy,
) -> None:
    a, b, c = [await proxy.asyncpg() for _ in range(3)]
    await a.execute("SET statement_timeout = 2500")
    with pytest.raises(asyncpg.InvalidParameterValueError):
        await a.execute("SET statement_timeout = 'not a duration'")
    for _ in range(3):
        first, seen_b, seen_c = await switch_servers(a, b, c)
        assert first[0] == DEFAULT_PATH
        assert seen_b[1] == "0" and seen_c[1] == "0"
    assert await a.fetchval("SELECT 41 + 1") == 42
    for conn in (a, b, c):
        await conn.close()


async def test_replayed_value_with_a_trailing_comment(proxy: RunningProxy) -> None:
    a, b, c = [await proxy.asyncpg() for _ in range(3)]
    await a.execute("SET search_path = commented -- the app schema\n")
    await a.execute("SET statement_timeout = 777")
    for _ in range(2):
        first, _, _ = await switch_servers(a, b, c)
        assert first[:2] == ("commented", "777ms")
    for conn in (a, b, c):
        await conn.close()
