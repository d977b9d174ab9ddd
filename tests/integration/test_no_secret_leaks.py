"""No password, SCRAM verifier or md5 hash appears in pyproxy's log (at debug level), in an
admin API response or in an error message a client gets, over a full run with every kind of
stored secret, auth_query, failed logins, API calls and a reload."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from pyproxy.auth.scram import parse_scram_secret
from pyproxy.config import parse_config
from tests.integration.test_secrets import (
    AQ_EXPIRED,
    AQ_EXPIRED_PASSWORD,
    AQ_NULL,
    AQ_PASSWORD,
    AQ_USER,
    ensure_role,
    stored_secret,
)
from tests.support.admin_api import TOKEN, running_admin
from tests.support.pgcluster import APP_DB, PgServer, run_sql
from tests.support.proxy import (
    CLUSTER_ID,
    MD5_PASSWORD,
    MD5_USER,
    SCRAM_PASSWORD,
    SCRAM_USER,
    config_dict,
    pool_entry,
)

READER, READER_PASSWORD = "pyproxy_aq_reader", "reader-secret-7"
READER_ENV = "PYPROXY_TEST_READER_PASSWORD"
WRONG = "wrong-secret-7"
LOOKUP_SQL = f"""
CREATE OR REPLACE FUNCTION public.pyproxy_lookup(who text)
RETURNS TABLE (usename name, passwd text) LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog AS $$
  SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END
  FROM pg_authid WHERE rolname = who AND rolcanlogin
$$;
REVOKE ALL ON FUNCTION public.pyproxy_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.pyproxy_lookup(text) TO {READER};
"""


def forms(secret: str) -> list[str]:
    """A stored secret and the parts of it that could leak on their own."""
    if secret.startswith("md5"):
        return [secret, secret[3:]]
    s = parse_scram_secret(secret)
    parts = [base64.b64encode(p).decode() for p in (s.salt, s.stored_key, s.server_key)]
    return [secret, *parts]


async def login(dsn: str, errors: list[str]) -> bool:
    """Log in and run a query; a refusal's whole text goes to ``errors``."""
    try:
        conn = await asyncpg.connect(dsn, timeout=10, statement_cache_size=0)
    except asyncpg.PostgresError as exc:
        errors.append(repr(exc.as_dict()))
        return False
    try:
        await conn.fetchval("SELECT current_user")
    finally:
        await conn.close()
    return True


async def test_a_full_run_shows_no_password_or_verifier(
    pg: PgServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_role(pg, READER, READER_PASSWORD)
    ensure_role(pg, AQ_USER, AQ_PASSWORD)
    ensure_role(pg, AQ_EXPIRED, AQ_EXPIRED_PASSWORD, "2001-01-01")
    ensure_role(pg, AQ_NULL, None)
    run_sql(pg, LOOKUP_SQL, dbname=APP_DB)
    monkeypatch.setenv(READER_ENV, READER_PASSWORD)
    stored = {role: stored_secret(pg, role) for role in (SCRAM_USER, MD5_USER, AQ_USER, READER)}
    config = config_dict(
        pg,
        [
            pool_entry("leakown", user=None, size=3),
            pool_entry("leakfixed", user=SCRAM_USER, size=2),
            pool_entry("leakmd5", user=MD5_USER, size=2),
        ],
        users=[
            {"name": SCRAM_USER, "password": stored[SCRAM_USER]},
            {"name": MD5_USER, "password": stored[MD5_USER]},
            {"name": READER, "password_env": READER_ENV},
        ],
        proxy={
            "auth_type": "md5",  # md5 for the md5 hash; SCRAM for users stored as verifiers
            "auth_user": READER,
            "auth_query": "SELECT * FROM public.pyproxy_lookup($1)",
            "auth_failure_limit": 0,
        },
        admin={"enabled": True, "listen": "127.0.0.1:0", "token": TOKEN,
               "state_path": str(tmp_path / "state.db")},
    )  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="pyproxy")
    seen: list[str] = []  # client error messages and API bodies
    async with running_admin(config) as admin:
        port = admin.client_port

        def dsn(user: str, password: str, pool: str) -> str:
            return f"postgresql://{user}:{password}@127.0.0.1:{port}/{pool}"

        # No SCRAM client of the fixed user yet: pass-through is impossible (clear error).
        assert not await login(dsn(MD5_USER, MD5_PASSWORD, "leakfixed"), seen)
        for user, password, pool in [
            (SCRAM_USER, SCRAM_PASSWORD, "leakown"),
            (SCRAM_USER, SCRAM_PASSWORD, "leakfixed"),
            (MD5_USER, MD5_PASSWORD, "leakmd5"),
            (MD5_USER, MD5_PASSWORD, "leakfixed"),
            (AQ_USER, AQ_PASSWORD, "leakown"),
        ]:
            assert await login(dsn(user, password, pool), seen), seen
        async with await psycopg.AsyncConnection.connect(dsn(AQ_USER, AQ_PASSWORD, "leakown")):
            pass
        failures = [
            (SCRAM_USER, WRONG), (MD5_USER, WRONG), (AQ_USER, WRONG), (READER, WRONG),
            ("pyproxy_nobody", WRONG), (AQ_EXPIRED, AQ_EXPIRED_PASSWORD), (AQ_NULL, WRONG),
        ]  # fmt: skip
        for user, password in failures:
            assert not await login(dsn(user, password, "leakown"), seen)
        pools = f"/v2/databases/{CLUSTER_ID}/pools"
        http = admin.http
        created = await http.post(
            pools, json={"name": "leakapi", "mode": "session", "size": 1, "db": APP_DB,
                         "user": SCRAM_USER},
        )  # fmt: skip
        assert created.status_code == 201, created.text
        responses = [created]
        for path in ["/v2/databases", f"/v2/databases/{CLUSTER_ID}", pools,
                     f"/v2/databases/{CLUSTER_ID}/stats", "/metrics"]:  # fmt: skip
            responses.append(await http.get(path))
        for name in ("leakown", "leakfixed", "leakmd5", "leakapi"):
            responses.append(await http.get(f"{pools}/{name}"))
        responses.append(await http.put(f"{pools}/leakapi", json={"mode": "transaction",
                                         "size": 1, "db": APP_DB, "user": MD5_USER}))  # fmt: skip
        responses.append(await http.delete(f"{pools}/leakapi"))
        for resp in responses:
            assert resp.status_code < 300, resp.text
            seen.append(resp.text)
        listed: list[dict[str, Any]] = responses[3].json()["pools"]
        assert all("password" not in p["connection"] for p in listed), listed
        admin.app.reload(parse_config(config))
        assert await login(dsn(SCRAM_USER, SCRAM_PASSWORD, "leakfixed"), seen)
    log = caplog.text
    assert "logged in as" in log and "configuration reloaded" in log  # the log is captured
    assert len(seen) >= 20
    secrets = [SCRAM_PASSWORD, MD5_PASSWORD, AQ_PASSWORD, AQ_EXPIRED_PASSWORD, READER_PASSWORD]
    secrets += [WRONG]
    for secret in stored.values():
        secrets += forms(secret)
    haystack = "\n".join([log, *seen])
    leaked = [s for s in secrets if s in haystack]
    assert leaked == [], leaked
