"""Drivers with their default prepared-statement caches work through transaction pools."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import SCRAM_PASSWORD, SCRAM_USER, RunningProxy, pool_entry
from tests.support.proxy import running_proxy as start_proxy

CLIENTS = 20


@pytest.fixture(scope="module")
async def proxy(pg: PgServer) -> AsyncIterator[RunningProxy]:
    async with start_proxy(pg, [pool_entry(size=2)]) as running:
        yield running


@pytest.fixture(scope="module")
async def items(pg: PgServer) -> str:
    """A table owned by the test role, with 200 rows."""
    conn = await asyncpg.connect(pg.dsn(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
    await conn.execute(
        "DROP TABLE IF EXISTS ps_items; "
        "CREATE TABLE ps_items (id int PRIMARY KEY, name text, price numeric); "
        "INSERT INTO ps_items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 200) g"
    )
    await conn.close()
    return "ps_items"


def direct_dsn(pg: PgServer) -> str:
    return pg.dsn(SCRAM_USER, SCRAM_PASSWORD, APP_DB)


async def asyncpg_workload(dsn: str, i: int) -> list[Any]:
    """fetch, fetchrow, executemany, a prepared statement used across transactions."""
    conn = await asyncpg.connect(dsn)  # default settings: statement cache on
    out: list[Any] = []
    try:
        for k in range(15):
            rows = await conn.fetch(
                "SELECT id, name, price FROM ps_items WHERE id % $1 = $2 ORDER BY id", 7, k % 7
            )
            out.append([tuple(r) for r in rows])
            row = await conn.fetchrow("SELECT $1::int + $2::int AS s, $3::text AS t", i, k, "x")
            out.append(tuple(row))
        base = 10_000 + i * 100
        await conn.executemany(
            "INSERT INTO ps_scratch (id, client, v) VALUES ($1, $2, $3)",
            [(base + j, i, f"v{j}") for j in range(20)],
        )
        stmt = await conn.prepare("SELECT count(*), sum(id) FROM ps_scratch WHERE client = $1")
        for _ in range(5):
            async with conn.transaction():
                out.append(tuple(await stmt.fetchrow(i)))
                out.append(await conn.fetchval("SELECT name FROM ps_items WHERE id = $1", i + 1))
            out.append(await stmt.fetchval(i))
        await conn.execute("DELETE FROM ps_scratch WHERE client = $1", i)
    finally:
        await conn.close()
    return out


async def reset_scratch(pg: PgServer) -> None:
    conn = await asyncpg.connect(direct_dsn(pg))
    await conn.execute(
        "DROP TABLE IF EXISTS ps_scratch; "
        "CREATE TABLE ps_scratch (id int PRIMARY KEY, client int, v text)"
    )
    await conn.close()


async def test_asyncpg_default_settings_20_clients_match_direct(
    pg: PgServer, proxy: RunningProxy, items: str
) -> None:
    await reset_scratch(pg)
    direct = await asyncio.gather(*(asyncpg_workload(direct_dsn(pg), i) for i in range(CLIENTS)))
    proxied = await asyncio.gather(*(asyncpg_workload(proxy.dsn(), i) for i in range(CLIENTS)))
    assert proxied == direct
    assert proxy.pool_stats()["sv_total"] <= 2


async def psycopg_workload(conninfo: str, i: int) -> list[Any]:
    out: list[Any] = []
    async with await psycopg.AsyncConnection.connect(
        conninfo, prepare_threshold=0, autocommit=True
    ) as conn:
        for k in range(10):
            cur = await conn.execute(
                "SELECT id, name, price FROM ps_items WHERE id %% %s = %s ORDER BY id", (7, k % 7)
            )
            out.append(await cur.fetchall())
        async with conn.pipeline():
            curs = [
                await conn.execute("SELECT %s::int * 2, %s::text", (k, f"p{i}")) for k in range(8)
            ]
            async with conn.transaction():
                for j in range(10):
                    await conn.execute(
                        "INSERT INTO ps_scratch (id, client, v) VALUES (%s, %s, %s)",
                        (20_000 + i * 100 + j, i, "pipe"),
                    )
                total = await conn.execute(
                    "SELECT count(*) FROM ps_scratch WHERE client = %s", (i,)
                )
        for cur in curs:
            out.append(await cur.fetchall())
        out.append(await total.fetchall())
        cur = conn.cursor()
        await cur.executemany(
            "UPDATE ps_scratch SET v = %s WHERE id = %s",
            [(f"u{j}", 20_000 + i * 100 + j) for j in range(10)],
        )
        cur = await conn.execute(
            "SELECT v FROM ps_scratch WHERE client = %s ORDER BY id", (i,), prepare=True
        )
        out.append(await cur.fetchall())
        await conn.execute("DELETE FROM ps_scratch WHERE client = %s", (i,))
    return out


async def test_psycopg_always_prepare_and_pipeline_20_clients_match_direct(
    pg: PgServer, proxy: RunningProxy, items: str
) -> None:
    await reset_scratch(pg)
    direct_info = f"host={pg.host} port={pg.port} user={SCRAM_USER} "
    direct_info += f"password={SCRAM_PASSWORD} dbname={APP_DB}"
    proxy_info = f"host={proxy.host} port={proxy.port} user={SCRAM_USER} "
    proxy_info += f"password={SCRAM_PASSWORD} dbname=testpool"
    direct = await asyncio.gather(*(psycopg_workload(direct_info, i) for i in range(CLIENTS)))
    proxied = await asyncio.gather(*(psycopg_workload(proxy_info, i) for i in range(CLIENTS)))
    assert proxied == direct


async def alter_scenario(dsn: str, admin_dsn: str, warm: int) -> list[Any]:
    """Cached statements, then ALTER TABLE changes the result type under them.

    ``warm`` connections first run the query together, so every server of a pool has it.
    """
    admin = await asyncpg.connect(admin_dsn)
    table = "alt_" + uuid.uuid4().hex[:8]
    await admin.execute(f"CREATE TABLE {table} (a int); INSERT INTO {table} VALUES (1)")
    await admin.execute(f"GRANT ALL ON {table} TO PUBLIC")
    sql = f"SELECT * FROM {table}"
    a, b = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    bystander = await asyncpg.connect(dsn)
    out: list[Any] = []
    for conn in (a, b):
        out.append([tuple(r) for r in await conn.fetch(sql)])
    warmers = [await asyncpg.connect(dsn) for _ in range(warm)]
    trs = [w.transaction() for w in warmers]
    for w, tr in zip(warmers, trs, strict=True):
        await tr.start()
        await w.fetch(sql)
    for tr in trs:
        await tr.commit()
    await admin.execute(f"ALTER TABLE {table} ADD COLUMN b int DEFAULT 7")

    async def outcome(conn: asyncpg.Connection, in_tx: bool) -> Any:
        try:
            if in_tx:
                async with conn.transaction():
                    return [tuple(r) for r in await conn.fetch(sql)]
            return [tuple(r) for r in await conn.fetch(sql)]
        except asyncpg.PostgresError as exc:
            return (type(exc).__name__, exc.sqlstate)

    out.append(("a in tx", await outcome(a, True)))
    out.append(("bystander", await bystander.fetchval("SELECT $1::int + 1", 1)))
    out.append(("a again", await outcome(a, False)))
    out.append(("b", await outcome(b, False)))
    fresh = await asyncpg.connect(dsn)
    out.append(("fresh in tx", await outcome(fresh, True)))
    out.append(("fresh", await outcome(fresh, False)))
    for conn in (a, b, bystander, fresh, *warmers):
        await conn.close()
    await admin.execute(f"DROP TABLE {table}")
    await admin.close()
    return out


async def test_result_type_change_errors_only_the_client_with_the_stale_statement(
    pg: PgServer, proxy: RunningProxy
) -> None:
    admin_dsn = pg.dsn(pg.superuser, pg.superuser_password, APP_DB)
    direct = await alter_scenario(direct_dsn(pg), admin_dsn, warm=2)
    proxied = await alter_scenario(proxy.dsn(), admin_dsn, warm=2)
    assert proxied == direct
    # What PostgreSQL does: the client whose cached statement went stale inside a transaction
    # gets 0A000 (asyncpg retries it by itself outside transactions); nobody else notices.
    assert direct[2] == ("a in tx", ("InvalidCachedStatementError", "0A000"))
    assert all(not isinstance(o[1], tuple) for o in direct[3:])


async def count_prepared(conn: asyncpg.Connection) -> int:
    async with conn.transaction():
        return await conn.fetchval("SELECT count(*) FROM pg_prepared_statements")


async def test_prepared_statements_per_server_never_exceed_the_cap(pg: PgServer) -> None:
    async with start_proxy(pg, [pool_entry(size=2, max_prepared_statements=3)]) as capped:
        conns = [await asyncpg.connect(capped.dsn()) for _ in range(4)]
        seen: list[int] = []
        for round_ in range(3):
            for n in range(10):
                for c in conns:
                    assert await c.fetchval(f"SELECT $1::int + {n}", round_) == round_ + n
                    seen.append(await count_prepared(c))
        # Two clients holding both servers at once: each server's own count.
        trs = [c.transaction() for c in conns[:2]]
        for tr in trs:
            await tr.start()
        for c in conns[:2]:
            seen.append(await c.fetchval("SELECT count(*) FROM pg_prepared_statements"))
        for tr in trs:
            await tr.commit()
        assert max(seen) <= 3
        assert min(seen) >= 1
        for c in conns:
            await c.close()


async def test_asyncpg_prepare_then_execute_on_another_server(proxy: RunningProxy) -> None:
    """A statement prepared while one server was linked runs on the other one."""
    a = await asyncpg.connect(proxy.dsn())
    holder = await asyncpg.connect(proxy.dsn())
    stmt = await a.prepare("SELECT $1::text || pg_backend_pid()::text")
    pids = {int((await stmt.fetchval("f"))[1:])}
    # Let ``a`` give its server back (it keeps it only briefly between transactions), so the
    # holder's transaction takes that server and ``a`` must run the statement on the other one.
    await asyncio.sleep(0.5)
    for _ in range(4):
        tr = holder.transaction()
        await tr.start()
        held = await holder.fetchval("SELECT pg_backend_pid()")
        value = await stmt.fetchval("p")
        pid = int(value[1:])
        assert pid != held
        pids.add(pid)
        await tr.commit()
        pids.add(int((await stmt.fetchval("q"))[1:]))
    await a.close()
    await holder.close()
    assert len(pids) == 2


async def test_psycopg_pipeline_reset_leaves_other_clients_statements_working(
    pg: PgServer,
) -> None:
    """After ROLLBACK psycopg sends DEALLOCATE ALL, in a pipeline through the extended protocol."""
    async with start_proxy(pg, [pool_entry(size=1)]) as one:
        other = await asyncpg.connect(one.dsn())
        assert await other.fetchval("SELECT $1::int * 3", 2) == 6
        info = f"host={one.host} port={one.port} user={SCRAM_USER} password={SCRAM_PASSWORD} "
        info += "dbname=testpool"
        for round_ in range(3):
            # One pipeline per connection: psycopg's own statement cache goes wrong after a
            # second one, directly against PostgreSQL too.
            async with await psycopg.AsyncConnection.connect(
                info, prepare_threshold=0, autocommit=True
            ) as conn:
                async with conn.pipeline():
                    cur = await conn.execute("SELECT %s::int + 1", (round_,))
                    await conn.execute("BEGIN")
                    await conn.execute("SELECT %s::text", ("in tx",))
                    await conn.execute("ROLLBACK")
                    after = await conn.execute("SELECT %s::int + 2", (round_,))
                assert await cur.fetchone() == (round_ + 1,)
                assert await after.fetchone() == (round_ + 2,)
                assert await other.fetchval("SELECT $1::int * 3", round_) == round_ * 3
                cur = await conn.execute("SELECT %s::int + 5", (round_,))
                assert await cur.fetchone() == (round_ + 5,)
        await other.close()


async def test_asyncpg_default_settings_in_statement_mode(pg: PgServer, items: str) -> None:
    async with start_proxy(pg, [pool_entry(size=2, mode="statement")]) as stmt_proxy:

        async def work(i: int) -> list[Any]:
            conn = await asyncpg.connect(stmt_proxy.dsn())
            stmt = await conn.prepare("SELECT name FROM ps_items WHERE id = $1")
            out = [await stmt.fetchval(i + k) for k in range(1, 6)]
            out.append(await conn.fetchval("SELECT $1::int * 2", i))
            await conn.close()
            return out

        results = await asyncio.gather(*(work(i) for i in range(10)))
        assert results == [[f"item {i + k}" for k in range(1, 6)] + [i * 2] for i in range(10)]
