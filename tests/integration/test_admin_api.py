"""The admin HTTP API against a running pyproxy and the test PostgreSQL, over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import psycopg
import pytest

from pyproxy.admin.server import AdminConfigError, AdminServer
from pyproxy.app import App
from pyproxy.config import AdminConfig, parse_config
from tests.support.admin_api import (
    BUDGET,
    DOWN_ID,
    FILE_POOL,
    FILE_POOL_SIZE,
    JSON_CT,
    OTHER_ID,
    POOLS,
    TOKEN,
    Admin,
    admin_config,
    running_admin,
)
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import (
    CLUSTER_ID,
    MD5_PASSWORD,
    MD5_USER,
    SCRAM_PASSWORD,
    SCRAM_USER,
    TRUST_USER,
    wait_backends,
)
from tests.support.wire import WireClient, error_fields


@pytest.fixture
async def admin(pg: PgServer, tmp_path: Path) -> AsyncIterator[Admin]:
    async with running_admin(admin_config(pg, tmp_path / "state.db")) as a:
        yield a


def body(name: str = "apipool", **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "mode": "transaction", "size": 3, "db": APP_DB}
    out.update(fields)
    return {k: v for k, v in out.items() if v is not ...}


async def create(admin: Admin, **fields: Any) -> dict[str, Any]:
    resp = await admin.http.post(POOLS, json=body(**fields))
    assert resp.status_code == 201, resp.text
    return resp.json()["pool"]


def assert_error(resp: httpx.Response, status: int, error_id: str, *needles: str) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == JSON_CT
    payload = resp.json()
    assert payload["id"] == error_id
    assert payload["request_id"] == resp.headers["x-request-id"]
    for needle in needles:
        assert needle in payload["message"]
    return payload["message"]


# --- the five operations and their exact success codes -----------------------------------------


async def test_list_shows_the_file_pool_marked_as_config(admin: Admin) -> None:
    resp = await admin.http.get(POOLS)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == JSON_CT
    assert len(resp.headers["x-request-id"]) == 36
    (pool,) = resp.json()["pools"]
    assert pool["name"] == FILE_POOL and pool["source"] == "config"
    assert (pool["size"], pool["mode"], pool["db"], pool["user"]) == (
        FILE_POOL_SIZE,
        "transaction",
        APP_DB,
        SCRAM_USER,
    )


async def test_create_answers_201_with_the_pool_and_its_connection(admin: Admin) -> None:
    resp = await admin.http.post(POOLS, json=body(user=SCRAM_USER))
    assert resp.status_code == 201
    assert resp.headers["content-type"] == JSON_CT
    pool = resp.json()["pool"]
    assert {k: pool[k] for k in ("name", "mode", "size", "db", "user", "source")} == {
        "name": "apipool",
        "mode": "transaction",
        "size": 3,
        "db": APP_DB,
        "user": SCRAM_USER,
        "source": "api",
    }
    conn = pool["connection"]
    assert conn == {
        "uri": f"postgresql://{SCRAM_USER}:{quote(SCRAM_PASSWORD, safe='')}@127.0.0.1:"
        f"{admin.client_port}/apipool?sslmode=disable",
        "database": "apipool",
        "host": "127.0.0.1",
        "port": admin.client_port,
        "user": SCRAM_USER,
        "password": SCRAM_PASSWORD,
        "ssl": False,
    }


async def test_get_list_update_delete_codes_and_bodies(admin: Admin) -> None:
    await create(admin)
    got = await admin.http.get(f"{POOLS}/apipool")
    assert got.status_code == 200 and got.json()["pool"]["name"] == "apipool"
    listed = (await admin.http.get(POOLS)).json()["pools"]
    assert [p["name"] for p in listed] == [FILE_POOL, "apipool"]

    put = await admin.http.put(
        f"{POOLS}/apipool", json={"mode": "session", "size": 4, "db": APP_DB, "user": MD5_USER}
    )
    assert (put.status_code, put.content) == (204, b"")
    assert put.headers["x-request-id"]
    pool = (await admin.http.get(f"{POOLS}/apipool")).json()["pool"]
    assert (pool["mode"], pool["size"], pool["user"]) == ("session", 4, MD5_USER)

    deleted = await admin.http.delete(f"{POOLS}/apipool")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert_error(await admin.http.get(f"{POOLS}/apipool"), 404, "not_found")
    assert [p["name"] for p in (await admin.http.get(POOLS)).json()["pools"]] == [FILE_POOL]


async def test_put_without_user_keeps_the_user_and_empty_user_clears_it(admin: Admin) -> None:
    await create(admin, user=SCRAM_USER)
    settings = {"mode": "transaction", "size": 3, "db": APP_DB}
    assert (await admin.http.put(f"{POOLS}/apipool", json=settings)).status_code == 204
    assert (await admin.http.get(f"{POOLS}/apipool")).json()["pool"]["user"] == SCRAM_USER
    put = await admin.http.put(f"{POOLS}/apipool", json={**settings, "user": ""})
    assert put.status_code == 204
    pool = (await admin.http.get(f"{POOLS}/apipool")).json()["pool"]
    assert pool["user"] == ""
    assert "user" not in pool["connection"] and "password" not in pool["connection"]


async def test_cluster_reports_budget_pool_sizes_and_connections_in_use(admin: Admin) -> None:
    await create(admin, size=5, user=SCRAM_USER)
    conn = await asyncpg.connect(
        f"postgresql://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{admin.client_port}/apipool",
        statement_cache_size=0,
    )
    try:
        assert await conn.fetchval("SELECT 1") == 1
        resp = await admin.http.get(f"/v2/databases/{CLUSTER_ID}")
    finally:
        await conn.close()
    assert resp.status_code == 200
    db = resp.json()["database"]
    assert (db["id"], db["engine"], db["connection_budget"]) == (CLUSTER_ID, "pg", BUDGET)
    assert (db["pools_size_sum"], db["pools_size_free"]) == (7, BUDGET - 7)
    assert db["connections_in_use"] >= 1
    assert db["pools"] == [FILE_POOL, "apipool"]


async def test_healthz_and_openapi_need_no_token(admin: Admin) -> None:
    port = admin.app.admin_port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as anon:
        health = await anon.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        doc = (await anon.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) >= {
        "/v2/databases/{database_cluster_uuid}/pools",
        "/v2/databases/{database_cluster_uuid}/pools/{pool_name}",
    }
    ops = doc["paths"]["/v2/databases/{database_cluster_uuid}/pools/{pool_name}"]
    assert set(ops["put"]["responses"]) >= {"204", "400", "401", "404", "422"}


# --- auth, 404, 405 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"]
)
async def test_missing_or_wrong_token_is_401(admin: Admin, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=str(admin.http.base_url), headers=headers) as anon:
        for method, path in [("GET", POOLS), ("POST", POOLS), ("DELETE", f"{POOLS}/x")]:
            resp = await anon.request(method, path)
            assert resp.json() == {
                "id": "unauthorized",
                "message": "Unable to authenticate you.",
                "request_id": resp.headers["x-request-id"],
            }
            assert resp.status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/databases/no-such-cluster/pools"),
        ("POST", "/v2/databases/no-such-cluster/pools"),
        ("GET", "/v2/databases/no-such-cluster"),
        ("GET", f"{POOLS}/nosuchpool"),
        ("PUT", f"{POOLS}/nosuchpool"),
        ("DELETE", f"{POOLS}/nosuchpool"),
        ("GET", "/v2/databases/no-such-cluster/stats"),
        ("GET", f"{POOLS}/a/b"),
        ("GET", "/nothing-here"),
    ],
)
async def test_unknown_cluster_pool_or_path_is_404(admin: Admin, method: str, path: str) -> None:
    kwargs = {"json": body()} if method in ("POST", "PUT") else {}
    resp = await admin.http.request(method, path, **kwargs)
    assert_error(resp, 404, "not_found")


async def test_pool_of_another_cluster_is_404_under_this_one(pg: PgServer, tmp_path: Path) -> None:
    config = admin_config(pg, tmp_path / "state.db")
    other = {**config["clusters"][0], "id": OTHER_ID, "pools": []}
    config["clusters"].append(other)
    async with running_admin(config) as admin:
        resp = await admin.http.get(f"/v2/databases/{OTHER_ID}/pools/{FILE_POOL}")
        assert_error(resp, 404, "not_found")


async def test_percent_encoded_pool_names_are_decoded(admin: Admin) -> None:
    await create(admin, name="dotted.pool")
    resp = await admin.http.get(f"{POOLS}/dotted%2Epool")
    assert resp.status_code == 200 and resp.json()["pool"]["name"] == "dotted.pool"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", f"{POOLS}/{FILE_POOL}", "GET, PUT, DELETE"),
        ("DELETE", POOLS, "GET, POST"),
        ("POST", f"/v2/databases/{CLUSTER_ID}", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
async def test_wrong_method_is_405_with_allow(
    admin: Admin, method: str, path: str, allow: str
) -> None:
    resp = await admin.http.request(method, path)
    assert_error(resp, 405, "method_not_allowed", method)
    assert resp.headers["allow"] == allow


# --- validation: 422 with a message that says what to fix ----------------------------------------


@pytest.mark.parametrize(
    ("fields", "needles"),
    [
        ({"name": ...}, ["missing required field", "name"]),
        ({"mode": ..., "size": ...}, ["missing required field", "mode, size"]),
        ({"size": True}, ["size must be an integer (got boolean)"]),
        ({"size": "3"}, ["size must be an integer (got string)"]),
        ({"size": 2.0}, ["size must be an integer (got number)"]),
        ({"name": 123}, ["name must be a string (got number)"]),
        ({"user": None}, ["user must be a string (got null)"]),
        ({"db": ["appdb"]}, ["db must be a string (got array)"]),
        ({"name": "ab"}, ["name must be 3 to 60 characters"]),
        ({"name": "x" * 61}, ["name must be 3 to 60 characters"]),
        ({"name": "bad name"}, ["may contain only"]),
        ({"name": "-dash"}, ["may contain only"]),
        ({"mode": "bogus"}, ["mode must be one of session, transaction, statement"]),
        ({"size": 0}, ["size must be at least 1"]),
        ({"db": ""}, ["db must name a database"]),
        ({"db": "no_such_db"}, ["database 'no_such_db' does not exist"]),
        ({"user": "stranger"}, ["user 'stranger' is not configured", MD5_USER]),
        ({"name": FILE_POOL}, ["pool name is not available"]),
    ],
)
async def test_invalid_create_is_422(admin: Admin, fields: dict[str, Any], needles: list[str]):
    resp = await admin.http.post(POOLS, json=body(**fields))
    assert_error(resp, 422, "unprocessable_entity", *needles)
    listed = (await admin.http.get(POOLS)).json()["pools"]
    assert [p["name"] for p in listed] == [FILE_POOL]


async def test_duplicate_api_pool_name_is_422(admin: Admin) -> None:
    await create(admin)
    resp = await admin.http.post(POOLS, json=body(size=1))
    assert_error(resp, 422, "unprocessable_entity", "pool name is not available")


async def test_names_are_unique_across_clusters(pg: PgServer, tmp_path: Path) -> None:
    config = admin_config(pg, tmp_path / "state.db")
    config["clusters"].append({**config["clusters"][0], "id": OTHER_ID, "pools": []})
    async with running_admin(config) as admin:
        resp = await admin.http.post(f"/v2/databases/{OTHER_ID}/pools", json=body(FILE_POOL))
        assert_error(resp, 422, "unprocessable_entity", "pool name is not available")


async def test_budget_refusal_names_the_numbers(admin: Admin) -> None:
    free = BUDGET - FILE_POOL_SIZE
    resp = await admin.http.post(POOLS, json=body(size=free + 1))
    assert_error(
        resp,
        422,
        "unprocessable_entity",
        f"size {free + 1} exceeds the cluster's remaining budget: {free} of {BUDGET} "
        "connections are free",
    )
    await create(admin, name="bigpool", size=free - 5)
    resp = await admin.http.post(POOLS, json=body("onemore", size=6))
    assert_error(resp, 422, "unprocessable_entity", f"5 of {BUDGET} connections are free")
    await create(admin, name="lastpool", size=5)
    put = await admin.http.put(
        f"{POOLS}/lastpool", json={"mode": "session", "size": 6, "db": APP_DB}
    )
    assert_error(put, 422, "unprocessable_entity", f"5 of {BUDGET} connections are free")
    put = await admin.http.put(
        f"{POOLS}/lastpool", json={"mode": "session", "size": 5, "db": APP_DB}
    )
    assert put.status_code == 204


@pytest.mark.parametrize(
    ("fields", "needles"),
    [
        ({"mode": ...}, ["missing required field", "mode"]),
        ({"size": -1}, ["size must be at least 1"]),
        ({"mode": "bogus"}, ["mode must be one of"]),
        ({"db": "no_such_db"}, ["does not exist"]),
        ({"user": "stranger"}, ["is not configured"]),
    ],
)
async def test_invalid_update_is_422_and_changes_nothing(
    admin: Admin, fields: dict[str, Any], needles: list[str]
) -> None:
    await create(admin)
    update = {k: v for k, v in body(**fields).items() if k != "name"}
    resp = await admin.http.put(f"{POOLS}/apipool", json=update)
    assert_error(resp, 422, "unprocessable_entity", *needles)
    pool = (await admin.http.get(f"{POOLS}/apipool")).json()["pool"]
    assert (pool["mode"], pool["size"], pool["db"]) == ("transaction", 3, APP_DB)


async def test_file_pools_cannot_be_changed_or_deleted_through_the_api(admin: Admin) -> None:
    put = await admin.http.put(
        f"{POOLS}/{FILE_POOL}", json={"mode": "session", "size": 1, "db": APP_DB}
    )
    assert_error(put, 422, "unprocessable_entity", "configuration file")
    delete = await admin.http.delete(f"{POOLS}/{FILE_POOL}")
    assert_error(delete, 422, "unprocessable_entity", "configuration file")
    pool = (await admin.http.get(f"{POOLS}/{FILE_POOL}")).json()["pool"]
    assert (pool["mode"], pool["size"]) == ("transaction", FILE_POOL_SIZE)


async def test_unreachable_cluster_is_422_could_not_be_verified(
    pg: PgServer, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    config = admin_config(pg, tmp_path / "state.db")
    config["clusters"].append(
        {**config["clusters"][0], "id": DOWN_ID, "port": closed_port, "pools": []}
    )
    async with running_admin(config) as admin:
        resp = await admin.http.post(f"/v2/databases/{DOWN_ID}/pools", json=body())
        assert_error(resp, 422, "unprocessable_entity", "could not be verified")


# --- 400, 413, 431: malformed requests --------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type", "needle"),
    [
        (b'{"name": ', "application/json", "error parsing request body"),
        (b"[1, 2]", "application/json", "must be a JSON object"),
        (b'"text"', "application/json", "must be a JSON object"),
        (b'{"size": NaN}', "application/json", "error parsing request body"),
        (b"\xff\xfe{}", "application/json", "error parsing request body"),
        (b"", "application/json", "body is required"),
        (json.dumps(body()).encode(), "text/plain", "Content-Type must be application/json"),
        (json.dumps(body()).encode(), None, "Content-Type must be application/json"),
    ],
)
async def test_malformed_bodies_are_400(
    admin: Admin, content: bytes, content_type: str | None, needle: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    for method, path in [("POST", POOLS), ("PUT", f"{POOLS}/{FILE_POOL}")]:
        resp = await admin.http.request(method, path, content=content, headers=headers)
        assert_error(resp, 400, "bad_request", needle)


async def test_content_type_parameters_are_accepted(admin: Admin) -> None:
    resp = await admin.http.post(
        POOLS,
        content=json.dumps(body()).encode(),
        headers={"content-type": "Application/JSON; charset=UTF-8"},
    )
    assert resp.status_code == 201


async def test_oversize_body_is_413_and_oversize_headers_431(admin: Admin) -> None:
    big = await admin.http.post(POOLS, json={**body(), "padding": "x" * 70_000})
    assert_error(big, 413, "payload_too_large")
    huge = await admin.http.get(POOLS, headers={"x-padding": "y" * 17_000})
    assert_error(huge, 431, "request_header_fields_too_large")
    assert (await admin.http.get(POOLS)).status_code == 200


async def test_concurrent_creates_of_one_name_give_exactly_one_201(admin: Admin) -> None:
    results = await asyncio.gather(
        *(admin.http.post(POOLS, json=body("racepool", size=1)) for _ in range(8))
    )
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [422] * 7
    names = [p["name"] for p in (await admin.http.get(POOLS)).json()["pools"]]
    assert names.count("racepool") == 1


# --- live effect ------------------------------------------------------------------------------


async def test_created_pool_is_used_at_once_by_asyncpg_and_psycopg(admin: Admin) -> None:
    uri = (await create(admin, user=SCRAM_USER))["connection"]["uri"]
    conn = await asyncpg.connect(uri, statement_cache_size=0)
    try:
        assert await conn.fetchval("SELECT current_user") == SCRAM_USER
        assert await conn.fetchval("SELECT current_database()") == APP_DB
    finally:
        await conn.close()

    def with_psycopg() -> tuple[Any, ...] | None:
        with psycopg.connect(uri, connect_timeout=10) as pconn:
            return pconn.execute("SELECT current_database()").fetchone()

    # psycopg blocks: run it in a thread so the proxy on this event loop keeps serving
    assert await asyncio.to_thread(with_psycopg) == (APP_DB,)


async def test_pool_without_user_serves_each_client_as_itself(admin: Admin) -> None:
    conn_info = (await create(admin))["connection"]
    assert conn_info["uri"] == (
        f"postgresql://127.0.0.1:{admin.client_port}/apipool?sslmode=disable"
    )
    dsn = f"postgresql://{MD5_USER}:{MD5_PASSWORD}@127.0.0.1:{conn_info['port']}/apipool"
    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    try:
        assert await conn.fetchval("SELECT current_user") == MD5_USER
    finally:
        await conn.close()


async def test_api_pool_survives_a_restart(pg: PgServer, tmp_path: Path) -> None:
    config = admin_config(pg, tmp_path / "state.db")
    async with running_admin(config) as admin:
        await create(admin, name="durable", mode="session", size=4, user=SCRAM_USER)
        await create(admin, name="dropped")
        assert (await admin.http.delete(f"{POOLS}/dropped")).status_code == 204
    async with running_admin(config) as admin:
        listed = (await admin.http.get(POOLS)).json()["pools"]
        assert [(p["name"], p["source"]) for p in listed] == [
            (FILE_POOL, "config"),
            ("durable", "api"),
        ]
        assert (listed[1]["mode"], listed[1]["size"]) == ("session", 4)
        conn = await asyncpg.connect(listed[1]["connection"]["uri"])
        try:
            assert await conn.fetchval("SELECT 42") == 42
        finally:
            await conn.close()


async def test_delete_ends_connected_clients_with_57p01_and_refuses_new_ones(
    admin: Admin,
) -> None:
    await create(admin, user=SCRAM_USER)
    idle = await WireClient.open("127.0.0.1", admin.client_port)
    busy = await WireClient.open("127.0.0.1", admin.client_port)
    try:
        for client in (idle, busy):
            assert (await client.login(MD5_USER, "apipool", MD5_PASSWORD))[-1][0] == "Z"
        assert (await busy.simple_query("BEGIN"))[-1][0] == "Z"  # holds a server link
        assert (await admin.http.delete(f"{POOLS}/apipool")).status_code == 204
        for client in (idle, busy):
            kind, payload = await client.read_message()  # type: ignore[misc]
            fields = error_fields(payload)
            assert (kind, fields["S"], fields["C"]) == ("E", "FATAL", "57P01")
            assert "apipool" in fields["M"] and "deleted" in fields["M"]
            assert await client.at_eof()
    finally:
        await idle.close()
        await busy.close()
    with pytest.raises(asyncpg.InvalidCatalogNameError, match="apipool"):
        await asyncpg.connect(
            f"postgresql://{MD5_USER}:{MD5_PASSWORD}@127.0.0.1:{admin.client_port}/apipool"
        )


@contextlib.asynccontextmanager
async def shrunk_in_transactions(
    admin: Admin, name: str, size: int, new_size: int
) -> AsyncIterator[tuple[list[asyncpg.Connection], list[Any]]]:
    """Pool ``name`` of ``size`` with one client per server, each inside a transaction (so
    every server is in use), then shrunk to ``new_size``: yields the clients and their open
    transactions, and closes the clients afterwards."""
    await create(admin, name=name, size=size, user=TRUST_USER)
    dsn = f"postgresql://{MD5_USER}:{MD5_PASSWORD}@127.0.0.1:{admin.client_port}/{name}"
    clients = [await asyncpg.connect(dsn, statement_cache_size=0) for _ in range(size)]
    try:
        txs = [c.transaction() for c in clients]
        for c, tx in zip(clients, txs, strict=True):
            await tx.start()
            await c.fetchval("SELECT 1")
        put = await admin.http.put(
            f"{POOLS}/{name}", json={"mode": "transaction", "size": new_size, "db": APP_DB}
        )
        assert put.status_code == 204
        yield clients, txs
    finally:
        for c in clients:
            await c.close()


async def test_shrinking_a_busy_pool_never_exceeds_the_new_size_after_release(
    admin: Admin, pg_admin: asyncpg.Connection
) -> None:
    user = TRUST_USER
    async with shrunk_in_transactions(admin, "shrinkpool", 4, 2) as (clients, txs):
        assert len(await wait_backends(pg_admin, user, at_most=4)) == 4
        for tx in txs:
            await tx.commit()
        await wait_backends(pg_admin, user, at_most=2)

        async def work(c: asyncpg.Connection) -> None:
            for _ in range(20):
                await c.fetchval("SELECT pg_sleep(0.002)")

        load = asyncio.gather(*(work(c) for c in clients))
        peak = 0
        while not load.done():
            peak = max(peak, len(await wait_backends(pg_admin, user, at_most=99)))
            await asyncio.sleep(0.005)
        await load
        assert peak <= 2


async def test_shrinking_a_pool_reaches_servers_their_clients_keep_busy(
    admin: Admin, pg_admin: asyncpg.Connection
) -> None:
    async with shrunk_in_transactions(admin, "shrinkbusy", 3, 1) as (clients, txs):
        stop = asyncio.get_running_loop().time() + 2.5

        async def work(c: asyncpg.Connection, tx: Any) -> None:
            await tx.commit()
            while asyncio.get_running_loop().time() < stop:
                await c.fetchval("SELECT 1")

        # Back-to-back transactions: no server idles long enough to go back to the pool on its
        # own; only the releases can bring the pool down to its new size.
        load = asyncio.gather(*(work(c, tx) for c, tx in zip(clients, txs, strict=True)))
        try:
            await wait_backends(pg_admin, TRUST_USER, at_most=1, timeout=2.0)
        finally:
            await load


# --- running without a token -------------------------------------------------------------------


async def test_no_token_needs_an_explicit_loopback_opt_in(pg: PgServer, tmp_path: Path) -> None:
    config = admin_config(pg, tmp_path / "state.db")
    del config["admin"]["token"]
    config["admin"]["allow_no_token"] = True
    app = App(parse_config(config, env={}))
    await app.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.admin_port}") as anon:
            assert (await anon.get(POOLS)).status_code == 200
        assert app.store is not None
        for cfg in (
            AdminConfig(listen_host="0.0.0.0", listen_port=0, allow_no_token=True),
            AdminConfig(listen_host="127.0.0.1", listen_port=0, allow_no_token=False),
        ):
            with pytest.raises(AdminConfigError, match="needs a token"):
                await AdminServer(cfg, app.registry, app.store).start()
    finally:
        await app.stop(1.0)


async def test_every_documented_operation_answers_a_documented_status(admin: Admin) -> None:
    doc = (await admin.http.get("/openapi.json")).json()
    await create(admin, name="docpool")
    bodies = {"post": body("docpool2"), "put": {"mode": "session", "size": 1, "db": APP_DB}}
    ops = [
        (template, method, item)
        for template, item in doc["paths"].items()
        for method in ("get", "post", "put", "delete")
        if method in item
    ]
    ops.sort(key=lambda op: op[1] == "delete")  # the pool is deleted last
    for template, method, item in ops:
        path = template.format(
            database_cluster_uuid=CLUSTER_ID, pool_name="docpool", file="dashboard.js"
        )
        no_body = template.endswith(("/pause", "/resume"))
        payload = None if no_body else bodies.get(method)
        resp = await admin.http.request(method.upper(), path, json=payload)
        assert str(resp.status_code) in item[method]["responses"], (method, path, resp.text)
        assert 200 <= resp.status_code < 300, (method, path, resp.text)
    assert len(ops) == 17
