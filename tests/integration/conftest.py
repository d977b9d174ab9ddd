"""Integration fixtures: pyproxy instances in front of the session's test PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import asyncpg
import pytest

from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import RunningProxy, pool_entry, running_proxy

MakeProxy = Callable[..., Awaitable[RunningProxy]]


@pytest.fixture
async def make_proxy(pg: PgServer) -> AsyncIterator[MakeProxy]:
    """Start proxies: ``await make_proxy(pools=[pool_entry(...)], proxy={...}, cluster={...})``.

    Keywords are those of ``tests.support.proxy.config_dict`` plus ``stop_timeout``; every
    proxy started is stopped when the test ends.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def make(pools: Iterable[Mapping[str, Any]] = (), **overrides: Any) -> RunningProxy:
            return await stack.enter_async_context(running_proxy(pg, pools, **overrides))

        yield make


@pytest.fixture
async def pg_admin(pg: PgServer) -> AsyncIterator[asyncpg.Connection]:
    """A direct superuser connection to appdb: watch pg_stat_activity, kill backends."""
    conn = await asyncpg.connect(pg.dsn(pg.superuser, pg.superuser_password, APP_DB))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def proxy1(pg: PgServer) -> AsyncIterator[RunningProxy]:
    """One server shared by every client of the module, at most two prepared statements on it,
    trust auth for raw wire clients (the raw extended-protocol tests compare it with direct)."""
    async with running_proxy(
        pg,
        [pool_entry(size=1, max_prepared_statements=2)],
        proxy={"auth_type": "trust"},
    ) as proxy:
        yield proxy
