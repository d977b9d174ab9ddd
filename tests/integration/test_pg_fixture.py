"""The test PostgreSQL fixture: its roles log in as promised and a local server restarts."""

from __future__ import annotations

import asyncpg
import psycopg
import pytest

from tests.support.pgcluster import APP_DB, USERS, PgServer, run_sql, start_postgres

LOGIN_KINDS = ["scram", "md5", "trust"]


def _password(kind: str) -> str:
    """What a client of this kind sends: trust logins send no password at all."""
    return "" if kind == "trust" else USERS[kind][1]


@pytest.mark.parametrize("kind", LOGIN_KINDS)
async def test_role_logs_in_to_appdb_over_tcp_with_asyncpg(pg: PgServer, kind: str) -> None:
    user = USERS[kind][0]
    conn = await asyncpg.connect(pg.dsn(user, _password(kind), APP_DB))
    try:
        row = await conn.fetchrow(
            "SELECT current_user, current_database(), inet_server_addr() IS NOT NULL AS tcp"
        )
    finally:
        await conn.close()
    assert tuple(row) == (user, APP_DB, True)


@pytest.mark.parametrize("kind", LOGIN_KINDS)
def test_role_logs_in_to_appdb_over_tcp_with_psycopg(pg: PgServer, kind: str) -> None:
    user = USERS[kind][0]
    with psycopg.connect(pg.dsn(user, _password(kind), APP_DB)) as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), inet_server_addr() IS NOT NULL"
        ).fetchone()
    assert row == (user, APP_DB, True)


@pytest.mark.parametrize("kind", LOGIN_KINDS)
async def test_role_can_create_a_table_in_appdb(pg: PgServer, kind: str) -> None:
    conn = await asyncpg.connect(pg.dsn(USERS[kind][0], _password(kind), APP_DB))
    try:
        async with conn.transaction():
            await conn.execute(f"CREATE TABLE fixture_probe_{kind} (id int)")
            await conn.execute(f"DROP TABLE fixture_probe_{kind}")
    finally:
        await conn.close()


async def test_wrong_password_for_scram_role_fails_with_28p01(pg: PgServer) -> None:
    with pytest.raises(asyncpg.InvalidPasswordError) as excinfo:
        await asyncpg.connect(pg.dsn(USERS["scram"][0], "wrong-secret", APP_DB))
    assert excinfo.value.sqlstate == "28P01"


def test_wrong_password_for_scram_role_fails_with_psycopg(pg: PgServer) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn(USERS["scram"][0], "wrong-secret", APP_DB))


async def test_nologin_role_is_refused_with_28000(pg: PgServer) -> None:
    user, password = USERS["nologin"]
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError) as excinfo:
        await asyncpg.connect(pg.dsn(user, password, APP_DB))
    assert excinfo.value.sqlstate == "28000"


async def test_trust_role_ignores_the_password_it_is_sent(pg: PgServer) -> None:
    conn = await asyncpg.connect(pg.dsn(USERS["trust"][0], "anything-at-all", APP_DB))
    await conn.close()


def test_passwords_are_stored_with_the_promised_hashes(pg: PgServer) -> None:
    rows = run_sql(
        pg,
        "SELECT rolname, split_part(rolpassword, '$', 1) FROM pg_authid "
        "WHERE rolname IN ('postgres', 'pyproxy_scram', 'pyproxy_trust', 'pyproxy_nologin') "
        "UNION ALL SELECT rolname, left(rolpassword, 3) FROM pg_authid "
        "WHERE rolname = 'pyproxy_md5' ORDER BY 1",
    )
    assert rows.split() == [
        "postgres|SCRAM-SHA-256",
        "pyproxy_md5|md5",
        "pyproxy_nologin|SCRAM-SHA-256",
        "pyproxy_scram|SCRAM-SHA-256",
        "pyproxy_trust|SCRAM-SHA-256",
    ]


def test_server_defaults_to_scram_password_encryption(pg: PgServer) -> None:
    assert run_sql(pg, "SHOW password_encryption").strip() == "scram-sha-256"


def test_superuser_dsn_reaches_appdb(pg: PgServer, pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT current_database(), usesuper FROM pg_user "
                           "WHERE usename = current_user").fetchone()  # fmt: skip
    assert row == (APP_DB, True)


def test_extra_settings_are_applied() -> None:
    server = start_postgres({"work_mem": "7MB"})
    try:
        assert run_sql(server, "SHOW work_mem").strip() == "7MB"
    finally:
        server.close()


async def test_stopped_server_refuses_connections_and_accepts_them_after_start() -> None:
    server = start_postgres()
    try:
        if not server.can_restart:
            # PYPROXY_TEST_DSN and Docker servers are not ours to stop.
            with pytest.raises(RuntimeError):
                server.stop()
            return
        server.stop()
        with pytest.raises(ConnectionRefusedError):
            await asyncpg.connect(server.dsn(dbname=APP_DB), timeout=5)
        with pytest.raises(psycopg.OperationalError, match="refused"):
            psycopg.connect(server.dsn(dbname=APP_DB), connect_timeout=5)
        server.start()
        conn = await asyncpg.connect(server.dsn(dbname=APP_DB))
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()
    finally:
        server.close()
