"""GET /metrics: Prometheus text with per-pool clients, servers, transactions and queue waits."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncpg
import httpx

from tests.support.admin_api import FILE_POOL, FILE_POOL_SIZE, admin_config, running_admin
from tests.support.pgcluster import PgServer
from tests.support.proxy import SCRAM_PASSWORD, SCRAM_USER


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample; fails the test if it is missing."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.partition(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels} in:\n{text}")


async def test_metrics_count_transactions_and_queue_waits(pg: PgServer, tmp_path: Path) -> None:
    async with running_admin(admin_config(pg, tmp_path / "state.db")) as admin:

        async def client() -> None:
            conn = await asyncpg.connect(
                host="127.0.0.1",
                port=admin.client_port,
                user=SCRAM_USER,
                password=SCRAM_PASSWORD,
                database=FILE_POOL,
                statement_cache_size=0,
            )
            for _ in range(3):
                await conn.fetchval("select pg_sleep(0.02)")
            await conn.close()

        # More clients than servers: some must queue.
        await asyncio.gather(*(client() for _ in range(FILE_POOL_SIZE * 3)))
        resp = await admin.http.get("/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain")
        text = resp.text
        assert _sample(text, "pyproxy_pool_size", pool=FILE_POOL) == FILE_POOL_SIZE
        assert _sample(text, "pyproxy_pool_transactions_total", pool=FILE_POOL) >= 18
        waits = _sample(text, "pyproxy_pool_wait_seconds_count", pool=FILE_POOL)
        assert waits > 0
        assert _sample(text, "pyproxy_pool_wait_seconds_bucket", pool=FILE_POOL, le="+Inf") == waits
        assert _sample(text, "pyproxy_pool_wait_seconds_sum", pool=FILE_POOL) > 0
        servers = _sample(text, "pyproxy_pool_servers", pool=FILE_POOL, state="idle")
        assert 1 <= servers <= FILE_POOL_SIZE
        assert "# TYPE pyproxy_pool_wait_seconds histogram" in text


async def test_metrics_need_the_token(pg: PgServer, tmp_path: Path) -> None:
    async with running_admin(admin_config(pg, tmp_path / "state.db")) as admin:
        url = f"http://127.0.0.1:{admin.app.admin_port}/metrics"
        async with httpx.AsyncClient() as anonymous:
            resp = await anonymous.get(url)
        assert resp.status_code == 401
        assert resp.json()["id"] == "unauthorized"
