"""Long-idle servers are checked before reuse without stalling clients queued behind the check."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import MakeProxy
from tests.support.proxy import pool_entry


@pytest.mark.parametrize("mode", ["session", "transaction"])
async def test_clients_arriving_together_get_long_idle_servers(
    make_proxy: MakeProxy, mode: str
) -> None:
    size = 4
    proxy = await make_proxy(
        [pool_entry(mode=mode, size=size, server_check_delay=0.2, query_wait_timeout=0.6)]
    )
    # Open every server of the pool, then let all of them sit idle past server_check_delay.
    warm = [await proxy.asyncpg() for _ in range(size)]
    await asyncio.gather(*(c.execute("SELECT pg_sleep(0.05)") for c in warm))
    for conn in warm:
        await conn.close()
    await asyncio.sleep(0.5)

    async def session_client() -> int:
        conn = await proxy.asyncpg()
        try:
            # Hold the server (session mode) while the others arrive.
            async with conn.transaction():
                value = await conn.fetchval("SELECT 1 FROM pg_sleep(1.0)")
            return int(value)
        finally:
            await conn.close()

    # Each client must get one of the checked idle servers; none may wait for a release.
    results = await asyncio.wait_for(
        asyncio.gather(*(session_client() for _ in range(size - 1))), timeout=10
    )
    assert results == [1] * (size - 1)
    stats = proxy.pool_stats("testpool")
    assert stats["sv_total"] <= size
