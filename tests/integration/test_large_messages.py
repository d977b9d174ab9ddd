"""Large protocol messages (a 20 MB parameter, a 5 MB query) pass through in every mode."""

from __future__ import annotations

import os

import pytest

from tests.integration.conftest import MakeProxy
from tests.support.proxy import MODES, pool_entry


@pytest.mark.parametrize("mode", MODES)
async def test_twenty_megabyte_parameter_round_trips(make_proxy: MakeProxy, mode: str) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=1)])
    conn = await proxy.asyncpg()
    try:
        blob = os.urandom(20 * 1024 * 1024)
        got = await conn.fetchval("SELECT $1::bytea", blob)
        assert got == blob
        assert await conn.fetchval("SELECT length($1::text)", "x" * 5_000_000) == 5_000_000
        assert await conn.fetchval("SELECT 1") == 1  # the connection is still in step
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", MODES)
async def test_five_megabyte_simple_query(make_proxy: MakeProxy, mode: str) -> None:
    proxy = await make_proxy([pool_entry(mode=mode, size=1)])
    conn = await proxy.asyncpg()
    try:
        literal = "y" * 5_000_000
        # No parameters: asyncpg sends this through the simple query protocol.
        await conn.execute(f"SELECT length('{literal}')")
        assert await conn.fetchval(f"SELECT length('{literal}')") == 5_000_000
    finally:
        await conn.close()
