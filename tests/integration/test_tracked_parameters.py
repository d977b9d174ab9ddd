"""Tracked session parameters: each client keeps its own TimeZone, application_name and the rest."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.pgcluster import PgServer
from tests.support.proxy import pool_entry, running_proxy


@pytest.mark.parametrize("mode", ["transaction", "statement"])
async def test_two_clients_on_one_server_each_see_their_own_values(pg: PgServer, mode: str) -> None:
    async with running_proxy(pg, [pool_entry(size=1, mode=mode)]) as proxy:
        a = await proxy.asyncpg(
            server_settings={"application_name": "client_a", "TimeZone": "Asia/Tokyo"}
        )
        b = await proxy.asyncpg(server_settings={"TimeZone": "Etc/UTC"})
        try:
            pids = set()
            for _ in range(3):
                assert await a.fetchval("SHOW TimeZone") == "Asia/Tokyo"
                assert await b.fetchval("SHOW TimeZone") == "Etc/UTC"
                assert await a.fetchval("SHOW application_name") == "client_a"
                assert await b.fetchval("SHOW application_name") == ""
                pids.add(await a.fetchval("SELECT pg_backend_pid()"))
                pids.add(await b.fetchval("SELECT pg_backend_pid()"))
            assert len(pids) == 1, "both clients must have shared the pool's single server"
        finally:
            await a.close()
            await b.close()


async def test_a_set_by_one_client_does_not_reach_a_client_that_never_set_it(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=1)]) as proxy:
        a = await proxy.asyncpg()
        b = await proxy.asyncpg()
        try:
            await a.execute("SET application_name = 'set_by_a'")
            await a.execute("SET TimeZone = 'America/Lima'")
            assert await a.fetchval("SHOW application_name") == "set_by_a"
            assert await b.fetchval("SHOW application_name") == ""
            assert await b.fetchval("SHOW TimeZone") != "America/Lima"
            assert await a.fetchval("SHOW TimeZone") == "America/Lima"
            assert a.get_settings().application_name == "set_by_a"
        finally:
            await a.close()
            await b.close()


async def test_options_c_timezone_applies(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=1)]) as proxy:
        other = await proxy.asyncpg(server_settings={"TimeZone": "Etc/UTC"})
        dsn = proxy.dsn() + "?options=-c%20TimeZone%3DEurope/Lisbon"
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for _ in range(2):
                assert await other.fetchval("SHOW TimeZone") == "Etc/UTC"
                cur = await conn.execute("SHOW TimeZone")
                assert await cur.fetchone() == ("Europe/Lisbon",)
        await other.close()


async def test_any_startup_parameter_is_applied_as_postgresql_applies_it(pg: PgServer) -> None:
    """A GUC as a startup key (asyncpg's server_settings) or in options=-c: applied on every
    server the client gets, never seen by another client; a bad value ends the login."""
    async with running_proxy(pg, [pool_entry(size=1)]) as proxy:
        other = await proxy.asyncpg()
        conn = await proxy.asyncpg(server_settings={"enable_seqscan": "off", "work_mem": "7MB"})
        dsn = proxy.dsn() + "?options=-c%20search_path%3Dpyproxy_app,public%20-c%20app.tenant%3D42"
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as third:
            for _ in range(3):
                assert await conn.fetchval("SHOW enable_seqscan") == "off"
                assert await conn.fetchval("SHOW work_mem") == "7MB"
                assert await other.fetchval("SHOW enable_seqscan") == "on"
                assert await other.fetchval("SHOW work_mem") == "4MB"
                cur = await third.execute(
                    "SELECT current_setting('search_path'), current_setting('app.tenant')"
                )
                assert await cur.fetchone() == ("pyproxy_app,public", "42")
                assert await other.fetchval("SHOW search_path") == '"$user", public'
        # pyproxy greets the client itself, so PostgreSQL sees the value at the first statement
        bad_dsn = proxy.dsn() + "?options=-c%20enable_seqscan%3Dmaybe"
        async with await psycopg.AsyncConnection.connect(bad_dsn, autocommit=True) as bad:
            with pytest.raises(psycopg.Error) as info:
                await bad.execute("SELECT 1")
            assert info.value.sqlstate == "22023"
            assert "enable_seqscan" in str(info.value)
            assert bad.closed
        assert await other.fetchval("SHOW enable_seqscan") == "on"
        await conn.close()
        await other.close()


async def test_replication_connections_are_refused_by_name(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=1)]) as proxy:
        dsn = proxy.dsn() + "?replication=database"
        with pytest.raises(psycopg.OperationalError, match="replication"):
            await psycopg.AsyncConnection.connect(dsn)


async def test_extra_float_digits_and_ignored_parameters_are_accepted(pg: PgServer) -> None:
    async with running_proxy(pg, [pool_entry(size=1)]) as proxy:
        conn = await proxy.asyncpg(server_settings={"extra_float_digits": "3"})
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SHOW extra_float_digits") == "1"  # ignored: not applied
        await conn.close()
    proxy_cfg = {"ignore_startup_parameters": ["extra_float_digits", "search_path"]}
    async with running_proxy(pg, [pool_entry(size=1)], proxy=proxy_cfg) as proxy:
        conn = await proxy.asyncpg(
            server_settings={"extra_float_digits": "3", "search_path": "public"}
        )
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert await conn.fetchval("SHOW search_path") == '"$user", public'
        finally:
            await conn.close()
