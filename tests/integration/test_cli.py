"""The command line: ``check`` validates a file; ``serve`` serves and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.listening_child import listening_child
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import SCRAM_PASSWORD, SCRAM_USER
from tests.support.toml_config import REPO_ROOT, config_text, pool_text
from tests.support.toml_config import SUBPROCESS_ENV as ENV


def cli_config(pg: PgServer, pool_size: int = 2, extra_pool: str = "") -> str:
    return config_text(pg, pool_text("clipool", size=pool_size, extra=extra_pool))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyproxy", *args],
        cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_check_accepts_a_valid_file(pg: PgServer, tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(cli_config(pg))
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def test_check_rejects_a_bad_value_naming_the_key(pg: PgServer, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(cli_config(pg, pool_size=0))
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode != 0
    assert "clusters[0].pools[0].size" in proc.stderr


def test_check_rejects_an_unknown_key_naming_it(pg: PgServer, tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(cli_config(pg, extra_pool="query_wait_timout = 3"))
    proc = run_cli("check", "-c", str(path))
    assert proc.returncode != 0
    assert "clusters[0].pools[0].query_wait_timout" in proc.stderr


def test_check_reports_a_missing_file(tmp_path: Path) -> None:
    proc = run_cli("check", "-c", str(tmp_path / "absent.toml"))
    assert proc.returncode != 0
    assert "absent.toml" in proc.stderr


@pytest.fixture
async def served(
    pg: PgServer, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``python -m pyproxy serve`` running; yields the process and its client port."""
    path = tmp_path / "serve.toml"
    path.write_text(cli_config(pg))
    async with listening_child("-m", "pyproxy", "serve", "-c", str(path)) as (proc, port):
        yield proc, port


async def test_serve_serves_logs_to_stderr_and_exits_0_on_sigterm(
    served: tuple[asyncio.subprocess.Process, int],
) -> None:
    proc, port = served
    conn = await asyncpg.connect(
        host="127.0.0.1", port=port, user=SCRAM_USER, password=SCRAM_PASSWORD,
        database="clipool", statement_cache_size=0,
    )  # fmt: skip
    assert await conn.fetchval("SELECT 6 * 7") == 42
    await conn.close()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    assert "SIGTERM" in log
    assert "accepting PostgreSQL clients" in log


async def test_sigterm_lets_a_running_transaction_commit(
    pg: PgServer, served: tuple[asyncio.subprocess.Process, int]
) -> None:
    proc, port = served
    table = f"sigterm_probe_{os.getpid()}"
    direct = await asyncpg.connect(pg.dsn(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
    await direct.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (x int)")
    try:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=port, user=SCRAM_USER, password=SCRAM_PASSWORD,
            database="clipool", statement_cache_size=0,
        )  # fmt: skip
        await conn.execute("BEGIN")
        await conn.execute(f"INSERT INTO {table} VALUES (1)")
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        assert proc.returncode is None, "the proxy must wait for the open transaction"
        # New clients are no longer accepted while the transaction finishes.
        with pytest.raises((OSError, asyncpg.PostgresError, asyncio.TimeoutError)):
            late = await asyncpg.connect(
                host="127.0.0.1", port=port, user=SCRAM_USER, password=SCRAM_PASSWORD,
                database="clipool", timeout=2,
            )  # fmt: skip
            await late.close()
        await conn.execute(f"INSERT INTO {table} VALUES (2)")
        await conn.execute("COMMIT")
        started = time.monotonic()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert time.monotonic() - started < 4.0  # well before shutdown_timeout (5 s)
        assert await direct.fetchval(f"SELECT sum(x) FROM {table}") == 3
        conn.terminate()
    finally:
        await direct.execute(f"DROP TABLE IF EXISTS {table}")
        await direct.close()


def test_demo_runs_its_burst_through_a_throwaway_postgresql() -> None:
    """`make demo`'s command, without the serving part: the README's quick start must work."""
    proc = subprocess.run(
        [sys.executable, "-m", "pyproxy", "demo", "--clients", "20", "--queries", "3",
         "--no-serve"],
        cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=110,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "60 queries from 20 clients" in proc.stdout
    assert ", 0 errors" in proc.stdout
    assert "never saw more than 5 backends" in proc.stdout
