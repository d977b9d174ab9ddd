"""SIGHUP reloads the config file without dropping healthy clients; SIGTERM shuts down gently."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psycopg
import pytest

from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import SCRAM_PASSWORD, SCRAM_USER, superuser_conn
from tests.support.toml_config import REPO_ROOT, config_text, pool_text
from tests.support.toml_config import SUBPROCESS_ENV as ENV

BOUND = 5.0


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    port: int
    config: Path
    log: Path

    def dsn(self, pool: str) -> str:
        return f"postgresql://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{self.port}/{pool}"

    async def connect(self, pool: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn(pool), statement_cache_size=0, timeout=BOUND)

    async def wait_log(self, needle: str, count: int = 1) -> str:
        deadline = time.monotonic() + BOUND
        while True:
            text = self.log.read_text()
            if text.count(needle) >= count:
                return text
            assert time.monotonic() < deadline, f"{needle!r} not logged:\n{text}"
            await asyncio.sleep(0.02)

    async def reload(self, text: str, expect: str, count: int = 1) -> str:
        self.config.write_text(text)
        self.proc.send_signal(signal.SIGHUP)
        return await self.wait_log(expect, count)


Serve = Callable[[str], Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """A factory: ``await serve(config_text)`` runs ``python -m pyproxy serve`` on it."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(text: str) -> Served:
        config = tmp_path / "pyproxy.toml"
        config.write_text(text)
        log = tmp_path / "pyproxy.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pyproxy", "serve", "-c", str(config),
                cwd=REPO_ROOT, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=err,
            )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        found = re.search(r"listening on [\d.]+:(\d+)", line)
        assert found is not None, line + log.read_text()
        return Served(proc, int(found.group(1)), config, log)

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_sighup_with_a_broken_file_keeps_serving_and_logs_why(
    pg: PgServer, serve: Serve
) -> None:
    good = config_text(pg, pool_text("keeppool"))
    served = await serve(good)
    conn = await served.connect("keeppool")
    await conn.execute("BEGIN")
    assert await conn.fetchval("SELECT 1") == 1
    text = await served.reload("[proxy\nthis is not toml", "reload refused")
    assert "not valid TOML" in text
    text = await served.reload(config_text(pg, pool_text("keeppool", size=0)), "reload refused", 2)
    assert "clusters[0].pools[0].size" in text
    assert await conn.fetchval("SELECT 2") == 2
    await conn.execute("COMMIT")
    other = await served.connect("keeppool")
    assert await other.fetchval("SELECT 3") == 3
    await other.close()
    await conn.close()
    assert served.proc.returncode is None


async def test_sighup_adds_changes_and_removes_pools_without_dropping_healthy_clients(
    pg: PgServer, serve: Serve
) -> None:
    served = await serve(config_text(pg, pool_text("keeppool"), pool_text("gonepool", size=1)))
    kept = await served.connect("keeppool")
    doomed = await served.connect("gonepool")
    assert await doomed.fetchval("SELECT 1") == 1
    await kept.execute("BEGIN")
    assert await kept.fetchval("SELECT 1") == 1
    changed = pool_text("keeppool", size=3, extra="query_timeout = 0.3")
    await served.reload(config_text(pg, changed, pool_text("newpool")), "configuration reloaded")
    assert await kept.fetchval("SELECT 2") == 2, "a client inside a transaction keeps going"
    await kept.execute("COMMIT")
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError)):
        await doomed.fetchval("SELECT 1")
    added = await served.connect("newpool")
    assert await added.fetchval("SELECT 4") == 4
    with pytest.raises(asyncpg.PostgresError) as info:
        await served.connect("gonepool")
    assert info.value.sqlstate == "3D000"
    with pytest.raises(asyncpg.PostgresError, match="query_timeout"):
        await kept.fetchval("SELECT pg_sleep(2)")
    await added.close()


