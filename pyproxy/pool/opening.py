"""Opening a pool's server connections: in parallel for waiting clients, one for a client whose
request is sent again, and the first login's parameters every client of the pool is greeted with."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pyproxy.errors import CONNECTION_FAILURE, PgError

if TYPE_CHECKING:
    from pyproxy.pool.pool import Pool

log = logging.getLogger("pyproxy.pool")
Connector = Callable[["Pool"], Awaitable[Any]]


class Opener:
    """The servers a pool is opening (``connecting``) and the tasks that open them."""

    def __init__(self, pool: Pool, connector: Connector) -> None:
        self.pool = pool
        self.connector = connector
        self.connecting = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._welcome_waiters: list[asyncio.Future[None]] = []

    def grow(self) -> None:
        """Open servers in parallel: one per waiting client, up to the pool's limit."""
        pool = self.pool
        if pool.paused or pool.deleted or self.connecting + pool.checks >= len(pool.waiters):
            return
        if pool.total >= pool.cap and not pool.cfg.settings.reserve_pool_size:
            return  # the common case under load: every server busy, no reserve
        limit = pool.limit()
        while self.connecting + pool.checks < len(pool.waiters) and pool.total < limit:
            self.launch()

    def launch(self, client: Any = None) -> None:
        """Open one server; for ``client`` alone when given (see ``open_for``)."""
        pool = self.pool
        self.connecting += 1
        if pool.within and pool.total > pool.cap:
            pool.within = False  # a login for the pool's parameters may open one server more
        task = asyncio.get_running_loop().create_task(self._connect(client))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def open_for(self, client: Any) -> bool:
        """Open a new server for ``client`` alone (its request is sent again after its server
        died: an idle server may have died with it). False when the pool has no room for one
        more; the client then asks through ``acquire``."""
        pool = self.pool
        if pool.paused or pool.deleted or pool.total >= pool.cap:
            return False
        self.launch(client)
        return True

    async def _connect(self, client: Any) -> None:
        pool = self.pool
        started = time.monotonic()
        try:
            server = await self.connector(pool)
        except Exception as exc:
            self.connecting -= 1
            pool.figures.connect_failures += 1
            err = (
                exc
                if isinstance(exc, PgError)
                else PgError(CONNECTION_FAILURE, f"server connection failed: {exc}", fatal=True)
            )
            if client is not None:
                client.on_wait_error(err)
                self.grow()
            else:
                self._failed(err)
            return
        self.connecting -= 1
        pool.figures.connected(time.monotonic() - started)
        pool.last_error = None
        if pool.welcome is None:
            pool.welcome = dict(server.params)
            pool.welcome_names = dict(server.param_names)
            pool.greetings.clear()
        for fut in self._welcome_waiters:
            if not fut.done():
                fut.set_result(None)
        self._welcome_waiters.clear()
        if pool.deleted:
            server.close("pool deleted")
            return
        pool.adopt(server, client)

    def _failed(self, exc: PgError) -> None:
        pool = self.pool
        log.warning("pool %s: server login failed: %s", pool.name, exc.message)
        pool.last_error = exc
        pool.last_error_at = time.monotonic()
        for fut in self._welcome_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._welcome_waiters.clear()
        # Nobody can serve the waiters if no server exists and none is being opened.
        if not pool.total:
            waiters, pool.waiters = pool.waiters, deque()
            for w in waiters:
                w.on_wait_error(exc)

    def failing_fast(self) -> bool:
        """While the server keeps refusing us, new clients get the last error at once."""
        pool = self.pool
        if pool.last_error is None or pool.linked or pool.idle:
            return False
        return time.monotonic() - pool.last_error_at < pool.settings.server_login_retry

    async def wait_welcome(self) -> None:
        """Wait until one server login has told us the server's ParameterStatus set."""
        pool = self.pool
        if pool.welcome is not None:
            return
        if self.failing_fast():
            assert pool.last_error is not None
            raise pool.last_error
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._welcome_waiters.append(fut)
        self.welcome_login()
        await fut

    @property
    def welcome_waiting(self) -> int:
        """Logins waiting for a first server of the pool (they count as demand for a share)."""
        return len(self._welcome_waiters)

    def welcome_login(self) -> None:
        """Open the server whose login greets the waiting clients, unless one is opening. When
        the pool's size is shared with other processes (a share), only within the share: the
        share growing calls this again."""
        pool = self.pool
        if not self._welcome_waiters or self.connecting:
            return
        if pool.share is None or pool.total < pool.cap:
            self.launch()

    def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
