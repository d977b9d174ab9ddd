"""One pool: server connections by where they sit, a FIFO queue of clients, and the one function
that moves a server between places."""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import deque
from enum import IntEnum
from typing import Any

from pyproxy.config import ClusterConfig, PoolConfig, PoolSettings
from pyproxy.errors import ADMIN_SHUTDOWN, QUERY_CANCELED, PgError
from pyproxy.pool.figures import BOUNDS as WAIT_BOUNDS
from pyproxy.pool.figures import Figures
from pyproxy.pool.lifetime import lifetime_over
from pyproxy.pool.opening import Connector, Opener
from pyproxy.pool.pinned import Pinned
from pyproxy.proto.codes import IDLE as IDLE_STATUS

log = logging.getLogger("pyproxy.pool")

# A client keeps its server between transactions for at most this long while nobody waits.
HOLD_IDLE = 0.25


class Place(IntEnum):
    """Where a server sits; its state is the container it is in (``Pool._move`` alone sets it)."""

    NONE = 0  # not in the pool: connecting, closed, or a probe
    IDLE = 1  # nobody's: the next client may have it
    LINKED = 2  # a client's (also while the client is between transactions and keeps it)
    CLEANING = 3  # running a rollback, reset or health check before it may go back
    CANCELING = 4  # back from its client, waiting until PostgreSQL closed its cancel requests


