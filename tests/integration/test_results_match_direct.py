"""Results and errors through pyproxy equal a direct connection's (asyncpg, psycopg 3, psql)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.integration.conftest import MakeProxy
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import MODES, SCRAM_PASSWORD, SCRAM_USER, pool_entry

UNIQUE_TABLE = "corpus_unique"

# Each statement runs alone (statement mode allows no more); errors leave no transaction open.
CORPUS = [
    "SELECT 1::int4 AS i, 2::int8 AS b, 1.5::float8 AS f, 12.345::numeric(10,3) AS n",
    "SELECT 'héllo'::text AS t, true AS yes, false AS no, '\\xdeadbeef'::bytea AS raw",
    "SELECT '2024-02-29'::date AS d, '2024-02-29 12:34:56+00'::timestamptz AS ts, "
    "'1 day 02:00'::interval AS iv",
    "SELECT '{\"a\": [1, 2]}'::jsonb AS j, ARRAY[1, NULL, 3] AS arr, "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid AS u",
    "SELECT NULL::int AS a, NULL::text AS b, NULL AS c",
    "SELECT g, g * g AS sq, repeat('x', g) AS s FROM generate_series(1, 200) AS g",
    "SELECT 1 WHERE false",
    "SELEC 1",
    "SELECT 1 / 0",
    f"INSERT INTO {UNIQUE_TABLE} (id) VALUES (1)",
    "SELECT no_such_column FROM pg_class",
    "SELECT 'abc'::int",
]


@pytest.fixture(scope="module")
async def unique_table(pg: PgServer) -> AsyncIterator[str]:
    """A table holding id 1, so inserting 1 again is a unique violation (23505)."""
    conn = await asyncpg.connect(pg.dsn(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
    try:
        await conn.execute(
            f"DROP TABLE IF EXISTS {UNIQUE_TABLE}; "
            f"CREATE TABLE {UNIQUE_TABLE} (id int PRIMARY KEY); "
            f"INSERT INTO {UNIQUE_TABLE} VALUES (1)"
        )
        yield UNIQUE_TABLE
        await conn.execute(f"DROP TABLE {UNIQUE_TABLE}")
    finally:
        await conn.close()


async def asyncpg_outcomes(conn: asyncpg.Connection) -> list[Any]:
    out: list[Any] = []
    for sql in CORPUS:
        try:
            out.append(("rows", [tuple(r.items()) for r in await conn.fetch(sql)]))
        except asyncpg.PostgresError as exc:
            out.append(("error", exc.sqlstate, str(exc), exc.detail))
    out.append(("empty", await conn.fetch("")))
    return out


async def psycopg_outcomes(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
    out: list[Any] = []
    for sql in CORPUS:
        try:
            cur = await conn.execute(sql)
            names = [d.name for d in cur.description or []]
            out.append(("rows", names, await cur.fetchall()))
        except psycopg.Error as exc:
            diag = exc.diag
            out.append(("error", exc.sqlstate, diag.message_primary, diag.message_detail))
    cur = await conn.execute("")
    out.append(("empty", cur.pgresult.status if cur.pgresult else None))
    return out


@pytest.mark.parametrize("mode", MODES)
async def test_asyncpg_results_and_errors_match_direct(
    pg: PgServer, make_proxy: MakeProxy, unique_table: str, mode: str
) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=2)])
    direct = await asyncpg.connect(pg.dsn(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
    # asyncpg's default statement cache works in session mode; the others need it off for now.
    pooled = await proxy.asyncpg(statement_cache_size=100 if mode == "session" else 0)
    try:
        expected = await asyncpg_outcomes(direct)
        got = await asyncpg_outcomes(pooled)
    finally:
        await direct.close()
        await pooled.close()
    assert got == expected
    codes = [o[1] for o in expected if o[0] == "error"]
    assert codes == ["42601", "22012", "23505", "42703", "22P02"]


@pytest.mark.parametrize("mode", MODES)
async def test_psycopg_results_and_errors_match_direct(
    pg: PgServer, make_proxy: MakeProxy, unique_table: str, mode: str
) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=2)])
    direct = await psycopg.AsyncConnection.connect(
        pg.dsn(SCRAM_USER, SCRAM_PASSWORD, APP_DB), autocommit=True
    )
    pooled = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
    try:
        expected = await psycopg_outcomes(direct)
        got = await psycopg_outcomes(pooled)
    finally:
        await direct.close()
        await pooled.close()
    assert got == expected
    assert [o[1] for o in expected if o[0] == "error"] == [
        "42601", "22012", "23505", "42703", "22P02",
    ]  # fmt: skip


async def run_psql(host: str, port: int, dbname: str, script: str) -> tuple[int, str, str]:
    env = dict(os.environ, PGPASSWORD=SCRAM_PASSWORD, PGCONNECT_TIMEOUT="5")
    proc = await asyncio.create_subprocess_exec(
        "psql", "-X", "-A", "-v", "VERBOSITY=verbose", "-h", host, "-p", str(port),
        "-U", SCRAM_USER, "-d", dbname,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(script.encode()), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("mode", MODES)
async def test_psql_output_matches_direct(
    pg: PgServer, make_proxy: MakeProxy, unique_table: str, mode: str
) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=2)])
    script = "".join(f"{sql};\n" for sql in CORPUS) + ";\n\\echo done\n"
    expected = await run_psql(pg.host, pg.port, APP_DB, script)
    got = await run_psql(proxy.host, proxy.port, "testpool", script)
    assert got == expected
    assert expected[0] == 0 and expected[1].rstrip().endswith("done")
    for code in ("42601", "22012", "23505"):
        assert f"ERROR:  {code}:" in expected[2]
