"""pgbench's select-only workload through pyproxy in each mode finishes without failures."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.conftest import MakeProxy
from tests.support.pgcluster import PgServer, run_sql
from tests.support.proxy import MODES, SUPERUSER, pool_entry

BENCH_DB = "pgbench_proxy"
CLIENTS, THREADS, TRANSACTIONS = 8, 2, 200


@pytest.fixture(scope="module")
def bench_db(pg: PgServer) -> Iterator[str]:
    """A fresh database initialised with ``pgbench -i -s 1``."""
    run_sql(pg, f"DROP DATABASE IF EXISTS {BENCH_DB}")
    run_sql(pg, f"CREATE DATABASE {BENCH_DB}")
    env = dict(os.environ, PGPASSWORD=pg.superuser_password)
    subprocess.run(
        ["pgbench", "-i", "-s", "1", "-q", "-h", pg.host, "-p", str(pg.port),
         "-U", pg.superuser, BENCH_DB],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    yield BENCH_DB
    run_sql(pg, f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


@pytest.mark.parametrize("protocol", ["simple", "extended"])
@pytest.mark.parametrize("mode", MODES)
async def test_pgbench_select_only_has_no_failed_transactions(
    make_proxy: MakeProxy, bench_db: str, mode: str, protocol: str
) -> None:
    proxy = await make_proxy(
        [pool_entry("benchpool", mode=mode, size=4, db=bench_db, user=SUPERUSER)],
        proxy={"auth_type": "trust"},
    )
    proc = await asyncio.create_subprocess_exec(
        "pgbench", "-S", "-n", "-M", protocol, "-c", str(CLIENTS), "-j", str(THREADS),
        "-t", str(TRANSACTIONS), "-h", proxy.host, "-p", str(proxy.port),
        "-U", SUPERUSER, "benchpool",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PGCONNECT_TIMEOUT="5"),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 45)
    text = out.decode()
    assert proc.returncode == 0, err.decode() + text
    processed = re.search(r"number of transactions actually processed: (\d+)/(\d+)", text)
    assert processed is not None, text
    assert processed.group(1) == processed.group(2) == str(CLIENTS * TRANSACTIONS)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    assert failed is not None and failed.group(1) == "0", text