class Pool:
    """Server connections for one (pool name, server login user).

    A server sits in exactly one place (``Place``): ``idle`` (used last in, first out),
    ``linked`` to a client, ``cleaning`` or ``canceling``; servers being opened are counted in
    ``connecting``. ``_move`` is the only code that changes these containers. Clients that
    want a server while none is idle wait in ``waiters``, first come, first served.

    Every server coming back from a client goes through ``release``, which decides what must
    happen before another client may have it; under load ``hand_over`` gives it straight to
    the next queued client when nothing has to happen first.
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
        self.idle: dict[Any, None] = {}
        self.linked: dict[Any, None] = {}
        self.cleaning: dict[Any, None] = {}
        self.canceling: dict[Any, None] = {}
        self._places = {
            Place.IDLE: self.idle,
            Place.LINKED: self.linked,
            Place.CLEANING: self.cleaning,
            Place.CANCELING: self.canceling,
        }
        self.opener = Opener(self, connector)
        self.servers = 0  # in the containers: kept by _move
        self.waiters: deque[Any] = deque()
        self.clients: set[Any] = set()
        self.pinned = Pinned(self)  # clients pinned to their server (session_state = "pin")
        self.checks = 0  # health checks running (each serves the head of the queue when done)
        # What a server login tells every client of the pool (see Opener.wait_welcome), and
        # the greetings built from it, by the client's startup parameters.
        self.welcome: dict[str, str] | None = None
        self.welcome_names: dict[str, str] = {}
        self.greetings: dict[Any, tuple[bytes, dict[str, str]]] = {}
        self.last_error: PgError | None = None
        self.last_error_at = 0.0
        # Change these through set_paused, mark_deleted and reconfigure: they keep ``steady``,
        # ``max_age`` and ``within`` (what every release checks) up to date.
        self.paused = False
        self.deleted = False
        self.steady = True  # not paused or deleted
        self.max_age = math.inf  # server_lifetime, or infinity when there is none
        self.within = True  # the servers cannot outnumber the size (see fits)
        # The part of the pool's size this process may open: all of it unless an allocator
        # (worker processes or instances sharing one budget) gives it less. ``cap`` is the
        # smaller of the two, what every size check uses.
        self.share: int | None = None
        self.cap = cfg.size
        # Counters; the hot ones are attributes.
        self.xact_count = 0  # transactions (statements in statement mode) served
        self.wait_count = 0  # requests that were queued
        self.wait_time = 0.0  # seconds they spent queued
        self.stats = {"session_state_warnings": 0, "session_state_errors": 0}
        self.wait_counts = [0] * (len(WAIT_BOUNDS) + 1)  # histogram of queue waits
        self.figures = Figures()  # the rest of /metrics (pyproxy.pool.figures)
        self.last_lifetime_close = 0.0
        self._restate()

    # ---- the one move --------------------------------------------------------------------------

    def _move(self, server: Any, to: Place) -> None:
        """Put ``server`` in the container of ``to`` (out of the one it was in)."""
        now = server.place
        if now is to:
            return
        if now:
            del self._places[now][server]
        else:
            self.servers += 1
        if to:
            self._places[to][server] = None
        else:
            self.servers -= 1
        server.place = to

    # ---- state ----------------------------------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self._restate()

    def mark_deleted(self) -> None:
        self.deleted = True
        self._restate()

    def reconfigure(self, cfg: PoolConfig) -> None:
        self.cfg = cfg
        self._restate()

    def set_share(self, share: int | None) -> None:
        """This process's part of the size (None: all); extra servers close (busy ones later)."""
        self.share = share
        self._restate()
        excess = self.total - self.cap
        if excess > 0:
            self.close_idle("share reduced", keep=max(0, len(self.idle) - excess))
            if self.total > self.cap:
                self.reclaim_kept()  # kept between transactions: released, so closed
            return
        self.grow()  # queued clients get servers at once where there is room
        if self.welcome is None and not self.paused:
            self.opener.welcome_login()  # clients waiting for the first login may go on

    def _restate(self) -> None:
        """Precompute what a release checks for every transaction."""
        self.steady = not self.paused and not self.deleted
        size = self.cfg.size
        self.cap = size if self.share is None else max(0, min(size, self.share))
        lifetime = self.cfg.settings.server_lifetime
        self.max_age = lifetime if lifetime > 0 else math.inf
        self.within = False
        self.fits()

    def fits(self) -> bool:
        """Are there no more servers than the pool's size? Only a reserve pool or a smaller
        size (a new config) can make it false; without a reserve, once true it stays so until
        the config changes, and ``within`` lets releases skip counting."""
        fits = self.total <= self.cap
        if fits and not self.cfg.settings.reserve_pool_size:
            self.within = True
        return fits

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

    @property
    def total(self) -> int:
        """Servers of this pool, open or being opened."""
        return self.servers + self.opener.connecting

    def limit(self) -> int:
        """Servers this pool may hold now; the reserve once the head waited long, if unshared."""
        size = self.cap
        s = self.settings
        if s.reserve_pool_size and self.waiters and self.share is None:
            waited = time.monotonic() - self.waiters[0].wait_since
            if waited >= s.reserve_pool_timeout:
                size += s.reserve_pool_size
        return size

    # ---- getting a server -----------------------------------------------------------------------

    def take_idle(self) -> Any | None:
        """An idle server to link to a request that arrives while nobody waits, if one needs
        nothing first (not closed, not due for a health check); None otherwise."""
        if self.waiters or self.paused or not self.idle:
            return None
        server = next(reversed(self.idle))
        if server.closed or self._needs_check(server):
            return None
        self._move(server, Place.LINKED)
        return server

    def acquire(self, client: Any) -> None:
        """Link an idle server to ``client`` now, take back one a client keeps between
        transactions, or queue the client and open servers."""
        if self.deleted:
            client.on_wait_error(
                PgError(ADMIN_SHUTDOWN, f'pool "{self.name}" was deleted', fatal=True)
            )
            return
        if not self.paused and not self.waiters:
            server = self._link_idle()
            if server is not None:
                client.on_server(server)
                return
            kept = self._kept()
            if kept is not None:
                kept.client.give_up_server()
                client.on_server(kept)
                return
        if self.last_error is not None and self.opener.failing_fast():
            client.on_wait_error(self.last_error)
            return
        self.enqueue(client)

    def _link_idle(self) -> Any | None:
        """The most recently used idle server, moved to ``linked`` for a client; closed ones
        met first are dropped. None when there is none, or when the one found needs a health
        check first (the check starts; its end serves the head of the queue)."""
        idle = self.idle
        while idle:
            server = next(reversed(idle))
            if server.closed:
                self._move(server, Place.NONE)
                continue
            if self._needs_check(server):
                self._start_check(server)
                return None
            self._move(server, Place.LINKED)
            return server
        return None

    def enqueue(self, client: Any) -> None:
        """Queue ``client``; its ``wait_since`` says when the request that waits arrived."""
        client.notified = False
        self.waiters.append(client)
        self.wait_count += 1
        if self.idle:
            self.serve_waiters()  # idle servers left while others are being checked
        if self.total < self.cap or self.cfg.settings.reserve_pool_size:
            self.grow()

    def _kept(self) -> Any | None:
        """A server a client keeps between transactions only because nobody needed it."""
        for server in self.linked:
            client = server.client
            if client is not None and client.reclaimable():
                return server
        return None

    def _start_check(self, server: Any) -> None:
        """Check a long-idle server; when the check ends it serves the head of the queue."""
        self._move(server, Place.CLEANING)
        self.checks += 1
        server.checked = True
        server.check()

    def _needs_check(self, server: Any) -> bool:
        delay = self.settings.server_check_delay
        return delay > 0 and time.monotonic() - server.idle_since > delay

    def cancel_wait(self, client: Any) -> bool:
        try:
            self.waiters.remove(client)
        except ValueError:
            return False
        return True

    def cancel_waiter(self, client: Any) -> bool:
        """A cancel request for a queued client: it leaves the queue with 57014."""
        if self.cancel_wait(client):
            client.on_wait_error(PgError(QUERY_CANCELED, "canceling statement due to user request"))
            return True
        return False

    # ---- opening servers ------------------------------------------------------------------------

    @property
    def connecting(self) -> int:
        return self.opener.connecting

    def grow(self) -> None:
        self.opener.grow()

    def open_for(self, client: Any) -> bool:
        return self.opener.open_for(client)

    async def wait_welcome(self) -> None:
        """Wait until one server login has told us the server's ParameterStatus set."""
        await self.opener.wait_welcome()

    def forget_welcome(self) -> None:
        """The server behind the pool changed: learn its parameters again at the next login."""
        self.welcome = None
        self.greetings.clear()

    def adopt(self, server: Any, client: Any) -> None:
        """A server just logged in: for ``client`` (``open_for``) if it still waits, else
        through the release path like any other."""
        server.idle_since = time.monotonic()
        if client is not None and client.wants_server():
            self._move(server, Place.LINKED)
            client.on_server(server)
        else:
            self.release(server, fresh=True)

    # ---- giving a server back -------------------------------------------------------------------

    def release(self, server: Any, fresh: bool = False, now: float = 0.0) -> None:
        """The one path back into the pool, for a server nothing of whose reply is still to
        come. In this order: a closed one is forgotten, a stale one closed; one with cancels in
        flight waits in ``canceling`` (``cancel_landed`` brings it back); one inside a
        transaction is rolled back and one with ``reset_sql`` (session mode's
        ``server_reset_query``, a pinned client's state) is reset, each calling ``release``
        again when done; then it is closed (pool shrunk or deleted, lifetime over), handed to
        the head of the queue or put with the idle servers."""
        if server.closed:
            self.forget(server)
            self.grow()
            return
        if server.stale:
            server.close("pool settings changed")
            return
        if server.cancels:
            self._move(server, Place.CANCELING)
            return
        if server.status != IDLE_STATUS:
            self._move(server, Place.CLEANING)
            server.clean("ROLLBACK")
            return
        if server.reset_sql:
            sql, server.reset_sql = server.reset_sql, ""
            self._move(server, Place.CLEANING)
            server.clean(sql)
            return
        if server.checked:
            server.checked = False
            self.checks -= 1
        now = now or time.monotonic()
        # Over the limit (the pool shrank, or a reserve server is no longer needed): close it.
        others = self.total - (server.place is not Place.NONE)
        if self.deleted or (others >= self.cap and others >= self.limit()):
            server.close("pool shrunk")
            return
        lifetime = self.cfg.settings.server_lifetime
        if not fresh and 0 < lifetime <= now - server.created and lifetime_over(self, server, now):
            server.close("server_lifetime")
            self.grow()
            return
        if self.waiters and not self.paused:
            self._move(server, Place.LINKED)
            self._hand_to_waiter(server, now)
            return
        server.idle_since = now
        self._move(server, Place.IDLE)

    def keeps(self, server: Any) -> bool:
        """May a client keep the clean (not stale) ``server`` after its transaction, nobody
        else needing it now?"""
        return (
            self.steady
            and not server.cancels
            and server.ready_at - server.created < self.max_age
            and (self.within or self.fits())
        )

    def hand_over(self, server: Any, now: float) -> None:
        """Release under load: a clean server goes straight to the head of the queue, unless
        it has to leave the pool (shrunk, lifetime over) or the pool is paused or deleted."""
        if (
            self.steady
            and self.waiters
            and not server.closed
            and not server.cancels
            and now - server.created < self.max_age
            and (self.within or self.fits())
        ):
            self._hand_to_waiter(server, now)  # it stays linked: to the next client
        else:
            server.unlink()
            self.release(server, now=now)

    def next_waiter(self, now: float) -> Any:
        """The head of the queue leaves it (to be given a server): its wait is counted."""
        client = self.waiters.popleft()
        waited = now - client.wait_since
        self.wait_time += waited
        self.wait_counts[bisect.bisect_left(WAIT_BOUNDS, waited)] += 1
        return client

    def _hand_to_waiter(self, server: Any, now: float) -> None:
        self.next_waiter(now).on_server(server)

    def cancel_landed(self, server: Any) -> None:
        """PostgreSQL closed the last cancel connection forwarded for ``server``: if it came
        back meanwhile, it may go to another client now."""
        if server.place is Place.CANCELING and not server.cancels:
            self.release(server)

    def reclaim_kept(self, older_than: float = 0.0) -> None:
        """Take back servers clients keep between transactions (all, or those idle longer
        than ``older_than``) and release them."""
        now = time.monotonic()
        for server in list(self.linked):
            client = server.client
            if client is not None and client.reclaimable() and now - server.ready_at >= older_than:
                client.give_up_server()
                self.release(server, now=now)

    def serve_waiters(self) -> None:
        """Give idle (then kept) servers to queued clients in arrival order; long-idle ones are
        checked first. A server under check serves the head of the queue when the check ends,
        so at most one check runs per waiting client."""
        if self.paused:
            return
        now = time.monotonic()
        while self.idle and len(self.waiters) > self.checks:
            server = self._link_idle()
            if server is not None:
                self._hand_to_waiter(server, now)
        while len(self.waiters) > self.checks:
            kept = self._kept()
            if kept is None:
                break
            kept.client.give_up_server()
            self._hand_to_waiter(kept, now)

    def forget(self, server: Any) -> None:
        """A server closed or died: out of every container."""
        if server.checked:
            server.checked = False
            self.checks -= 1
        self._move(server, Place.NONE)

    def discard(self, server: Any) -> None:
        """A server closed or died: forget it and open another if clients wait."""
        self.forget(server)
        self.grow()

    def close_idle(self, reason: str, keep: int = 0, oldest_first: bool = True) -> None:
        """Close idle servers until ``keep`` are left."""
        while len(self.idle) > keep:
            server = next(iter(self.idle)) if oldest_first else next(reversed(self.idle))
            self._move(server, Place.NONE)
            server.close(reason)

    def mark_stale(self) -> None:
        """The pool's server changed: servers in use close when their client lets go."""
        for place in (self.linked, self.cleaning, self.canceling):
            for server in place:
                server.stale = True

    def close_server(self, server: Any, reason: str) -> None:
        """Close one server, wherever it sits."""
        self._move(server, Place.NONE)
        server.close(reason)

    def close_all(self, reason: str) -> None:
        for place in (self.idle, self.linked, self.cleaning, self.canceling):
            for server in list(place):
                self.close_server(server, reason)
        self.opener.cancel_all()

    def resume(self) -> None:
        """After a pause: serve queued clients from idle servers, open more if needed."""
        now = time.monotonic()
        for client in self.waiters:  # time spent paused does not count against query_wait_timeout
            client.wait_since = now
        self.serve_waiters()
        self.grow()
