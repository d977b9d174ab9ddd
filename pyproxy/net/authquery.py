"""auth_query: the stored secret of a user the config does not list, read from PostgreSQL through
a few connections of the cluster's auth_user, and remembered for ``auth_cache_seconds``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pyproxy.config import ClusterConfig, PoolConfig
from pyproxy.errors import CONNECTION_FAILURE, PgError
from pyproxy.pool.pool import Pool
from pyproxy.proto import messages as m
from pyproxy.proto.phases import ServerPhase

if TYPE_CHECKING:
    from pyproxy.net.server import ServerConn

log = logging.getLogger("pyproxy.auth_query")
CONNECTIONS = 2  # auth_user connections per cluster and database, opened when needed
CACHE_LIMIT = 10000  # users remembered (found or not), least recently looked up dropped
Opener = Callable[[Pool], Awaitable["ServerConn"]]


class AuthQuery:
    """Looks up users' stored secrets; one instance per running proxy."""

    def __init__(self, opener: Opener, cache_seconds: float, timeout: float = 15.0) -> None:
        self.opener = opener
        self.cache_seconds = cache_seconds
        self.timeout = timeout  # for one lookup, connecting included
        self._cache: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()
        self._inflight: dict[tuple[str, str], asyncio.Future[str | None]] = {}
        self._idle: dict[tuple[str, str], list[ServerConn]] = {}
        self._slots: dict[tuple[str, str], asyncio.Semaphore] = {}

    def reconfigure(self, cache_seconds: float) -> None:
        """The config was reloaded: forget what was looked up and the auth_user connections
        (auth_user, its password or auth_query may have changed)."""
        self.cache_seconds = cache_seconds
        self._cache.clear()
        self.close()

    def close(self) -> None:
        for servers in self._idle.values():
            for server in servers:
                server.close("auth_query connections closed")
        self._idle.clear()

    async def lookup(self, cluster: ClusterConfig, db: str, user: str) -> str | None:
        """The stored secret of ``user``: None when PostgreSQL has no such login role, or no
        usable password (NULL, expired). Raises PgError when PostgreSQL cannot be asked."""
        key = (cluster.id, user)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            async with asyncio.timeout(self.timeout or None):
                secret = await self._query(cluster, cluster.auth_dbname or db, user)
        except TimeoutError:
            log.error("auth_query on cluster %s: no answer within %g s", cluster.id, self.timeout)
            err = _unavailable()
            future.set_exception(err)
            future.exception()
            raise err from None
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # (retrieved: waiters get it through their own await)
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(secret)
        if self.cache_seconds > 0:
            self._cache[key] = (time.monotonic() + self.cache_seconds, secret)
            self._cache.move_to_end(key)
            while len(self._cache) > CACHE_LIMIT:
                self._cache.popitem(last=False)
        return secret

    async def _query(self, cluster: ClusterConfig, db: str, user: str) -> str | None:
        place = (cluster.id, db)
        slots = self._slots.setdefault(place, asyncio.Semaphore(CONNECTIONS))
        request = m.extended_query(cluster.auth_query, [user])
        async with slots:
            for attempt in range(2):
                server, reused = await self._server(cluster, db)
                try:
                    error, rows = await _run(server, request)
                except BaseException:
                    server.close("auth_query abandoned")
                    raise
                if not (reused and server.closed and attempt == 0):
                    break
                # A kept connection that died while idle: once more on a new one.
            if error is not None:
                server.close("auth_query failed")
                log.error(
                    "auth_query as %s on cluster %s failed: %s %s",
                    cluster.auth_user, cluster.id, error.get("C"), error.get("M"),
                )  # fmt: skip
                raise _unavailable()
            self._idle.setdefault(place, []).append(server)
        if len(rows) > 1:
            log.warning("auth_query returned %d rows for one user; refusing the login", len(rows))
            return None
        if not rows or len(rows[0]) < 2:
            return None
        return rows[0][1] or None

    async def _server(self, cluster: ClusterConfig, db: str) -> tuple[ServerConn, bool]:
        """A connection of auth_user, and whether it is a kept one."""
        idle = self._idle.get((cluster.id, db), [])
        while idle:
            server = idle.pop()
            if not server.closed:
                return server, True
        account = cluster.user(cluster.auth_user)
        if account is None:
            raise _unavailable()
        cfg = PoolConfig(name="__auth_query__", db=db, size=CONNECTIONS, user=account.name)
        try:
            server = await self.opener(Pool(cfg, cluster, account.name, account.password, _no))
        except PgError as exc:
            log.error(
                "auth_query: cannot log in to cluster %s database %s as auth_user %s: %s %s",
                cluster.id, db, account.name, exc.sqlstate, exc.message,
            )  # fmt: skip
            raise _unavailable() from None
        server.pool = None  # belongs to no pool: never lent to a client
        return server, False


def _unavailable() -> PgError:
    """What the client is told when its user cannot be looked up (the reason is logged)."""
    return PgError(
        CONNECTION_FAILURE,
        "could not look up the user's password (auth_query); see pyproxy's log",
        fatal=True,
    )


async def _no(pool: Pool) -> ServerConn:
    raise PgError(CONNECTION_FAILURE, "auth_query connections are opened by AuthQuery")


async def _run(server: ServerConn, request: bytes) -> tuple[dict[str, str] | None, list]:
    """Send pyproxy's own ``request`` (ending with Sync) on an idle server of no pool; its
    first error and its rows, once its ReadyForQuery came (the server is idle again)."""
    future: asyncio.Future[tuple[dict[str, str] | None, list]] = (
        asyncio.get_running_loop().create_future()
    )

    def then(error: dict[str, str] | None, rows: list) -> None:
        if server.phase is ServerPhase.CHECK:
            server.move(ServerPhase.IDLE)
        if not future.done():
            future.set_result((error, rows))

    # The server's own-query path (see ServerConn._swallow) collects the answer.
    server.move(ServerPhase.CHECK)
    server.after = then
    server.swallow_error = None
    server.swallow_rows = []
    assert server.transport is not None
    server.transport.write(request)
    return await future
