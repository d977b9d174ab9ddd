"""DigitalOcean's official Python client (pydo) driving pyproxy's admin API, unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.pipeline.policies import AzureKeyCredentialPolicy
from pydo import Client

from tests.support.admin_api import TOKEN, Admin, admin_config, running_admin
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import CLUSTER_ID, SCRAM_USER

T = TypeVar("T")


def pydo_client(port: int, token: str = TOKEN) -> Client:
    """pydo pointed at plain http: only the base URL and the auth policy differ from defaults."""
    return Client(
        token,
        endpoint=f"http://127.0.0.1:{port}",
        authentication_policy=AzureKeyCredentialPolicy(
            AzureKeyCredential(token), "Authorization", prefix="Bearer"
        ),
        retry_total=0,
    )


async def call(fn: Callable[..., T], *args: Any) -> T:
    """pydo blocks: run it in a thread so the proxy on this event loop keeps serving."""
    return await asyncio.to_thread(fn, *args)


@pytest.fixture
async def admin(pg: PgServer, tmp_path: Path) -> AsyncIterator[Admin]:
    async with running_admin(admin_config(pg, tmp_path / "state.db")) as a:
        yield a


async def test_pydo_lists_adds_gets_updates_and_deletes(admin: Admin) -> None:
    dbs = pydo_client(admin.app.admin_port).databases
    created = await call(
        dbs.add_connection_pool,
        CLUSTER_ID,
        {
            "name": "backend-pool",
            "mode": "transaction",
            "size": 3,
            "db": APP_DB,
            "user": SCRAM_USER,
        },
    )
    assert created["pool"]["name"] == "backend-pool"
    assert created["pool"]["connection"]["database"] == "backend-pool"

    listed = await call(dbs.list_connection_pools, CLUSTER_ID)
    assert [p["name"] for p in listed["pools"]] == ["filepool", "backend-pool"]
    got = await call(dbs.get_connection_pool, CLUSTER_ID, "backend-pool")
    assert got["pool"]["size"] == 3

    update = {"mode": "session", "size": 4, "db": APP_DB}
    assert await call(dbs.update_connection_pool, CLUSTER_ID, "backend-pool", update) is None
    got = await call(dbs.get_connection_pool, CLUSTER_ID, "backend-pool")
    assert (got["pool"]["mode"], got["pool"]["size"]) == ("session", 4)

    assert await call(dbs.delete_connection_pool, CLUSTER_ID, "backend-pool") is None
    missing = await call(dbs.get_connection_pool, CLUSTER_ID, "backend-pool")
    assert missing["id"] == "not_found"  # pydo returns a 404 body, it does not raise


async def test_pydo_gets_404_bodies_returned_for_every_operation(admin: Admin) -> None:
    dbs = pydo_client(admin.app.admin_port).databases
    unknown = "00000000-0000-4000-8000-000000000000"
    body = {"name": "nopool", "mode": "session", "size": 1, "db": APP_DB}
    results = [
        await call(dbs.list_connection_pools, unknown),
        await call(dbs.add_connection_pool, unknown, body),
        await call(dbs.get_connection_pool, CLUSTER_ID, "nopool"),
        await call(dbs.update_connection_pool, CLUSTER_ID, "nopool", body),
        await call(dbs.delete_connection_pool, CLUSTER_ID, "nopool"),
    ]
    assert [r["id"] for r in results] == ["not_found"] * 5


async def test_pydo_raises_on_422_with_the_do_error_body(admin: Admin) -> None:
    dbs = pydo_client(admin.app.admin_port).databases
    with pytest.raises(HttpResponseError) as info:
        await call(
            dbs.add_connection_pool,
            CLUSTER_ID,
            {"name": "p1-bogus", "mode": "bogus", "size": 1, "db": APP_DB},
        )
    assert info.value.status_code == 422
    error = info.value.response.json()
    assert error["id"] == "unprocessable_entity" and "mode must be one of" in error["message"]


async def test_pydo_raises_client_authentication_error_on_a_wrong_token(admin: Admin) -> None:
    dbs = pydo_client(admin.app.admin_port, token="dop_v1_wrong").databases
    with pytest.raises(ClientAuthenticationError):
        await call(dbs.list_connection_pools, CLUSTER_ID)
