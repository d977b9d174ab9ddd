"""One pool: server connections by state (idle, active, connecting) and a FIFO queue of clients."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pyproxy.config import ClusterConfig, PoolConfig, PoolSettings
from pyproxy.errors import (
    ADMIN_SHUTDOWN,
    CONNECTION_FAILURE,
    QUERY_CANCELED,
    QUERY_WAIT_TIMEOUT,
    PgError,
)

log = logging.getLogger("pyproxy.pool")


class ServerLink(Protocol):
    """What a pool needs from a server connection (implemented in pyproxy.net.server)."""

    pool: Pool | None
    created: float
    idle_since: float
    closed: bool
    stale: bool
    status: int  # the last ReadyForQuery status: IDLE_STATUS outside a transaction
    cancels: int  # cancel requests forwarded for it whose connection PostgreSQL has not closed
    reset_sql: str  # what must run on it before another client may have it ("" = nothing)

    def close(self, reason: str = "") -> None: ...

    def clean(self, sql: str) -> None:
        """Run ``sql`` unseen by any client, then ``release`` again (or close on failure)."""

    def check(self) -> None: ...


class Waiter(Protocol):
    """What a pool needs from a waiting client (implemented in pyproxy.net.client)."""

    wait_since: float
    notified: bool

    def on_server(self, server: Any) -> None: ...

    def on_wait_error(self, error: PgError) -> None: ...

    def notice(self, text: str) -> None: ...


Connector = Callable[["Pool"], Awaitable[Any]]

IDLE_STATUS = 73  # ReadyForQuery status "I": not inside a transaction block

# A client keeps its server between transactions for at most this long while nobody waits.
HOLD_IDLE = 0.25

# Upper bounds (seconds) of the queue-wait histogram buckets.
WAIT_BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0)


class Pool:
    """Server connections for one (pool name, server login user).

    A server is in exactly one place: ``idle`` (deque, used LIFO), ``active`` (linked to a client
    or running a reset/check) or counted in ``connecting``. Clients wanting a server while none is
    idle wait in ``waiters`` and are served first come, first served. Subsets of ``active``:
    ``checking`` (health check), ``held`` (kept by its client between transactions) and
    ``canceling`` (back from its client, waiting until PostgreSQL has closed every cancel
    connection forwarded for it, so that a late cancel cannot hit the next client).

    Every server coming back from a client goes through ``release``, which decides what must
    happen before another client may have it.
    """

    def __init__(
        self,
        cfg: PoolConfig,
        cluster: ClusterConfig,
        login_user: str,
        login_password: str | None,
        connector: Connector,
    ) -> None:
        self.cfg = cfg
        self.cluster = cluster
        self.login_user = login_user
        self.login_password = login_password
        self.connector = connector
        self.idle: deque[Any] = deque()
        self.active: set[Any] = set()
        self.connecting = 0
        self.waiters: deque[Any] = deque()
        self.clients: set[Any] = set()
        self.welcome: dict[str, str] | None = None
        self.welcome_names: dict[str, str] = {}
        # Login greetings built from ``welcome``, by the client's startup parameters.
        self.greetings: dict[Any, tuple[bytes, dict[str, str]]] = {}
        self._welcome_waiters: list[asyncio.Future[None]] = []
        self.last_error: PgError | None = None
        self.last_error_at = 0.0
        # Change these three through set_paused, mark_deleted and reconfigure: they keep
        # ``steady`` true.
        self.paused = False
        self.deleted = False
        self.steady = True  # not paused or deleted
        self.max_age = math.inf  # server_lifetime, or infinity when there is none
        self.within = True  # the servers cannot outnumber the size (see _fits)
        self.tasks: set[asyncio.Task[None]] = set()
        # Counters; the hot ones are attributes, see ``counters``.
        self.xact_count = 0  # transactions (statements in statement mode) served
        self.wait_count = 0  # requests that were queued
        self.wait_time = 0.0  # seconds they spent queued
        self.stats = {
            "session_state_warnings": 0,
            "session_state_errors": 0,
        }
        self.wait_counts = [0] * (len(WAIT_BOUNDS) + 1)  # histogram of queue waits
        self.checking: set[Any] = set()  # active servers running the health check
        self.held: set[Any] = set()  # active servers kept by their client between transactions
        self.canceling: set[Any] = set()  # active servers waiting for their cancels to land
        self.pinned: set[Any] = set()  # clients pinned to their server (session_state = "pin")
        self.pins = 0  # clients pinned so far
        self._last_lifetime_close = 0.0
        self._restate()

    # ---- state -------------------------------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._restate()

    def mark_deleted(self) -> None:
        self.deleted = True
        self._restate()

    def reconfigure(self, cfg: PoolConfig) -> None:
        self.cfg = cfg
        self._restate()

    def _restate(self) -> None:
        """Precompute what a release checks for every transaction."""
        self.steady = not self.paused and not self.deleted
        lifetime = self.cfg.settings.server_lifetime
        self.max_age = lifetime if lifetime > 0 else math.inf
        self.within = False
        self._fits()

    def _fits(self) -> bool:
        """Are there no more servers than the pool's size?

        Only a reserve pool or a smaller size (a new config) can make it false; without a
        reserve, once it is true it stays so until the config changes, and ``within`` lets
        releases skip counting.
        """
        fits = len(self.idle) + len(self.active) + self.connecting <= self.cfg.size
        if fits and not self.cfg.settings.reserve_pool_size:
            self.within = True
        return fits

    # ---- properties -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def mode(self) -> str:
        return self.cfg.mode

    @property
    def settings(self) -> PoolSettings:
        return self.cfg.settings

    @property
    def session_policy(self) -> str:
        """session_state as it applies: "pin" for transaction pools and "warn" for statement
        pools unless the configuration says otherwise."""
        policy = self.cfg.settings.session_state
        if policy:
            return policy
        return "warn" if self.cfg.mode == "statement" else "pin"

    def pin(self, client: Any) -> None:
        self.pinned.add(client)
        self.pins += 1

    def unpin(self, client: Any) -> None:
        self.pinned.discard(client)

    def pins_held(self) -> str:
        """Which pinned clients hold servers of this pool, for the clients waiting behind them."""
        pinned = sorted(self.pinned, key=lambda c: c.id)
        named = ", ".join(c.pin_description() for c in pinned[:5])
        more = f" and {len(pinned) - 5} more" if len(pinned) > 5 else ""
        return f"{len(pinned)} of its {self.cfg.size} servers are pinned to {named}{more}"

    def counters(self) -> dict[str, float]:
        return {
            "xact_count": self.xact_count,
            "wait_count": self.wait_count,
            "wait_time": self.wait_time,
            "session_state_pins": self.pins,
            **self.stats,
        }

    @property
    def total(self) -> int:
        return len(self.idle) + len(self.active) + self.connecting

    def limit(self) -> int:
        """Servers this pool may hold now, reserve included when the head waiter waited long."""
        size = self.cfg.size
        s = self.settings
        if s.reserve_pool_size and self.waiters:
            waited = time.monotonic() - self.waiters[0].wait_since
            if waited >= s.reserve_pool_timeout:
                size += s.reserve_pool_size
        return size

    # ---- getting a server -------------------------------------------------------------------

    def acquire(self, client: Any) -> None:
        """Link an idle server to ``client`` now, or queue the client and open servers."""
        if self.deleted:
            client.on_wait_error(
                PgError(ADMIN_SHUTDOWN, f'pool "{self.name}" was deleted', fatal=True)
            )
            return
        if not self.paused and not self.waiters:
            idle = self.idle
            while idle:
                server = idle.pop()
                if server.closed:
                    continue
                if self._needs_check(server):
                    self._start_check(server)
                    break
                self.active.add(server)
                client.on_server(server)
                return
        if self.held and not self.waiters and not self.paused:
            client.on_server(self._take_held())
            return
        if self.last_error is not None and self._failing_fast():
            client.on_wait_error(self.last_error)
            return
        self.enqueue(client)

    def enqueue(self, client: Any) -> None:
        """Queue ``client`` (``acquire`` when no server can be linked at once); its
        ``wait_since`` says when the request that waits arrived."""
        client.notified = False
        self.waiters.append(client)
        self.wait_count += 1
        if self.idle:
            self._serve_waiters()  # idle servers left while others are being checked
        if (
            len(self.active) + len(self.idle) + self.connecting < self.cfg.size
            or self.cfg.settings.reserve_pool_size
        ):
            self._grow()

    def _start_check(self, server: Any) -> None:
        """Check a long-idle server; when the check ends it serves the head of the queue."""
        self.active.add(server)
        self.checking.add(server)
        server.check()

    def _needs_check(self, server: Any) -> bool:
        delay = self.settings.server_check_delay
        return delay > 0 and time.monotonic() - server.idle_since > delay

    def _failing_fast(self) -> bool:
        """While the server keeps refusing us, new clients get the last error at once."""
        if self.last_error is None or self.active or self.idle:
            return False
        return time.monotonic() - self.last_error_at < self.settings.server_login_retry

    def cancel_wait(self, client: Any) -> bool:
        try:
            self.waiters.remove(client)
        except ValueError:
            return False
        return True

    def _grow(self) -> None:
        """Open servers in parallel: one per waiting client, up to the pool's limit."""
        if self.paused or self.deleted or self.connecting + len(self.checking) >= len(self.waiters):
            return
        full = len(self.idle) + len(self.active) + self.connecting >= self.cfg.size
        if full and not self.cfg.settings.reserve_pool_size:
            return  # the common case under load: every server busy, no reserve
        limit = self.limit()
        while self.connecting + len(self.checking) < len(self.waiters) and self.total < limit:
            self._launch()

    def _launch(self) -> None:
        self.connecting += 1
        if self.within and self.total > self.cfg.size:
            self.within = False  # a login for the pool's parameters may open one server more
        task = asyncio.get_running_loop().create_task(self._connect())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _connect(self) -> None:
        try:
            server = await self.connector(self)
        except PgError as exc:
            self.connecting -= 1
            self._connect_failed(exc)
            return
        except Exception as exc:
            self.connecting -= 1
            self._connect_failed(
                PgError(CONNECTION_FAILURE, f"server connection failed: {exc}", fatal=True)
            )
            return
        self.connecting -= 1
        self.last_error = None
        if self.welcome is None:
            self.welcome = dict(server.params)
            self.welcome_names = dict(server.param_names)
            self.greetings.clear()
        for fut in self._welcome_waiters:
            if not fut.done():
                fut.set_result(None)
        self._welcome_waiters.clear()
        if self.deleted:
            server.close("pool deleted")
            return
        server.idle_since = time.monotonic()
        self.release(server, fresh=True)

    def open_for(self, client: Any) -> bool:
        """Open a new server for ``client`` alone (its request is sent again after its server
        died: an idle server may have died with it). False when the pool has no room for
        one more; the client then asks through ``acquire``."""
        if self.paused or self.deleted or self.total >= self.cfg.size:
            return False
        self.connecting += 1
        task = asyncio.get_running_loop().create_task(self._connect_for(client))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    async def _connect_for(self, client: Any) -> None:
        try:
            server = await self.connector(self)
        except PgError as exc:
            self.connecting -= 1
            client.on_wait_error(exc)
            self._grow()
            return
        except Exception as exc:
            self.connecting -= 1
            client.on_wait_error(
                PgError(CONNECTION_FAILURE, f"server connection failed: {exc}", fatal=True)
            )
            self._grow()
            return
        self.connecting -= 1
        if self.deleted:
            server.close("pool deleted")
            return
        server.idle_since = time.monotonic()
        if client.wants_server():
            self.active.add(server)
            client.on_server(server)
        else:
            self.release(server, fresh=True)

    def _connect_failed(self, exc: PgError) -> None:
        log.warning("pool %s: server login failed: %s", self.name, exc.message)
        self.last_error = exc
        self.last_error_at = time.monotonic()
        for fut in self._welcome_waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._welcome_waiters.clear()
        # Nobody can serve the waiters if no server exists and none is being opened.
        if not self.active and not self.idle and not self.connecting:
            waiters, self.waiters = self.waiters, deque()
            for w in waiters:
                w.on_wait_error(exc)

    def forget_welcome(self) -> None:
        """The server behind the pool changed: learn its parameters again at the next login."""
        self.welcome = None
        self.greetings.clear()

    async def wait_welcome(self) -> None:
        """Wait until one server login has told us the server's ParameterStatus set."""
        if self.welcome is not None:
            return
        if self._failing_fast():
            assert self.last_error is not None
            raise self.last_error
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._welcome_waiters.append(fut)
        if not self.connecting:
            self._launch()
        await fut

    # ---- giving a server back ---------------------------------------------------------------

    def release(self, server: Any, fresh: bool = False, now: float = 0.0) -> None:
        """A server comes back from its client (nothing of its reply still to come): the one
        path back into the pool. In this order: a closed one is forgotten, a stale one closed;
        one with cancels in flight waits in ``canceling`` (``cancel_landed`` brings it back);
        one inside a transaction is rolled back and one with ``reset_sql`` (session mode's
        ``server_reset_query``, a client's session state) is reset, each step calling
        ``release`` again when done; then it is closed (pool shrunk or deleted, lifetime over),
        handed to the head of the queue or put with the idle servers."""
        active = self.active
        if server.closed:
            active.discard(server)
            self.checking.discard(server)
            self._grow()
            return
        if server.stale:
            server.close("pool settings changed")
            return
        if server.cancels:
            self.canceling.add(server)
            return
        if server.status != IDLE_STATUS:
            server.clean("ROLLBACK")
            return
        if server.reset_sql:
            sql, server.reset_sql = server.reset_sql, ""
            server.clean(sql)
            return
        active.discard(server)
        if self.checking:
            self.checking.discard(server)
        now = now or time.monotonic()
        # Over the limit (the pool shrank, or a reserve server is no longer needed): close it.
        if self.deleted or (
            len(self.idle) + len(active) + self.connecting >= self.cfg.size
            and self.total >= self.limit()
        ):
            server.close("pool shrunk")
            return
        lifetime = self.cfg.settings.server_lifetime
        if not fresh and 0 < lifetime <= now - server.created and self._expired(server, now):
            server.close("server_lifetime")
            self._grow()
            return
        if self.waiters and not self.paused:
            self._hand_to_waiter(server, now)
            return
        server.idle_since = now
        self.idle.append(server)

    def may_hold(self, server: Any) -> bool:
        """May a client keep the clean (not stale) ``server`` after its transaction, nobody
        else needing it now?"""
        return (
            self.steady
            and not server.cancels
            and server.ready_at - server.created < self.max_age
            and (self.within or self._fits())
        )

    def cancel_landed(self, server: Any) -> None:
        """PostgreSQL closed the last cancel connection forwarded for ``server``: if it came
        back meanwhile, it may go to another client now."""
        if server in self.canceling and not server.cancels:
            self.canceling.discard(server)
            self.release(server)

    def _take_held(self) -> Any:
        """Take a kept server back from the client keeping it (that client is between
        transactions; its next request asks the pool again)."""
        server = self.held.pop()
        self.take_back(server)
        return server

    def take_back(self, server: Any) -> None:
        """Take a kept server back from its client (which gets a server from the pool next)."""
        self.held.discard(server)
        server.held = False
        client = server.client
        if client is not None:
            client.detach_held()
        server.unlink()

    def release_held(self, older_than: float = 0.0) -> None:
        """Give kept servers back to the pool (all, or those idle longer than ``older_than``)."""
        if not self.held:
            return
        now = time.monotonic()
        for server in list(self.held):
            if now - server.ready_at >= older_than:
                self.take_back(server)
                self.release(server, now=now)

    def hand_over(self, server: Any, now: float) -> None:
        """Release under load: a clean server goes straight to the head of the queue, unless
        it has to leave the pool (shrunk, lifetime over) or the pool is paused or deleted."""
        if (
            self.steady
            and self.waiters
            and not server.closed
            and not server.cancels
            and now - server.created < self.max_age
            and (self.within or self._fits())
        ):
            # _hand_to_waiter inlined: this runs once per transaction under load, and the
            # server is in ``active`` already.
            client = self.waiters.popleft()
            waited = now - client.wait_since
            self.wait_time += waited
            self.wait_counts[bisect.bisect_left(WAIT_BOUNDS, waited)] += 1
            client.on_server(server)
        else:
            self.release(server, now=now)

    def _hand_to_waiter(self, server: Any, now: float) -> None:
        client = self.waiters.popleft()
        waited = now - client.wait_since
        self.wait_time += waited
        self.wait_counts[bisect.bisect_left(WAIT_BOUNDS, waited)] += 1
        self.active.add(server)
        client.on_server(server)

    def _serve_waiters(self) -> None:
        """Give idle servers to queued clients in arrival order; long-idle ones are checked first.

        A server under check serves the head of the queue when the check ends, so at most one
        check runs per waiting client.
        """
        if self.paused:
            return
        idle = self.idle
        now = time.monotonic()
        while self.held and not idle and len(self.waiters) > len(self.checking):
            self._hand_to_waiter(self._take_held(), now)
        while idle and len(self.waiters) > len(self.checking):
            server = idle.pop()
            if server.closed:
                continue
            if self._needs_check(server):
                self._start_check(server)
                continue
            self._hand_to_waiter(server, now)

    def _expired(self, server: Any, now: float) -> bool:
        lifetime = self.settings.server_lifetime
        if lifetime <= 0 or now - server.created < lifetime:
            return False
        # Spread lifetime closes out: at most one per lifetime / size seconds.
        gap = lifetime / max(self.cfg.size, 1)
        if now - self._last_lifetime_close < gap:
            return False
        self._last_lifetime_close = now
        return True

    def discard(self, server: Any) -> None:
        """A server closed or died: forget it and open another if clients wait."""
        self.forget(server)
        self._grow()

    def grow(self) -> None:
        """Open servers for the clients waiting, if the pool has room."""
        self._grow()

    def forget(self, server: Any) -> None:
        """A server closed or died: out of every container."""
        self.active.discard(server)
        self.checking.discard(server)
        self.held.discard(server)
        self.canceling.discard(server)
        with contextlib.suppress(ValueError):
            self.idle.remove(server)

    # ---- maintenance ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Called by the janitor a few times a second: timeouts, idle servers, min_pool_size."""
        s = self.settings
        if self.waiters and not self.paused:
            self._check_waiters(s, now)
        self.release_held(HOLD_IDLE)
        if self.waiters:
            self._serve_waiters()
            self._grow()
        keep = min(s.min_pool_size, self.cfg.size)
        if s.server_idle_timeout > 0 or s.server_lifetime > 0:
            for server in list(self.idle):
                if len(self.idle) + len(self.active) <= keep:
                    break
                idle_for = now - server.idle_since
                if s.server_idle_timeout > 0 and idle_for >= s.server_idle_timeout:
                    self.idle.remove(server)
                    server.close("server_idle_timeout")
                elif self._expired(server, now):
                    self.idle.remove(server)
                    server.close("server_lifetime")
        while len(self.idle) > 0 and self.total > self.limit():
            self.idle.popleft().close("pool shrunk")
        if (
            keep
            and self.total < keep
            and not self.paused
            and not self.deleted
            and (self.last_error is None or now - self.last_error_at >= s.server_login_retry)
        ):
            for _ in range(keep - self.total):
                self._launch()

    def _check_waiters(self, s: PoolSettings, now: float) -> None:
        """Queued clients: query_timeout and query_wait_timeout end the wait, query_wait_notify
        tells the client once why it waits (and which pinned clients hold servers; with pins
        and no query_wait_notify, at half the query_wait_timeout)."""
        notify = s.query_wait_notify
        if not notify and self.pinned:
            notify = s.query_wait_timeout / 2
        limits = [t for t in (s.query_timeout, s.query_wait_timeout, notify) if t > 0]
        if not limits:
            return
        first = min(limits)
        for w in list(self.waiters):
            waited = now - w.wait_since
            if waited < first:
                break  # the queue is in arrival order: the rest waited less
            if 0 < s.query_timeout <= waited:
                # PgBouncer counts a query's time from its arrival, queue included.
                error = PgError(
                    QUERY_CANCELED,
                    f"query_timeout: query waited longer than {s.query_timeout:g} s for a "
                    f'server (pool "{self.name}", size {self.cfg.size})',
                    fatal=True,
                )
            elif 0 < s.query_wait_timeout <= waited:
                error = PgError(
                    QUERY_WAIT_TIMEOUT,
                    "query_wait_timeout: no server "
                    f"connection became free in {s.query_wait_timeout:g}"
                    f' s (pool "{self.name}", size {self.cfg.size})',
                    fatal=True,
                )
            else:
                if not w.notified:
                    w.notified = True
                    text = (
                        f'No server connection available in pool "{self.name}", client being queued'
                    )
                    if self.pinned:
                        text += "; " + self.pins_held()
                        log.warning("pool %s: clients wait; %s", self.name, self.pins_held())
                    w.notice(text)
                continue
            self.waiters.remove(w)
            w.on_wait_error(error)

    def resume(self) -> None:
        """After a pause: serve queued clients from idle servers, open more if needed."""
        now = time.monotonic()
        for client in self.waiters:  # time spent paused does not count against query_wait_timeout
            client.wait_since = now
        self._serve_waiters()
        self._grow()

    def cancel_waiter(self, client: Any) -> bool:
        """A cancel request for a queued client: it leaves the queue with 57014."""
        if self.cancel_wait(client):
            client.on_wait_error(PgError(QUERY_CANCELED, "canceling statement due to user request"))
            return True
        return False

    def close_all(self, reason: str) -> None:
        for server in list(self.idle) + list(self.active):
            server.close(reason)
        self.idle.clear()
        self.active.clear()
        self.held.clear()
        self.canceling.clear()
        for task in list(self.tasks):
            task.cancel()

    def snapshot(self) -> dict[str, int]:
        linked = sum(
            1 for c in self.clients if getattr(c, "server", None) is not None and not c.server.held
        )
        return {
            "cl_active": linked,
            "cl_waiting": len(self.waiters),
            "cl_total": len(self.clients),
            "sv_active": len(self.active) - len(self.canceling),
            "sv_idle": len(self.idle),
            "sv_being_canceled": len(self.canceling),
            "sv_login": self.connecting,
            "sv_total": self.total,
            "cl_pinned": len(self.pinned),
        }
