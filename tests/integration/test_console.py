"""The admin console (database "pgbouncer"): PgBouncer 1.25's SHOW columns through psycopg, psql
and a lib/pq-style client, values from a scripted scenario, and the admin commands."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest

from tests.integration.test_drivers import run
from tests.support.console_client import ConsoleClient
from tests.support.pgcluster import PgServer
from tests.support.proxy import (
    MD5_PASSWORD,
    MD5_USER,
    SCRAM_PASSWORD,
    SCRAM_USER,
    TRUST_PASSWORD,
    TRUST_USER,
    RunningProxy,
    config_dict,
    pool_entry,
    running_proxy,
)

# PgBouncer 1.25's columns and type letters (s=text, i=int4, N=numeric, T=timestamp as text),
# written out here from its source, independent of pyproxy's own tables.
SOCKET = (
    "type user database replication state addr port local_addr local_port connect_time "
    "request_time wait wait_us close_needed ptr link remote_pid tls application_name "
    "prepared_statements id"
)
PGBOUNCER_1_25: dict[str, tuple[str, str]] = {
    "POOLS": (
        "database user cl_active cl_waiting cl_active_cancel_req cl_waiting_cancel_req sv_active "
        "sv_active_cancel sv_being_canceled sv_idle sv_used sv_tested sv_login maxwait "
        "maxwait_us pool_mode load_balance_hosts",
        "ssiiiiiiiiiiiiiss",
    ),
    "STATS": (
        "database total_server_assignment_count total_xact_count total_query_count "
        "total_received total_sent total_xact_time total_query_time total_wait_time "
        "total_client_parse_count total_server_parse_count total_bind_count "
        "avg_server_assignment_count avg_xact_count avg_query_count avg_recv avg_sent "
        "avg_xact_time avg_query_time avg_wait_time avg_client_parse_count "
        "avg_server_parse_count avg_bind_count",
        "s" + "N" * 22,
    ),
    "STATS_TOTALS": (
        "database server_assignment_count xact_count query_count bytes_received bytes_sent "
        "xact_time query_time wait_time client_parse_count server_parse_count bind_count",
        "s" + "N" * 11,
    ),
    "STATS_AVERAGES": (
        "database server_assignment_count xact_count query_count bytes_received bytes_sent "
        "xact_time query_time wait_time avg_client_parse_count avg_server_parse_count "
        "avg_bind_count",
        "s" + "N" * 11,
    ),
    "CLIENTS": (SOCKET, "ssssssisiTTiiississii"),
    "SERVERS": (SOCKET, "ssssssisiTTiiississii"),
    "DATABASES": (
        "name host port database force_user pool_size min_pool_size reserve_pool_size "
        "server_lifetime pool_mode load_balance_hosts max_connections current_connections "
        "max_client_connections current_client_connections paused disabled",
        "ssissiiiissiiiiii",
    ),
    "USERS": (
        "name pool_size reserve_pool_size pool_mode max_user_connections current_connections "
        "max_user_client_connections current_client_connections",
        "ssssiiii",
    ),
    "LISTS": ("list items", "si"),
    "CONFIG": ("key value default changeable", "ssss"),
    "VERSION": ("version", "s"),
}
OID = {"s": 25, "T": 25, "i": 23, "N": 1700}


def expected(command: str) -> tuple[list[str], list[int]]:
    names, types = PGBOUNCER_1_25[command]
    return names.split(), [OID[t] for t in types]


CONSOLE = {"admin_users": SCRAM_USER, "stats_users": [MD5_USER]}  # both forms PgBouncer allows


@pytest.fixture
async def proxy(pg: PgServer) -> AsyncIterator[RunningProxy]:
    async with running_proxy(pg, [pool_entry(size=1)], proxy=CONSOLE) as running:
        yield running


async def admin(proxy: RunningProxy, user: str = SCRAM_USER, password: str = SCRAM_PASSWORD,
                database: str = "pgbouncer") -> ConsoleClient:  # fmt: skip
    return await ConsoleClient.open(proxy.host, proxy.port, user, password, database)


def psycopg_console(proxy: RunningProxy, user: str = SCRAM_USER) -> psycopg.Connection[Any]:
    password = SCRAM_PASSWORD if user == SCRAM_USER else MD5_PASSWORD
    return psycopg.connect(
        host=proxy.host, port=proxy.port, dbname="pgbouncer", user=user, password=password,
        autocommit=True, cursor_factory=psycopg.ClientCursor, connect_timeout=5,
    )  # fmt: skip


async def closed(conn: asyncpg.Connection) -> None:
    """Wait until the proxy has ended ``conn`` (its FATAL arrives unasked)."""
    deadline = time.monotonic() + 5
    while not conn.is_closed():
        assert time.monotonic() < deadline, "the connection was not ended"
        await asyncio.sleep(0.02)


# ---- columns ----------------------------------------------------------------------------------


async def test_every_show_command_has_pgbouncer_columns_through_psycopg(
    proxy: RunningProxy,
) -> None:
    def show_all() -> dict[str, tuple[list[str], list[int]]]:
        out = {}
        with psycopg_console(proxy) as conn:
            for command in PGBOUNCER_1_25:
                cur = conn.execute(f"SHOW {command}")
                assert cur.description is not None, command
                out[command] = (
                    [c.name for c in cur.description],
                    [c.type_code for c in cur.description],
                )
                cur.fetchall()
        return out

    got = await asyncio.to_thread(show_all)
    for command in PGBOUNCER_1_25:
        assert got[command] == expected(command), command


async def test_every_show_command_has_pgbouncer_columns_through_psql(
    proxy: RunningProxy,
) -> None:
    env = {"PGPASSWORD": SCRAM_PASSWORD, "PGCONNECT_TIMEOUT": "5", "PGSSLMODE": "disable"}
    base = ["psql", "-X", "-A", "-h", proxy.host, "-p", str(proxy.port), "-U", SCRAM_USER,
            "-d", "pgbouncer"]  # fmt: skip
    argv = list(base)
    for command in PGBOUNCER_1_25:
        argv += ["-c", f"SHOW {command};"]
    rc, out, err = await run(argv, env=env)
    assert rc == 0, err
    lines = out.splitlines()  # unaligned output: each result starts with its header line
    for command in PGBOUNCER_1_25:
        assert "|".join(expected(command)[0]) in lines, command
    rc, out, err = await run([*base, "-c", "SHOW HELP"], env=env)
    assert rc == 0 and "Console usage" in err and "KILL_CLIENT" in err, (out, err)


# ---- values follow a scripted scenario -----------------------------------------------------------


async def test_values_for_a_held_transaction_a_queued_client_and_a_killed_client(
    proxy: RunningProxy,
) -> None:
    console = await admin(proxy)
    holder = await proxy.asyncpg(server_settings={"application_name": "holder"})
    queued = await proxy.asyncpg(server_settings={"application_name": "queued"})
    tx = holder.transaction()
    await tx.start()
    await holder.fetchval("SELECT 1")
    waiting = asyncio.ensure_future(queued.fetchval("SELECT 2"))
    await proxy.wait_stats(cl_waiting=1)
    await asyncio.sleep(0.2)

    pools = (await console.run("SHOW POOLS")).dicts()
    assert len(pools) == 1
    pool = pools[0]
    assert (pool["database"], pool["user"], pool["pool_mode"]) == ("testpool", SCRAM_USER,
                                                                   "transaction")  # fmt: skip
    assert (pool["cl_active"], pool["cl_waiting"], pool["sv_active"], pool["sv_idle"]) == (
        "1", "1", "1", "0",
    )  # fmt: skip
    waited = int(pool["maxwait"] or 0) + int(pool["maxwait_us"] or 0) / 1e6
    assert 0.2 <= waited < 30
    assert pool["load_balance_hosts"] is None

    clients = {c["application_name"]: c for c in (await console.run("SHOW CLIENTS")).dicts()}
    assert clients["holder"]["state"] == "active" and clients["queued"]["state"] == "waiting"
    assert int(clients["queued"]["wait_us"] or 0) + 1e6 * int(clients["queued"]["wait"] or 0) > 0
    assert clients["holder"]["database"] == "testpool" and clients["holder"]["type"] == "C"
    ids = {c["id"] for c in clients.values()}
    assert len(ids) == len(clients), "client ids are unique"
    me = [c for c in clients.values() if c["database"] == "pgbouncer"]
    assert me and me[0]["user"] == SCRAM_USER
    servers = (await console.run("SHOW SERVERS")).dicts()
    assert [(s["type"], s["state"], s["link"]) for s in servers] == [
        ("S", "active", clients["holder"]["ptr"])
    ]
    assert int(servers[0]["remote_pid"] or 0) > 0

    tag = (await console.run(f"KILL_CLIENT {clients['holder']['id']}")).tag
    assert tag == "KILL_CLIENT"
    await closed(holder)
    assert await asyncio.wait_for(waiting, 5) == 2, "the queued client got the server"
    after = {c["application_name"] for c in (await console.run("SHOW CLIENTS")).dicts()}
    assert "holder" not in after and "queued" in after
    stats = {r["database"]: r for r in (await console.run("SHOW STATS_TOTALS")).dicts()}
    assert int(stats["testpool"]["xact_count"] or 0) >= 1
    assert int(stats["testpool"]["wait_time"] or 0) >= 200_000
    with pytest.raises(Exception) as err:
        await console.run("KILL_CLIENT 999999999")
    assert getattr(err.value, "sqlstate", None) == "3D000"
    await queued.close()
    await console.close()


# ---- admin commands ------------------------------------------------------------------------------


async def test_pause_waits_for_the_transaction_then_holds_queries_until_resume(
    proxy: RunningProxy,
) -> None:
    console = await admin(proxy)
    holder = await proxy.asyncpg()
    tx = holder.transaction()
    await tx.start()
    await holder.fetchval("SELECT 1")
    pausing = asyncio.ensure_future(console.run("PAUSE testpool"))
    await asyncio.sleep(0.3)
    assert not pausing.done(), "PAUSE returns only when running transactions are over"
    await tx.commit()
    assert (await asyncio.wait_for(pausing, 5)).tag == "PAUSE"
    other = await admin(proxy)
    dbs = {d["name"]: d for d in (await other.run("SHOW DATABASES")).dicts()}
    assert dbs["testpool"]["paused"] == "1" and dbs["testpool"]["current_connections"] == "0"
    held = asyncio.ensure_future(holder.fetchval("SELECT 42"))
    await proxy.wait_stats(cl_waiting=1)
    assert not held.done()
    with pytest.raises(Exception) as err:
        await other.run("PAUSE testpool")
    assert getattr(err.value, "sqlstate", None) == "55000"
    assert (await other.run("RESUME testpool")).tag == "RESUME"
    assert await asyncio.wait_for(held, 5) == 42
    with pytest.raises(Exception) as err:
        await other.run("RESUME")
    assert getattr(err.value, "sqlstate", None) == "55000", "RESUME when nothing is paused"
    with pytest.raises(Exception) as err:
        await other.run("PAUSE nosuchpool")
    assert getattr(err.value, "sqlstate", None) == "3D000"
    await holder.close()
    await console.close()
    await other.close()


async def test_kill_drops_clients_and_servers_and_new_ones_wait_for_resume(
    proxy: RunningProxy,
) -> None:
    console = await admin(proxy)
    victim = await proxy.asyncpg()
    assert await victim.fetchval("SELECT 1") == 1
    assert (await console.run("KILL testpool")).tag == "KILL"
    await closed(victim)
    assert proxy.pool_stats()["sv_total"] == 0
    newcomer = await proxy.asyncpg()
    query = asyncio.ensure_future(newcomer.fetchval("SELECT 3"))
    await proxy.wait_stats(cl_waiting=1)
    assert (await console.run("RESUME testpool")).tag == "RESUME"
    assert await asyncio.wait_for(query, 5) == 3
    assert (await console.run("RECONNECT")).tag == "RECONNECT"
    assert await newcomer.fetchval("SELECT 4") == 4
    await newcomer.close()
    await console.close()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def write_config(path: Path, data: dict[str, Any]) -> None:
    """The test config in TOML (tables of scalars; clusters with users and pools)."""
    lines = []
    for section in ("proxy", "admin"):
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml(v)}" for k, v in data[section].items()]
    for cluster in data["clusters"]:
        lines.append("[[clusters]]")
        lines += [f"{k} = {_toml(v)}" for k, v in cluster.items() if k not in ("users", "pools")]
        for kind in ("users", "pools"):
            for item in cluster[kind]:
                lines.append(f"[[clusters.{kind}]]")
                lines += [f"{k} = {_toml(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def test_reload_reads_the_file_and_a_stats_user_may_only_show(
    pg: PgServer, proxy: RunningProxy, tmp_path: Path
) -> None:
    path = tmp_path / "pyproxy.toml"
    data = config_dict(pg, [pool_entry(size=3)], proxy=CONSOLE)
    write_config(path, data)
    proxy.app.config = replace(proxy.app.config, path=str(path))
    console = await admin(proxy)
    assert (await console.run("RELOAD;")).tag == "RELOAD"
    dbs = {d["name"]: d for d in (await console.run("SHOW DATABASES")).dicts()}
    assert dbs["testpool"]["pool_size"] == "3"
    path.write_text("[proxy]\nnot_a_key = 1\n", encoding="utf-8")
    with pytest.raises(Exception) as err:
        await console.run("RELOAD")
    assert getattr(err.value, "sqlstate", None) == "F0000" and "not_a_key" in str(err.value)

    stats = await admin(proxy, MD5_USER, MD5_PASSWORD, database="pyproxy")
    assert (await stats.run("SHOW POOLS")).names[0] == "database"
    for command in ("PAUSE", "PAUSE testpool", "RESUME", "RELOAD", "KILL testpool",
                    "KILL_CLIENT 1", "RECONNECT", "SHUTDOWN"):  # fmt: skip
        with pytest.raises(Exception) as err:
            await stats.run(command)
        assert getattr(err.value, "sqlstate", None) == "42501", command
    assert not proxy.app.registry.is_paused("testpool")
    with pytest.raises(Exception) as err:
        await stats.run("SHOW NOTHING")
    assert getattr(err.value, "sqlstate", None) == "42601"
    assert "SHOW HELP" in (getattr(err.value, "hint", "") or "")
    assert "KILL_CLIENT" in (getattr(err.value, "hint", "") or "")
    with pytest.raises(Exception) as err:
        await admin(proxy, TRUST_USER, TRUST_PASSWORD)
    assert getattr(err.value, "sqlstate", None) == "42501", "not an admin or stats user"
    with pytest.raises(Exception) as err:
        await admin(proxy, SCRAM_USER, "wrong")
    assert getattr(err.value, "sqlstate", None) == "28P01"
    await console.close()
    await stats.close()


async def test_extended_protocol_is_refused_and_the_connection_stays_usable(
    proxy: RunningProxy,
) -> None:
    def extended() -> tuple[str, str]:
        with psycopg.connect(
            host=proxy.host, port=proxy.port, dbname="pgbouncer", user=SCRAM_USER,
            password=SCRAM_PASSWORD, autocommit=True, connect_timeout=5,
        ) as conn:  # fmt: skip
            with pytest.raises(psycopg.errors.FeatureNotSupported) as err:
                conn.execute("SHOW POOLS", prepare=True)
            version = psycopg.ClientCursor(conn).execute("SHOW VERSION").fetchone()
            return str(err.value), version[0] if version else ""

    message, version = await asyncio.to_thread(extended)
    assert "extended query protocol" in message
    assert version.startswith("pyproxy ")


async def test_shutdown_stops_the_proxy(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=1)], proxy=CONSOLE) as proxy:
        console = await admin(proxy)
        console.writer.write(b"Q\x00\x00\x00\x0dSHUTDOWN\x00")
        deadline = time.monotonic() + 5
        while not proxy.app.stopping and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert proxy.app.stopping
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError, OSError)):
            await proxy.asyncpg()
