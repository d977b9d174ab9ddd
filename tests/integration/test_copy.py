"""COPY FROM STDIN and TO STDOUT of 10 MB through every mode, simple and extended protocol."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import asyncpg
import psycopg
import pytest
from psycopg import pq

from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import (
    SCRAM_PASSWORD,
    SCRAM_USER,
    RunningProxy,
    pool_entry,
    running_proxy,
)

MODES = ("session", "transaction", "statement")
ROWS = 100_000
PAD = "x" * 100
DATA = "".join(f"{i}\t{PAD}\n" for i in range(ROWS)).encode()  # about 10.5 MB
BAD_AT = ROWS // 2
BAD_DATA = DATA.replace(f"\n{BAD_AT}\t".encode(), b"\nnot-a-number\t", 1)
CHUNK = 64 * 1024
ROOT = Path(__file__).resolve().parents[2]


async def make_table(pg: PgServer, name: str) -> None:
    conn = await asyncpg.connect(pg.dsn(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
    await conn.execute(f"DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (n int, pad text)")
    await conn.close()


async def assert_reusable(proxy_dsn: str, table: str, rows: int) -> None:
    """Another client on the pool's single server sees a clean, usable server."""
    other = await psycopg.AsyncConnection.connect(proxy_dsn, autocommit=True)
    cur = await other.execute(f"SELECT count(*), pg_catalog.now() IS NOT NULL FROM {table}")
    assert await cur.fetchone() == (rows, True)
    await other.close()


async def assert_released(proxy: RunningProxy, mode: str) -> None:
    """Outside session mode a client idle after COPY holds no server."""
    if mode == "session":
        await proxy.wait_stats(sv_total=1, cl_waiting=0)
    else:
        await proxy.wait_stats(sv_idle=1, sv_active=0, cl_active=0)


@pytest.mark.parametrize("mode", MODES)
async def test_copy_10mb_in_and_out_with_psycopg(pg: PgServer, mode: str) -> None:
    table = f"copy_psycopg_{mode}"
    await make_table(pg, table)
    async with running_proxy(pg, [pool_entry(size=1, mode=mode)]) as proxy:
        async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
            cur = conn.cursor()
            async with cur.copy(f"COPY {table} FROM STDIN") as copy:
                for off in range(0, len(DATA), CHUNK):
                    await copy.write(DATA[off : off + CHUNK])
            out = io.BytesIO()
            async with cur.copy(f"COPY {table} TO STDOUT") as copy:
                async for chunk in copy:
                    out.write(chunk)
            assert out.getvalue() == DATA
            with pytest.raises(psycopg.errors.InvalidTextRepresentation):
                async with cur.copy(f"COPY {table} FROM STDIN") as copy:
                    for off in range(0, len(BAD_DATA), CHUNK):
                        await copy.write(BAD_DATA[off : off + CHUNK])
            await assert_released(proxy, mode)
            cur = await conn.execute(f"SELECT count(*) FROM {table}")
            assert await cur.fetchone() == (ROWS,)
        await assert_reusable(proxy.dsn(), table, ROWS)


@pytest.mark.parametrize("mode", MODES)
async def test_copy_10mb_in_and_out_with_asyncpg(pg: PgServer, mode: str) -> None:
    table = f"copy_asyncpg_{mode}"
    await make_table(pg, table)
    async with running_proxy(pg, [pool_entry(size=1, mode=mode)]) as proxy:
        conn = await proxy.asyncpg()
        await conn.copy_to_table(table, source=io.BytesIO(DATA))
        out = io.BytesIO()
        await conn.copy_from_query(f"SELECT * FROM {table} ORDER BY n", output=out)
        assert out.getvalue() == DATA
        with pytest.raises(asyncpg.InvalidTextRepresentationError):
            await conn.copy_to_table(table, source=io.BytesIO(BAD_DATA))
        await assert_released(proxy, mode)
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == ROWS
        await conn.close()
        await assert_reusable(proxy.dsn(), table, ROWS)


def extended_copy(conn: pq.PGconn, table: str) -> tuple[bytes, str]:
    """COPY in, COPY out, then a failing COPY in, each through PQexecParams (extended protocol).

    Blocking libpq calls: run it in another process, never next to the proxy's event loop.
    """
    res = conn.exec_params(f"COPY {table} FROM STDIN".encode(), [])
    assert res.status == pq.ExecStatus.COPY_IN, res.get_error_message()
    for off in range(0, len(DATA), CHUNK):
        assert conn.put_copy_data(DATA[off : off + CHUNK]) == 1
    assert conn.put_copy_end() == 1
    res = conn.get_result()
    assert res is not None and res.status == pq.ExecStatus.COMMAND_OK, res.get_error_message()
    assert conn.get_result() is None
    res = conn.exec_params(f"COPY {table} TO STDOUT".encode(), [])
    assert res.status == pq.ExecStatus.COPY_OUT, res.get_error_message()
    out = io.BytesIO()
    while True:
        n, chunk = conn.get_copy_data(0)
        if n < 0:
            break
        out.write(chunk)
    res = conn.get_result()
    assert res is not None and res.status == pq.ExecStatus.COMMAND_OK
    assert conn.get_result() is None
    res = conn.exec_params(f"COPY {table} FROM STDIN".encode(), [])
    assert res.status == pq.ExecStatus.COPY_IN
    for off in range(0, len(BAD_DATA), CHUNK):
        if conn.put_copy_data(BAD_DATA[off : off + CHUNK]) != 1:
            break
    conn.put_copy_end()
    res = conn.get_result()
    assert res is not None
    error = res.error_field(pq.DiagnosticField.SQLSTATE) or b""
    while conn.get_result() is not None:
        pass
    res = conn.exec_params(b"SELECT 1", [])
    assert res.status == pq.ExecStatus.TUPLES_OK, res.get_error_message()
    return out.getvalue(), error.decode()


@pytest.mark.parametrize("mode", MODES)
async def test_copy_10mb_in_and_out_through_the_extended_protocol(pg: PgServer, mode: str) -> None:
    table = f"copy_extended_{mode}"
    await make_table(pg, table)
    async with running_proxy(pg, [pool_entry(size=1, mode=mode)]) as proxy:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.test_copy", proxy.dsn(), table,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert json.loads(line) == {"copied_all": True, "error": "22P02"}
            await assert_released(proxy, mode)
            proc.stdin.write(b"done\n")
            await asyncio.wait_for(proc.wait(), 10)
        finally:
            if proc.returncode is None:
                proc.kill()
        assert proc.returncode == 0
        await assert_reusable(proxy.dsn(), table, ROWS)


if __name__ == "__main__":
    client = pq.PGconn.connect(sys.argv[1].encode())
    assert client.status == pq.ConnStatus.OK, client.get_error_message()
    copied, error = extended_copy(client, sys.argv[2])
    print(json.dumps({"copied_all": copied == DATA, "error": error}), flush=True)
    sys.stdin.readline()
    client.finish()
