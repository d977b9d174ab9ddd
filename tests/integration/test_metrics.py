"""GET /metrics: Prometheus text, read with Prometheus's own parser, whose figures match what
drivers ran: histograms of transactions, queries and queue waits, errors by SQLSTATE class,
cancels, clients and servers by state."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

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


class Scrape:
    """One /metrics answer, parsed by prometheus_client's text parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def value(self, sample: str, **labels: str) -> float:
        for family in self.families.values():
            for s in family.samples:
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        raise AssertionError(f"no sample {sample} {labels} in:\n{self.text}")

    def histogram_count(self, name: str, **labels: str) -> float:
        """The _count of a histogram, checked against its buckets (cumulative, +Inf last)."""
        family = self.families[name]
        assert family.type == "histogram"
        wanted = {"pool": FILE_POOL, **labels}
        buckets = [
            s
            for s in family.samples
            if s.name == name + "_bucket" and all(s.labels.get(k) == v for k, v in wanted.items())
        ]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts), f"{name}: buckets not cumulative"
        assert buckets[-1].labels["le"] == "+Inf"
        count = self.value(name + "_count", **wanted)
        assert counts[-1] == count
        return count


async def _scrape(http: httpx.AsyncClient) -> Scrape:
    resp = await http.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return Scrape(resp.text)


async def _until_waiting(http: httpx.AsyncClient) -> Scrape:
    """Scrape until one client of the pool waits in the queue."""
    for _ in range(200):
        got = await _scrape(http)
        if got.value("pyproxy_pool_clients", pool=FILE_POOL, state="waiting"):
            break
        await asyncio.sleep(0.01)
    assert got.value("pyproxy_pool_clients", pool=FILE_POOL, state="waiting") == 1
    return got


def _dsn(port: int) -> str:
    return (
        f"host=127.0.0.1 port={port} user={SCRAM_USER} password={SCRAM_PASSWORD} dbname={FILE_POOL}"
    )


async def _psycopg(port: int) -> psycopg.AsyncConnection[Any]:
    # prepare_threshold=None: no Parse of a named statement of its own, one ReadyForQuery a query
    return await psycopg.AsyncConnection.connect(
        _dsn(port), autocommit=True, prepare_threshold=None
    )


async def _asyncpg(port: int) -> asyncpg.Connection:
    return await asyncpg.connect(
        host="127.0.0.1",
        port=port,
        user=SCRAM_USER,
        password=SCRAM_PASSWORD,
        database=FILE_POOL,
        statement_cache_size=0,
    )


async def test_metrics_count_transactions_and_queue_waits(pg: PgServer, tmp_path: Path) -> None:
    async with running_admin(admin_config(pg, tmp_path / "state.db")) as admin:

        async def client() -> None:
            conn = await _asyncpg(admin.client_port)
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


async def test_histograms_count_what_psycopg_ran(pg: PgServer, tmp_path: Path) -> None:
    """psycopg runs 12 transactions of 15 queries (one a failed division), asyncpg 5 simple
    queries: counted exactly, by both the fast lane and the general path; the error is counted
    by its SQLSTATE class."""
    async with running_admin(admin_config(pg, tmp_path / "state.db")) as admin:
        conn = await _psycopg(admin.client_port)
        try:
            for i in range(10):  # 10 one-query transactions
                await conn.execute("SELECT %s::int", (i,))
            async with conn.transaction():  # BEGIN, 2 queries, COMMIT: 1 transaction
                await conn.execute("SELECT 1")
                await conn.execute("SELECT 2")
            with pytest.raises(psycopg.errors.DivisionByZero):
                await conn.execute("SELECT 1/0")
        finally:
            await conn.close()
        other = await _asyncpg(admin.client_port)
        try:
            for _ in range(5):  # no arguments: the simple protocol, one ReadyForQuery each
                await other.execute("SELECT 1")
        finally:
            await other.close()
        got = await _scrape(admin.http)
    assert got.histogram_count("pyproxy_pool_transaction_duration_seconds") == 17
    assert got.histogram_count("pyproxy_pool_query_duration_seconds") == 20
    assert got.value("pyproxy_pool_transactions_total", pool=FILE_POOL) == 17
    assert got.value("pyproxy_pool_queries_total", pool=FILE_POOL) == 20
    xact_sum = got.value("pyproxy_pool_transaction_duration_seconds_sum", pool=FILE_POOL)
    query_sum = got.value("pyproxy_pool_query_duration_seconds_sum", pool=FILE_POOL)
    assert query_sum > 0
    assert xact_sum > 0
    errors = {
        (s.labels["origin"], s.labels["sqlstate_class"]): s.value
        for s in got.families["pyproxy_pool_errors"].samples
    }
    assert errors == {("server", "22"): 1}
    assert got.value("pyproxy_pool_received_bytes_total", pool=FILE_POOL) > 0
    assert got.value("pyproxy_pool_sent_bytes_total", pool=FILE_POOL) > 0
    assert got.histogram_count("pyproxy_pool_server_connect_duration_seconds") >= 1
    assert got.value("process_resident_memory_bytes") > 1_000_000
    assert got.value("process_open_fds") > 3
    assert got.families["pyproxy_pool_transactions"].type == "counter"


