"""A replay of prometheus-community/pgbouncer_exporter's scrape against the admin console: a
lib/pq-style client (simple protocol, extra_float_digits in the startup packet) running the
exporter's queries in its order, checked against every rule the exporter applies."""

from __future__ import annotations

import asyncio

from tests.support.console_client import ConsoleClient, Result
from tests.support.pgcluster import PgServer
from tests.support.proxy import SCRAM_PASSWORD, SCRAM_USER, pool_entry, running_proxy

NUMERIC_OIDS = {20, 21, 23, 700, 701, 1700}
# The lists the exporter maps to metrics (collector.go).
EXPORTED_LISTS = {
    "databases", "users", "pools", "free_clients", "used_clients", "login_clients",
    "free_servers", "used_servers", "dns_names", "dns_zones", "dns_queries",
}  # fmt: skip
# Columns read by name: labels, and the values it turns into metrics (which must be numbers).
LABELS = {
    "DATABASES": {"name", "host", "port", "database", "force_user", "pool_mode"},
    "STATS_TOTALS": {"database"},
    "POOLS": {"database", "user"},
}
VALUES = {
    "DATABASES": {
        "pool_size", "min_pool_size", "reserve_pool_size", "max_connections",
        "current_connections", "max_client_connections", "current_client_connections",
        "paused", "disabled",
    },
    "STATS_TOTALS": {
        "server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
        "xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count",
        "bind_count",
    },
    "POOLS": {
        "cl_active", "cl_waiting", "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active",
        "sv_active_cancel", "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
        "maxwait", "maxwait_us",
    },
}  # fmt: skip
TIME_COLUMNS = {"query_time", "wait_time", "xact_time"}  # scaled by 1e-6 into seconds


def numbers(result: Result, columns: set[str]) -> list[dict[str, float]]:
    """The rows' values of ``columns`` as floats, as the exporter scans them (a failure here is
    a failed scrape)."""
    oids = dict(result.columns)
    for name in columns:
        assert oids[name] in NUMERIC_OIDS, f"{name} is sent as type {oids[name]}"
    return [{k: float(v or 0) for k, v in row.items() if k in columns} for row in result.dicts()]


async def scrape(console: ConsoleClient) -> dict[tuple[str, tuple[str, ...]], float]:
    """One scrape: metric name and label values -> value; AssertionError where it would fail."""
    metrics: dict[tuple[str, tuple[str, ...]], float] = {}
    await console.run("SHOW STATS")  # getDB's ping: must succeed
    version = await console.run("SHOW VERSION;")
    assert version.names == ["version"], "exactly one column named version, or up=0"
    metrics[("pgbouncer_version_info", (version.rows[0][0] or "",))] = 1
    lists = await console.run("SHOW LISTS;")
    assert len(lists.columns) == 2
    for name, items in lists.rows:
        if name in EXPORTED_LISTS:
            metrics[(f"pgbouncer_list_{name}", ())] = float(items or "")
    assert {n for n, _ in lists.rows} >= EXPORTED_LISTS
    config = await console.run("SHOW CONFIG;")
    assert len(config.columns) in (3, 4)
    settings = {row[0]: row[1] for row in config.rows}
    for key in ("max_client_conn", "max_user_connections"):
        metrics[(f"pgbouncer_config_{key}", ())] = float(settings[key] or "")
    clients = await console.run("SHOW CLIENTS;")
    assert {"database", "user", "state", "application_name"} <= set(clients.names)
    for row in clients.dicts():
        key = ("pgbouncer_client_connections",
               (row["database"] or "", row["user"] or "", row["application_name"] or "",
                row["state"] or ""))  # fmt: skip
        metrics[key] = metrics.get(key, 0) + 1
    for command in ("DATABASES", "STATS_TOTALS", "POOLS"):
        result = await console.run(f"SHOW {command};")
        assert LABELS[command] | VALUES[command] <= set(result.names), command
        for row, values in zip(result.dicts(), numbers(result, VALUES[command]), strict=True):
            labels = tuple(row[k] or "" for k in sorted(LABELS[command]))
            for column, value in values.items():
                scale = 1e-6 if command == "STATS_TOTALS" and column in TIME_COLUMNS else 1
                metrics[(f"{command.lower()}_{column}", labels)] = value * scale
    return metrics


async def test_pgbouncer_exporter_scrape(pg: PgServer) -> None:
    proxy_cfg = {"stats_users": f"someone, {SCRAM_USER}"}
    async with running_proxy(pg, [pool_entry(size=2)], proxy=proxy_cfg) as proxy:
        app_conn = await proxy.asyncpg(server_settings={"application_name": "billing"})
        for _ in range(3):
            assert await app_conn.fetchval("SELECT 1") == 1
        console = await ConsoleClient.open(proxy.host, proxy.port, SCRAM_USER, SCRAM_PASSWORD)
        first = await scrape(console)
        second = await scrape(console)  # the exporter keeps its connection between scrapes
        assert first.keys() == second.keys()

        assert second[("pgbouncer_config_max_client_conn", ())] == 10000
        assert second[("pgbouncer_config_max_user_connections", ())] == 0
        assert second[("pgbouncer_list_databases", ())] == 1
        assert second[("pgbouncer_list_used_clients", ())] == 2  # the app and the exporter
        key = ("pgbouncer_client_connections", ("testpool", SCRAM_USER, "billing", "idle"))
        assert second[key] == 1
        assert second[("pools_cl_active", ("testpool", SCRAM_USER))] == 1
        assert second[("pools_sv_idle", ("testpool", SCRAM_USER))] == 1
        assert second[("stats_totals_xact_count", ("testpool",))] == 3
        # sorted label names: database, force_user, host, name, pool_mode, port
        db_labels = ("appdb", SCRAM_USER, proxy.config.clusters[0].host, "testpool",
                     "transaction", str(pg.port))  # fmt: skip
        assert second[("databases_pool_size", db_labels)] == 2
        assert second[("databases_current_client_connections", db_labels)] == 1
        assert any(name == "pgbouncer_version_info" for name, _ in second)
        await app_conn.close()
        await console.close()
        await asyncio.sleep(0)
