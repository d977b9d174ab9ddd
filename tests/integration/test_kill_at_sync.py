"""A backend terminated while PostgreSQL processes the Sync of an extended-protocol request.

Outside a transaction block, PostgreSQL commits the implicit transaction of a Parse/Bind/Execute
batch at its Sync, after CommandComplete (or PortalSuspended, when the driver asks for a row
limit) has been produced; a backend terminated before ReadyForQuery rolled the request back,
so it could be sent again like one killed before its first reply. `python -m bench.isolation`
(kill-loop: backends killed every 50 ms for 30 s) hit this once per run, 1 query in 245,705 and
1 in 385,806; here a deferred trigger that sleeps at commit time holds the backend in that
window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import psycopg
import pytest

from tests.integration.conftest import MakeProxy
from tests.support.proxy import RunningProxy, pool_entry, wait_for_query

TABLE = "kill_at_sync"
SLOW_COMMIT = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (x int);
GRANT ALL ON {TABLE} TO PUBLIC;
CREATE OR REPLACE FUNCTION {TABLE}_slow() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN PERFORM pg_sleep(0.6); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER {TABLE}_at_commit AFTER INSERT ON {TABLE}
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {TABLE}_slow();
CREATE OR REPLACE FUNCTION {TABLE}_add(v int) RETURNS int LANGUAGE sql AS
  $$ INSERT INTO {TABLE} VALUES (v) RETURNING v $$;
"""


async def _psycopg_insert(proxy: RunningProxy) -> None:
    """Parse/Bind/Describe/Execute/Sync: the reply is CommandComplete, then ReadyForQuery."""
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        await conn.execute(f"INSERT INTO {TABLE} VALUES (%s)", (1,))


async def _asyncpg_fetchval(proxy: RunningProxy) -> None:
    """Bind/Execute(1 row)/Sync of a cached statement: the reply ends with PortalSuspended."""
    conn = await proxy.asyncpg(statement_cache_size=100)
    try:
        sql = f"SELECT {TABLE}_add($1)"
        await conn.prepare(sql)
        assert await conn.fetchval(sql, 1) == 1
    finally:
        await conn.close()


@pytest.mark.parametrize("client", [_psycopg_insert, _asyncpg_fetchval], ids=lambda f: f.__name__)
async def test_a_request_killed_while_committing_at_its_sync_is_sent_again(
    make_proxy: MakeProxy,
    pg_admin: asyncpg.Connection,
    client: Callable[[RunningProxy], Awaitable[None]],
) -> None:
    await pg_admin.execute(SLOW_COMMIT)
    proxy = await make_proxy([pool_entry(size=1, server_login_retry=0)])
    running = asyncio.ensure_future(client(proxy))
    try:
        pid = await wait_for_query(pg_admin, f"{TABLE}")
        await asyncio.sleep(0.2)  # the Execute is answered; the deferred trigger sleeps in COMMIT
        assert await pg_admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        await asyncio.wait_for(running, 10)  # today: AdminShutdown, "pyproxy dropped the server"
    finally:
        if not running.done():
            running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    # The killed attempt was rolled back; the one sent again committed.
    assert await pg_admin.fetchval(f"SELECT count(*) FROM {TABLE}") == 1
