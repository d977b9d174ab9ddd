"""GET /v2/databases/{uuid}/stats over real HTTP: the live figures the dashboard polls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jsonschema
import pytest

from tests.support.admin_api import (
    BUDGET,
    FILE_POOL,
    FILE_POOL_SIZE,
    POOLS,
    Admin,
    admin_config,
    running_admin,
)
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import CLUSTER_ID, SCRAM_PASSWORD, SCRAM_USER

STATS = f"/v2/databases/{CLUSTER_ID}/stats"
ONE = "onepool"  # one server: a client in a transaction makes the next one wait


@pytest.fixture
async def admin(pg: PgServer, tmp_path: Path) -> AsyncIterator[Admin]:
    async with running_admin(admin_config(pg, tmp_path / "state.db")) as running:
        body = {"name": ONE, "mode": "transaction", "size": 1, "db": APP_DB, "user": SCRAM_USER}
        assert (await running.http.post(POOLS, json=body)).status_code == 201
        yield running


async def connect(admin: Admin, pool: str = ONE) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1",
        port=admin.client_port,
        user=SCRAM_USER,
        password=SCRAM_PASSWORD,
        database=pool,
        statement_cache_size=0,
    )


def validator(doc: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """Checks a 200 body against the schema the OpenAPI document gives for this endpoint."""
    op = doc["paths"]["/v2/databases/{database_cluster_uuid}/stats"]["get"]
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": doc["components"]})


async def stats(admin: Admin) -> dict[str, Any]:
    resp = await admin.http.get(STATS)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json; charset=utf-8"
    return resp.json()["stats"]


def pool_figures(body: dict[str, Any], name: str = ONE) -> dict[str, Any]:
    return next(p for p in body["pools"] if p["name"] == name)


async def wait_for(admin: Admin, timeout: float = 5.0, **expected: Any) -> dict[str, Any]:
    """Poll the endpoint until the pool's figures show ``expected``."""
    deadline = time.monotonic() + timeout
    while True:
        figures = pool_figures(await stats(admin))
        if all(figures[k] == v for k, v in expected.items()):
            return figures
        assert time.monotonic() < deadline, f"{figures} never showed {expected}"
        await asyncio.sleep(0.02)


async def test_stats_need_the_token(admin: Admin) -> None:
    url = f"http://127.0.0.1:{admin.app.admin_port}{STATS}"
    async with httpx.AsyncClient() as anonymous:
        missing = await anonymous.get(url)
        wrong = await anonymous.get(url, headers={"Authorization": "Bearer not-the-token"})
    for resp in (missing, wrong):
        assert resp.status_code == 401
        assert resp.json()["id"] == "unauthorized"
    unknown = await admin.http.get("/v2/databases/00000000-0000-0000-0000-000000000000/stats")
    assert unknown.status_code == 404
    assert unknown.json()["id"] == "not_found"


async def test_body_follows_the_openapi_schema(admin: Admin) -> None:
    doc = (await admin.http.get("/openapi.json")).json()
    check = validator(doc)
    body = (await admin.http.get(STATS)).json()
    check.validate(body)
    # The schema is strict enough to notice a missing or an unknown field.
    broken = {"stats": {**body["stats"], "pools": [{**body["stats"]["pools"][0], "extra": 1}]}}
    assert not check.is_valid(broken)
    del broken["stats"]["pools"][0]["extra"]
    del broken["stats"]["pools"][0]["clients_waiting"]
    assert not check.is_valid(broken)


async def test_the_clusters_are_listed_for_the_dashboard_to_choose_from(admin: Admin) -> None:
    resp = await admin.http.get("/v2/databases")
    assert resp.status_code == 200
    doc = (await admin.http.get("/openapi.json")).json()
    op = doc["paths"]["/v2/databases"]["get"]
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(resp.json(), {**schema, "components": doc["components"]})
    [cluster] = resp.json()["databases"]
    assert cluster == (await admin.http.get(f"/v2/databases/{CLUSTER_ID}")).json()["database"]
    assert cluster["pools"] == [FILE_POOL, ONE]
    async with httpx.AsyncClient() as anonymous:
        url = f"http://127.0.0.1:{admin.app.admin_port}/v2/databases"
        assert (await anonymous.get(url)).status_code == 401


async def test_budget_figures_match_the_pools(admin: Admin) -> None:
    body = await stats(admin)
    assert body["cluster"] == CLUSTER_ID
    assert body["connection_budget"] == BUDGET
    assert body["pools_size_sum"] == FILE_POOL_SIZE + 1
    assert body["pools_size_free"] == BUDGET - FILE_POOL_SIZE - 1
    assert [p["name"] for p in body["pools"]] == [FILE_POOL, ONE]
    one = pool_figures(body)
    assert (one["mode"], one["size"], one["paused"]) == ("transaction", 1, False)
    cluster = (await admin.http.get(f"/v2/databases/{CLUSTER_ID}")).json()["database"]
    assert body["pools_size_free"] == cluster["pools_size_free"]
    assert abs(body["sampled_at"] - time.time()) < 5


async def test_a_held_transaction_and_a_waiting_client_show(admin: Admin) -> None:
    """One client holds the pool's only server in a transaction; a second one waits for it."""
    holder = await connect(admin)
    waiter = await connect(admin)
    try:
        idle = await wait_for(admin, clients_total=2, clients_active=0, clients_waiting=0)
        assert idle["clients_idle"] == 2
        before = idle["transactions_total"]
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT 1")
        queued = asyncio.create_task(waiter.fetchval("SELECT 42"))
        busy = await wait_for(admin, clients_waiting=1)
        assert busy["clients_active"] == 1
        assert busy["clients_idle"] == 0
        assert busy["clients_total"] == 2
        assert busy["servers_active"] == 1
        assert busy["servers_total"] == 1
        await asyncio.sleep(0.2)
        later = pool_figures(await stats(admin))
        assert later["longest_wait_seconds"] >= 0.2  # grows while the client waits
        assert later["waits_total"] == 0  # nobody was served after waiting yet
        body = await stats(admin)
        assert body["server_connections"] >= 1

        await held.commit()
        assert await asyncio.wait_for(queued, 5) == 42
        done = await wait_for(admin, clients_waiting=0, waits_total=1)
        assert done["longest_wait_seconds"] == 0
        assert done["wait_seconds_total"] >= later["longest_wait_seconds"]
        assert done["transactions_total"] >= before + 2  # the held one and the waiter's
        assert done["clients_total"] == 2
    finally:
        await holder.close()
        await waiter.close()
    await wait_for(admin, clients_total=0)


async def test_a_pool_created_or_deleted_shows_at_once(admin: Admin) -> None:
    body = {"name": "laterpool", "mode": "session", "size": 3, "db": APP_DB}
    assert (await admin.http.post(POOLS, json=body)).status_code == 201
    figures = pool_figures(await stats(admin), "laterpool")
    assert (figures["mode"], figures["size"], figures["clients_total"]) == ("session", 3, 0)
    assert (await admin.http.delete(f"{POOLS}/laterpool")).status_code == 204
    assert "laterpool" not in [p["name"] for p in (await stats(admin))["pools"]]


async def test_paused_pools_are_marked(admin: Admin) -> None:
    pause = await admin.http.post(f"{POOLS}/{ONE}/pause")
    assert pause.status_code == 200, pause.text
    assert pool_figures(await stats(admin))["paused"] is True
    assert pool_figures(await stats(admin), FILE_POOL)["paused"] is False
    assert (await admin.http.post(f"{POOLS}/{ONE}/resume")).status_code == 200
    assert pool_figures(await stats(admin))["paused"] is False
