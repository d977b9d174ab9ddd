"""Passwords pyproxy never needs in plaintext: SCRAM verifiers and md5 hashes in the config,
passwords from the environment, auth_query for roles the config does not list, and SCRAM
pass-through to PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import asyncpg
import psycopg
import pytest

from pyproxy.auth.scram import make_scram_secret, parse_scram_secret
from tests.integration.conftest import MakeProxy
from tests.support.pgcluster import APP_DB, PgServer, run_sql
from tests.support.proxy import (
    MD5_PASSWORD,
    MD5_USER,
    SCRAM_PASSWORD,
    SCRAM_USER,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    TRUST_USER,
    pool_entry,
)
from tests.support.toml_config import REPO_ROOT, SUBPROCESS_ENV

# Roles that exist only in PostgreSQL (auth_query finds them): name -> (password, attributes).
AQ_USER, AQ_PASSWORD = "pyproxy_aq_user", "aq-secret-7"
AQ_EXPIRED, AQ_EXPIRED_PASSWORD = "pyproxy_aq_expired", "aq-expired-7"
AQ_NULL = "pyproxy_aq_nopass"
AQ_POOL = "aqpool"


def ensure_role(pg: PgServer, name: str, password: str | None, until: str = "infinity") -> None:
    pw = "NULL" if password is None else f"'{password}'"
    run_sql(
        pg,
        "SET password_encryption = 'scram-sha-256'; "
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') "
        f"THEN CREATE ROLE {name}; END IF; END $$; "
        f"ALTER ROLE {name} WITH LOGIN PASSWORD {pw} VALID UNTIL '{until}'",
    )


@pytest.fixture(scope="module")
def aq_roles(pg: PgServer) -> None:
    ensure_role(pg, AQ_USER, AQ_PASSWORD)
    ensure_role(pg, AQ_EXPIRED, AQ_EXPIRED_PASSWORD, "2001-01-01")
    ensure_role(pg, AQ_NULL, None)


def stored_secret(pg: PgServer, role: str) -> str:
    return run_sql(pg, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'").strip()


def url(proxy: Any, user: str, password: str, pool: str = AQ_POOL) -> str:
    return f"postgresql://{user}:{password}@{proxy.host}:{proxy.port}/{pool}"


async def login_error(dsn: str) -> dict[str, str]:
    """The FATAL a login through asyncpg gets: severity, SQLSTATE and message."""
    with pytest.raises(asyncpg.PostgresError) as excinfo:
        conn = await asyncpg.connect(dsn, timeout=10)
        await conn.close()
    fields = excinfo.value.as_dict()
    return {k: fields[k] for k in ("severity", "sqlstate", "message")}


async def current_user(dsn: str) -> str:
    conn = await asyncpg.connect(dsn, timeout=10, statement_cache_size=0)
    try:
        return str(await conn.fetchval("SELECT current_user"))
    finally:
        await conn.close()


def auth_query_proxy(make_proxy: MakeProxy, **proxy_keys: Any) -> Any:
    """A proxy whose only plaintext password is auth_user's; a pool without a fixed user."""
    return make_proxy(
        pools=[pool_entry(AQ_POOL, user=None, size=3)],
        users=[{"name": SUPERUSER, "password": SUPERUSER_PASSWORD}],
        proxy={"auth_user": SUPERUSER, **proxy_keys},
    )


# ---- auth_query ---------------------------------------------------------------------------------