async def test_gauges_and_wait_histogram_follow_held_transactions(
    pg: PgServer, tmp_path: Path
) -> None:
    """Two clients hold a transaction each (the pool's two servers), a third queues behind
    them; the gauges show it, then the wait histogram counts the queued client once (the
    second client may have waited too, for its server to be opened). A cancel
    of a running query is counted, and so is its 57014; so is a cancel of a queued client,
    and pyproxy's own 57014 for it."""
    assert FILE_POOL_SIZE == 2
    async with running_admin(admin_config(pg, tmp_path / "state.db")) as admin:
        port = admin.client_port
        a, b = await _asyncpg(port), await _psycopg(port)
        c = await _psycopg(port)
        try:
            held_a = a.transaction()
            await held_a.start()
            await a.fetchval("SELECT 1")
            got = await _scrape(admin.http)
            assert got.value("pyproxy_pool_clients", pool=FILE_POOL, state="active") == 1
            assert got.value("pyproxy_pool_servers", pool=FILE_POOL, state="active") == 1
            assert got.value("pyproxy_pool_clients", pool=FILE_POOL, state="idle") == 2
            await b.execute("BEGIN")
            await b.execute("SELECT 1")
            queued = asyncio.create_task(c.execute("SELECT 3"))
            got = await _until_waiting(admin.http)
            assert got.value("pyproxy_pool_clients", pool=FILE_POOL, state="active") == 2
            assert got.value("pyproxy_pool_servers", pool=FILE_POOL, state="active") == 2
            assert got.value("pyproxy_pool_servers", pool=FILE_POOL, state="idle") == 0
            waits = got.histogram_count("pyproxy_pool_wait_seconds")  # b's, if it waited
            waited = got.value("pyproxy_pool_wait_seconds_sum", pool=FILE_POOL)
            await asyncio.sleep(0.05)
            await held_a.commit()
            await asyncio.wait_for(queued, 5)
            await b.execute("COMMIT")
            got = await _scrape(admin.http)
            assert got.histogram_count("pyproxy_pool_wait_seconds") == waits + 1
            assert got.value("pyproxy_pool_wait_seconds_sum", pool=FILE_POOL) >= waited + 0.05
            assert got.value("pyproxy_pool_clients", pool=FILE_POOL, state="waiting") == 0

            sleeper = asyncio.create_task(c.execute("SELECT pg_sleep(10)"))
            await asyncio.sleep(0.2)
            await c.cancel_safe(timeout=2)
            with pytest.raises(psycopg.errors.QueryCanceled):
                await asyncio.wait_for(sleeper, 5)
            got = await _scrape(admin.http)
            assert (
                got.value("pyproxy_pool_cancel_requests_total", pool=FILE_POOL, outcome="forwarded")
                == 1
            )
            assert (
                got.value(
                    "pyproxy_pool_errors_total",
                    pool=FILE_POOL,
                    origin="server",
                    sqlstate_class="57",
                )
                == 1
            )

            # A cancel of a queued client: pyproxy answers it with its own 57014.
            await b.execute("BEGIN")
            await b.execute("SELECT 1")
            held_a = a.transaction()
            await held_a.start()
            await a.fetchval("SELECT 1")
            queued = asyncio.create_task(c.execute("SELECT 4"))
            await _until_waiting(admin.http)
            await c.cancel_safe(timeout=2)
            with pytest.raises(psycopg.errors.QueryCanceled):
                await asyncio.wait_for(queued, 5)
            got = await _scrape(admin.http)
            cancels = got.families["pyproxy_pool_cancel_requests"].samples
            assert {s.labels["outcome"]: s.value for s in cancels} == {
                "forwarded": 1,
                "dequeued": 1,
            }
            errors = got.families["pyproxy_pool_errors"].samples
            assert {(s.labels["origin"], s.labels["sqlstate_class"]): s.value for s in errors} == {
                ("server", "57"): 1,
                ("pyproxy", "57"): 1,
            }
            await held_a.commit()
            await b.execute("COMMIT")
        finally:
            await a.close()
            await b.close()
            await c.close()


async def test_metrics_off_keeps_no_per_transaction_figures(pg: PgServer, tmp_path: Path) -> None:
    config = admin_config(pg, tmp_path / "state.db")
    config["proxy"]["metrics"] = False
    async with running_admin(config) as admin:
        conn = await _psycopg(admin.client_port)
        try:
            for _ in range(3):
                await conn.execute("SELECT 1")
        finally:
            await conn.close()
        got = await _scrape(admin.http)
    assert "pyproxy_pool_transaction_duration_seconds" not in got.families
    assert "pyproxy_pool_query_duration_seconds" not in got.families
    assert "pyproxy_pool_received_bytes" not in got.families
    assert got.histogram_count("pyproxy_pool_server_connect_duration_seconds") >= 1
    assert got.value("pyproxy_pool_clients", pool=FILE_POOL, state="idle") == 0
    assert "pyproxy_pool_wait_seconds" in got.families


async def test_metrics_need_the_token(pg: PgServer, tmp_path: Path) -> None:
    async with running_admin(admin_config(pg, tmp_path / "state.db")) as admin:
        url = f"http://127.0.0.1:{admin.app.admin_port}/metrics"
        async with httpx.AsyncClient() as anonymous:
            resp = await anonymous.get(url)
        assert resp.status_code == 401
        assert resp.json()["id"] == "unauthorized"
