"""Running pyproxy with its admin API enabled, and an HTTP client for it, in tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from pyproxy.app import App
from pyproxy.config import parse_config
from tests.support.pgcluster import PgServer
from tests.support.proxy import CLUSTER_ID, SCRAM_USER, config_dict, pool_entry

TOKEN = "dop_v1_admin-test-token"
BUDGET = 40
FILE_POOL = "filepool"
FILE_POOL_SIZE = 2
POOLS = f"/v2/databases/{CLUSTER_ID}/pools"
JSON_CT = "application/json; charset=utf-8"
OTHER_ID = "0b7d2f4e-6a1c-4e8f-9d3b-2c5a7e9f1b40"
DOWN_ID = "d0e1f2a3-b4c5-4d6e-8f70-8192a3b4c5d6"


def admin_config(pg: PgServer, state: Path, **cluster: Any) -> dict[str, Any]:
    """One cluster (budget BUDGET) with one file pool, md5 client auth, the admin API on."""
    return config_dict(
        pg,
        [pool_entry(FILE_POOL, size=FILE_POOL_SIZE, user=SCRAM_USER)],
        proxy={"auth_type": "md5"},
        admin={"enabled": True, "listen": "127.0.0.1:0", "token": TOKEN, "state_path": str(state)},
        cluster={"max_connections": BUDGET, **cluster},
    )


@dataclass
class Admin:
    """A started App with its admin API, and an authenticated HTTP client for that API."""

    app: App
    http: httpx.AsyncClient

    @property
    def client_port(self) -> int:
        return self.app.client_port


@contextlib.asynccontextmanager
async def running_admin(config: dict[str, Any]) -> AsyncIterator[Admin]:
    """Start an App for ``config``; stop it on exit."""
    app = App(parse_config(config))
    await app.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{app.admin_port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        ) as http:
            yield Admin(app, http)
    finally:
        await app.stop(1.0)