async def test_role_only_in_postgresql_logs_in_with_psql_psycopg_and_asyncpg(
    make_proxy: MakeProxy, aq_roles: None
) -> None:
    proxy = await auth_query_proxy(make_proxy)
    dsn = url(proxy, AQ_USER, AQ_PASSWORD)
    assert await current_user(dsn) == AQ_USER
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT current_user")
        assert await cur.fetchone() == (AQ_USER,)
    psql = await asyncio.create_subprocess_exec(
        "psql", "-X", "-At", "-c", "SELECT current_user", dsn,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(psql.communicate(), 30)
    assert psql.returncode == 0, err
    assert out.decode().strip() == AQ_USER


async def test_wrong_password_unknown_null_and_expired_roles_get_the_same_fatal(
    make_proxy: MakeProxy, aq_roles: None
) -> None:
    proxy = await auth_query_proxy(make_proxy, auth_failure_limit=0)
    cases = {
        AQ_USER: "not-the-password",
        "pyproxy_no_such_role": "whatever",
        AQ_NULL: "whatever",
        AQ_EXPIRED: AQ_EXPIRED_PASSWORD,  # the right password, but expired
    }
    seen = []
    for user, password in cases.items():
        error = await login_error(url(proxy, user, password))
        error["message"] = error["message"].replace(user, "<user>")
        seen.append(error)
    assert seen[0] == {
        "severity": "FATAL",
        "sqlstate": "28P01",
        "message": 'password authentication failed for user "<user>"',
    }
    assert all(e == seen[0] for e in seen), seen


async def test_pg_shadow_query_works_too_and_results_are_cached(
    make_proxy: MakeProxy, pg: PgServer, aq_roles: None
) -> None:
    proxy = await auth_query_proxy(
        make_proxy,
        auth_query="SELECT usename, passwd FROM pg_shadow WHERE usename = $1",
        auth_cache_seconds=60,
    )
    dsn = url(proxy, AQ_USER, AQ_PASSWORD)
    assert await current_user(dsn) == AQ_USER
    # Within auth_cache_seconds pyproxy checks against the secret it fetched: a new password
    # set in PostgreSQL is not seen yet (PostgreSQL itself then refuses the pass-through).
    ensure_role(pg, AQ_USER, "aq-secret-rotated")
    try:
        error = await login_error(url(proxy, AQ_USER, "aq-secret-rotated"))
        assert error["sqlstate"] == "28P01"
    finally:
        ensure_role(pg, AQ_USER, AQ_PASSWORD)


async def test_auth_cache_seconds_0_sees_a_new_password_at_once(
    make_proxy: MakeProxy, pg: PgServer, aq_roles: None
) -> None:
    proxy = await auth_query_proxy(make_proxy, auth_cache_seconds=0)
    assert await current_user(url(proxy, AQ_USER, AQ_PASSWORD)) == AQ_USER
    ensure_role(pg, AQ_USER, "aq-secret-rotated")
    try:
        assert await current_user(url(proxy, AQ_USER, "aq-secret-rotated")) == AQ_USER
    finally:
        ensure_role(pg, AQ_USER, AQ_PASSWORD)


async def test_concurrent_logins_share_two_auth_query_connections(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection, aq_roles: None
) -> None:
    proxy = await auth_query_proxy(make_proxy, auth_failure_limit=0)
    others = [("pyproxy_no_such_role", "x"), (AQ_NULL, "x"), (AQ_USER, "wrong")]
    logins = [(AQ_USER, AQ_PASSWORD)] * 12 + others * 3

    async def attempt(user: str, password: str) -> str:
        try:
            return await current_user(url(proxy, user, password))
        except asyncpg.PostgresError as exc:
            return exc.sqlstate

    results = await asyncio.gather(*(attempt(u, p) for u, p in logins))
    assert results == [AQ_USER] * 12 + ["28P01"] * 9
    auth_connections = await pg_admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND datname = $2 "
        "AND pid <> pg_backend_pid()",
        SUPERUSER, APP_DB,
    )  # fmt: skip
    assert 1 <= auth_connections <= 2


async def test_lookups_go_on_after_postgresql_ends_the_auth_query_connections(
    make_proxy: MakeProxy, pg_admin: asyncpg.Connection, aq_roles: None
) -> None:
    proxy = await auth_query_proxy(make_proxy, auth_cache_seconds=0)
    dsn = url(proxy, AQ_USER, AQ_PASSWORD)
    assert await current_user(dsn) == AQ_USER
    ended = await pg_admin.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1 "
        "AND datname = $2 AND pid <> pg_backend_pid()",
        SUPERUSER, APP_DB,
    )  # fmt: skip
    assert ended >= 1
    for _ in range(3):
        assert await current_user(dsn) == AQ_USER