async def test_sighup_with_a_rotated_password_logs_new_servers_in_with_it(
    pg: PgServer, serve: Serve
) -> None:
    role, old, new = "rotating_role", "old-secret-1", "new-secret-2"
    admin = await superuser_conn(pg)
    await admin.execute(f"DROP ROLE IF EXISTS {role}")
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{old}'")
    try:
        pool = pool_text("rotpool", size=2, user=role)
        served = await serve(config_text(pg, pool, users=((role, old),)))
        dsn = f"postgresql://{role}:{{}}@127.0.0.1:{served.port}/rotpool"
        holder = await asyncpg.connect(dsn.format(old), statement_cache_size=0)
        await holder.execute("BEGIN")  # keeps the pool's first server busy
        assert await holder.fetchval("SELECT 1") == 1
        # The password changes in PostgreSQL, then in the file, which is reloaded.
        await admin.execute(f"ALTER ROLE {role} PASSWORD '{new}'")
        await served.reload(config_text(pg, pool, users=((role, new),)), "configuration reloaded")
        # A second client needs a second server: its login must use the new password.
        other = await asyncpg.connect(dsn.format(new), statement_cache_size=0, timeout=BOUND)
        # (With the old password the login fails and the query would wait for the holder.)
        assert await asyncio.wait_for(other.fetchval("SELECT current_user"), BOUND) == role
        assert await holder.fetchval("SELECT 2") == 2, "the open transaction goes on"
        await holder.execute("COMMIT")
        await other.close()
        await holder.close()
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        for _ in range(50):
            left = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role
            )
            if not left:
                break
            await asyncio.sleep(0.1)
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


async def test_sighup_lowering_server_lifetime_reaches_a_server_its_client_keeps_busy(
    pg: PgServer, serve: Serve
) -> None:
    served = await serve(config_text(pg, pool_text("lifepool", size=1)))
    conn = await served.connect("lifepool")
    first = await conn.fetchval("SELECT pg_backend_pid()")
    shorter = pool_text("lifepool", size=1, extra="server_lifetime = 0.3")
    await served.reload(config_text(pg, shorter), "configuration reloaded")
    # Back-to-back transactions: the client keeps its server between them, never idle long
    # enough for the janitor; only the release check can retire it.
    pids = {first}
    stop = time.monotonic() + 1.5
    while time.monotonic() < stop and len(pids) < 3:
        pids.add(await asyncio.wait_for(conn.fetchval("SELECT pg_backend_pid()"), BOUND))
    assert len(pids) >= 3, "the reloaded server_lifetime did not retire the kept server"
    await conn.close()


async def test_sigterm_lets_a_long_transaction_commit_and_tells_idle_clients(
    pg: PgServer, serve: Serve
) -> None:
    table = "sigterm_long_probe"
    direct = await asyncpg.connect(pg.dsn(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
    await direct.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (x int)")
    served = await serve(
        config_text(pg, pool_text("txpool"), pool_text("sesspool", mode="session"))
    )
    idle_tx = await psycopg.AsyncConnection.connect(served.dsn("txpool"), autocommit=True)
    idle_session = await psycopg.AsyncConnection.connect(served.dsn("sesspool"), autocommit=True)
    await idle_tx.execute("SELECT 1")
    await idle_session.execute("SELECT 1")
    busy = await served.connect("txpool")

    async def long_transaction() -> None:
        async with busy.transaction():
            await busy.execute(f"INSERT INTO {table} VALUES (1)")
            await busy.execute("SELECT pg_sleep(0.8)")
            await busy.execute(f"INSERT INTO {table} VALUES (2)")

    running = asyncio.ensure_future(long_transaction())
    await asyncio.sleep(0.2)
    served.proc.send_signal(signal.SIGTERM)
    for idle in (idle_tx, idle_session):
        with pytest.raises(psycopg.errors.AdminShutdown) as info:
            await asyncio.sleep(0.2)
            await idle.execute("SELECT 1")
        assert "pooler is shutting down" in str(info.value)
    await asyncio.wait_for(running, BOUND)
    assert await asyncio.wait_for(served.proc.wait(), BOUND) == 0
    assert await direct.fetchval(f"SELECT sum(x) FROM {table}") == 3
    await direct.execute(f"DROP TABLE {table}")
    await direct.close()
