"""Logging in through pyproxy: client auth types, refusals, and server login errors passed on."""

from __future__ import annotations

import struct

import asyncpg
import pytest

from tests.integration.conftest import MakeProxy
from tests.support.pgcluster import APP_DB, USERS, PgServer
from tests.support.proxy import (
    MD5_PASSWORD,
    MD5_USER,
    SCRAM_PASSWORD,
    SCRAM_USER,
    TRUST_USER,
    default_users,
    pool_entry,
)
from tests.support.wire import WireClient, startup_message

NOLOGIN_USER, NOLOGIN_PASSWORD = USERS["nologin"]


async def login_error(dsn: str) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as excinfo:
        conn = await asyncpg.connect(dsn, timeout=10)
        await conn.close()
    return excinfo.value


@pytest.mark.parametrize(
    ("auth_type", "user", "password"),
    [
        ("scram-sha-256", SCRAM_USER, SCRAM_PASSWORD),
        ("scram-sha-256", MD5_USER, MD5_PASSWORD),
        ("md5", SCRAM_USER, SCRAM_PASSWORD),
        ("md5", MD5_USER, MD5_PASSWORD),
        ("trust", SCRAM_USER, ""),
    ],
)
async def test_client_logs_in_with_each_auth_type(
    make_proxy: MakeProxy, auth_type: str, user: str, password: str
) -> None:
    proxy = await make_proxy(proxy={"auth_type": auth_type})
    conn = await proxy.asyncpg(user=user, password=password)
    try:
        assert await conn.fetchval("SELECT current_user") == SCRAM_USER  # the pool's user
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("proxy_table", "request_code", "payload"),
    [
        ({}, 10, b"SCRAM-SHA-256\0\0"),  # the default: AuthenticationSASL
        ({"auth_type": "md5"}, 5, None),  # AuthenticationMD5Password with a 4-byte salt
        ({"auth_type": "trust"}, 0, b""),  # AuthenticationOk at once
    ],
)
async def test_auth_type_decides_the_authentication_request(
    make_proxy: MakeProxy, proxy_table: dict[str, str], request_code: int, payload: bytes | None
) -> None:
    proxy = await make_proxy(proxy=proxy_table)
    client = await WireClient.open(proxy.host, proxy.port)
    try:
        await client.send(startup_message({"user": SCRAM_USER, "database": "testpool"}))
        msg = await client.read_message()
    finally:
        await client.close()
    assert msg is not None and msg[0] == "R"
    assert struct.unpack("!I", msg[1][:4])[0] == request_code
    assert len(msg[1]) == 8 if payload is None else msg[1][4:] == payload


@pytest.mark.parametrize("auth_type", ["scram-sha-256", "md5"])
async def test_wrong_password_and_unknown_user_fail_alike_with_28p01(
    make_proxy: MakeProxy, auth_type: str
) -> None:
    proxy = await make_proxy(proxy={"auth_type": auth_type})
    wrong = await login_error(proxy.dsn(user=SCRAM_USER, password="not-the-password"))
    unknown = await login_error(proxy.dsn(user="nobody_here", password="not-the-password"))
    assert (wrong.sqlstate, unknown.sqlstate) == ("28P01", "28P01")
    assert wrong.severity == unknown.severity == "FATAL"
    assert str(wrong) == f'password authentication failed for user "{SCRAM_USER}"'
    assert str(unknown) == 'password authentication failed for user "nobody_here"'


async def test_trust_still_refuses_an_unknown_user(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(proxy={"auth_type": "trust"})
    err = await login_error(proxy.dsn(user="nobody_here", password=""))
    assert err.sqlstate == "28P01"


async def test_unknown_pool_is_refused_with_3d000(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy()
    err = await login_error(proxy.dsn(pool="no_such_pool"))
    assert err.sqlstate == "3D000"
    assert "no_such_pool" in str(err)


@pytest.mark.parametrize(
    ("user", "password"), [(SCRAM_USER, SCRAM_PASSWORD), (MD5_USER, MD5_PASSWORD)]
)
async def test_pool_without_user_logs_in_as_the_client(
    make_proxy: MakeProxy, user: str, password: str
) -> None:
    proxy = await make_proxy([pool_entry(user=None)])
    conn = await proxy.asyncpg(user=user, password=password)
    try:
        assert await conn.fetchval("SELECT current_user") == user
    finally:
        await conn.close()


async def test_pool_without_user_keeps_users_apart(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([pool_entry(user=None, size=1)])
    first = await proxy.asyncpg(user=SCRAM_USER)
    second = await proxy.asyncpg(user=TRUST_USER)
    try:
        assert await first.fetchval("SELECT current_user") == SCRAM_USER
        assert await second.fetchval("SELECT current_user") == TRUST_USER
        assert await first.fetchval("SELECT current_user") == SCRAM_USER
    finally:
        await first.close()
        await second.close()


async def direct_login_error(pg: PgServer, user: str, password: str, db: str) -> tuple[str, str]:
    err = await login_error(pg.dsn(user, password, db))
    return err.sqlstate, str(err)


async def test_missing_server_database_reaches_client_as_3d000(
    pg: PgServer, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy([pool_entry(db="no_such_database")])
    err = await login_error(proxy.dsn())
    expected = await direct_login_error(pg, SCRAM_USER, SCRAM_PASSWORD, "no_such_database")
    assert (err.sqlstate, str(err)) == expected
    assert expected[0] == "3D000"


async def test_nologin_pool_user_reaches_client_as_28000(
    pg: PgServer, make_proxy: MakeProxy
) -> None:
    proxy = await make_proxy([pool_entry(user=NOLOGIN_USER)])
    err = await login_error(proxy.dsn())
    expected = await direct_login_error(pg, NOLOGIN_USER, NOLOGIN_PASSWORD, APP_DB)
    assert (err.sqlstate, str(err)) == expected
    assert expected[0] == "28000"


async def test_wrong_server_password_reaches_client_as_28p01(
    pg: PgServer, make_proxy: MakeProxy
) -> None:
    users = [u for u in default_users() if u["name"] != SCRAM_USER]
    users.append({"name": SCRAM_USER, "password": "stale-password"})
    proxy = await make_proxy(users=users)
    # The client knows the password pyproxy has; PostgreSQL does not accept it.
    err = await login_error(proxy.dsn(password="stale-password"))
    expected = await direct_login_error(pg, SCRAM_USER, "stale-password", APP_DB)
    assert (err.sqlstate, str(err)) == expected
    assert expected[0] == "28P01"