async def test_a_lookup_that_cannot_run_is_a_clear_fatal_and_a_log_line(
    make_proxy: MakeProxy, aq_roles: None, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = await make_proxy(
        pools=[pool_entry(AQ_POOL, user=None)],
        users=[{"name": SCRAM_USER, "password": SCRAM_PASSWORD}],  # no right to read pg_authid
        proxy={"auth_user": SCRAM_USER},
    )
    error = await login_error(url(proxy, AQ_USER, AQ_PASSWORD))
    assert error == {
        "severity": "FATAL",
        "sqlstate": "08006",
        "message": "could not look up the user's password (auth_query); see pyproxy's log",
    }
    assert "auth_query as pyproxy_scram" in caplog.text
    assert "permission denied" in caplog.text


# ---- stored secrets in the config --------------------------------------------------------------


async def test_pass_through_with_only_postgresqls_verifier_in_the_config(
    make_proxy: MakeProxy, pg: PgServer
) -> None:
    verifier = stored_secret(pg, SCRAM_USER)
    assert verifier.startswith("SCRAM-SHA-256$")
    proxy = await make_proxy(
        pools=[pool_entry("ownpool", user=None), pool_entry("fixedpool", user=SCRAM_USER)],
        users=[{"name": SCRAM_USER, "password": verifier}],
    )
    for pool in ("ownpool", "fixedpool"):
        assert await current_user(url(proxy, SCRAM_USER, SCRAM_PASSWORD, pool)) == SCRAM_USER
    wrong = await login_error(url(proxy, SCRAM_USER, "nope", "ownpool"))
    assert (wrong["severity"], wrong["sqlstate"]) == ("FATAL", "28P01")


async def test_pass_through_cannot_work_with_a_verifier_postgresql_does_not_hold(
    make_proxy: MakeProxy,
) -> None:
    # The right password, another salt: the client gets in, PostgreSQL's salt differs.
    proxy = await make_proxy(
        pools=[pool_entry("ownpool", user=None), pool_entry("fixedpool", user=SCRAM_USER)],
        users=[
            {"name": SCRAM_USER, "password": make_scram_secret(SCRAM_PASSWORD)},
            {"name": TRUST_USER, "password": "trust-secret"},
        ],
    )
    error = await login_error(url(proxy, SCRAM_USER, SCRAM_PASSWORD, "ownpool"))
    assert error["sqlstate"] == "28P01"
    assert "another salt or iteration count" in error["message"]
    # A pool with a fixed user whose client is someone else: no SCRAM proof to pass through.
    other = await make_proxy(
        pools=[pool_entry("fixedpool", user=SCRAM_USER)],
        users=[
            {"name": SCRAM_USER, "password": make_scram_secret(SCRAM_PASSWORD)},
            {"name": TRUST_USER, "password": "trust-secret"},
        ],
    )
    error = await login_error(url(other, TRUST_USER, "trust-secret", "fixedpool"))
    assert "no client has logged in as this user with SCRAM" in error["message"]


async def test_md5_hash_in_the_config_serves_md5_clients(
    make_proxy: MakeProxy, pg: PgServer
) -> None:
    md5_hash = stored_secret(pg, MD5_USER)
    assert md5_hash.startswith("md5")
    users = [{"name": MD5_USER, "password": md5_hash}]
    pools = [pool_entry("md5pool", user=None)]
    proxy = await make_proxy(pools=pools, users=users, proxy={"auth_type": "md5"})
    dsn = url(proxy, MD5_USER, MD5_PASSWORD, "md5pool")
    assert await current_user(dsn) == MD5_USER
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT current_user")
        assert await cur.fetchone() == (MD5_USER,)
    wrong = await login_error(url(proxy, MD5_USER, "nope", "md5pool"))
    assert (wrong["severity"], wrong["sqlstate"]) == ("FATAL", "28P01")
    # SCRAM cannot be checked against an md5 hash: refused like a wrong password.
    scram = await make_proxy(pools=pools, users=users, proxy={"auth_type": "scram-sha-256"})
    refused = await login_error(url(scram, MD5_USER, MD5_PASSWORD, "md5pool"))
    assert refused == wrong


async def test_password_from_the_environment(
    make_proxy: MakeProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYPROXY_TEST_SCRAM_PASSWORD", SCRAM_PASSWORD)
    proxy = await make_proxy(
        pools=[pool_entry("envpool", user=SCRAM_USER)],
        users=[{"name": SCRAM_USER, "password_env": "PYPROXY_TEST_SCRAM_PASSWORD"}],
    )
    assert proxy.config.clusters[0].users[0].shown_password is None
    assert await current_user(url(proxy, SCRAM_USER, SCRAM_PASSWORD, "envpool")) == SCRAM_USER


# ---- pyproxy scram-secret ------------------------------------------------------------------------


async def test_scram_secret_output_is_accepted_by_postgresql_and_pyproxy(
    make_proxy: MakeProxy, pg: PgServer
) -> None:
    password = "cli-made-secret"
    proc = subprocess.run(
        [sys.executable, "-m", "pyproxy", "scram-secret"], input=password + "\n",
        cwd=REPO_ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    verifier = proc.stdout.strip()
    assert parse_scram_secret(verifier).iterations == 4096
    assert password not in proc.stdout + proc.stderr
    # PostgreSQL takes a verifier as a role's password: then it is PostgreSQL's own.
    role = "pyproxy_cli_secret"
    ensure_role(pg, role, verifier)
    direct = pg.dsn(role, password, APP_DB)
    assert await current_user(direct) == role
    proxy = await make_proxy(
        pools=[pool_entry("clipool", user=None)], users=[{"name": role, "password": verifier}]
    )
    assert await current_user(url(proxy, role, password, "clipool")) == role
    assert (await login_error(url(proxy, role, "not-it", "clipool")))["sqlstate"] == "28P01"
