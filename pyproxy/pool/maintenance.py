"""A pool's maintenance, a few times a second: queue timeouts and notices, kept servers given
back, idle and old servers closed, min_pool_size kept."""

from __future__ import annotations

import logging

from pyproxy.config import PoolSettings
from pyproxy.errors import QUERY_CANCELED, QUERY_WAIT_TIMEOUT, PgError
from pyproxy.pool.lifetime import lifetime_over
from pyproxy.pool.pool import HOLD_IDLE, Pool

log = logging.getLogger("pyproxy.pool")


def tick(pool: Pool, now: float) -> None:
    """Called by the janitor a few times a second."""
    s = pool.settings
    if pool.waiters and not pool.paused:
        _check_waiters(pool, s, now)
    pool.reclaim_kept(HOLD_IDLE)
    if pool.waiters:
        pool.serve_waiters()
        pool.grow()
    keep = min(s.min_pool_size, pool.cap)  # a worker keeps it within its share
    if s.server_idle_timeout > 0 or s.server_lifetime > 0:
        for server in list(pool.idle):
            if len(pool.idle) + len(pool.linked) <= keep:
                break
            if s.server_idle_timeout > 0 and now - server.idle_since >= s.server_idle_timeout:
                pool.close_server(server, "server_idle_timeout")
            elif lifetime_over(pool, server, now):
                pool.close_server(server, "server_lifetime")
    while pool.idle and pool.total > pool.limit():
        pool.close_idle("pool shrunk", keep=len(pool.idle) - 1)
    if (
        keep
        and pool.total < keep
        and not pool.paused
        and not pool.deleted
        and (pool.last_error is None or now - pool.last_error_at >= s.server_login_retry)
    ):
        for _ in range(keep - pool.total):
            pool.opener.launch()


def _check_waiters(pool: Pool, s: PoolSettings, now: float) -> None:
    """Queued clients: query_timeout and query_wait_timeout end the wait, query_wait_notify tells
    the client once why it waits (and which pinned clients hold servers; with pins and no
    query_wait_notify, at half the query_wait_timeout)."""
    notify = s.query_wait_notify
    if not notify and pool.pinned:
        notify = s.query_wait_timeout / 2
    limits = [t for t in (s.query_timeout, s.query_wait_timeout, notify) if t > 0]
    if not limits:
        return
    first = min(limits)
    for w in list(pool.waiters):
        waited = now - w.wait_since
        if waited < first:
            break  # the queue is in arrival order: the rest waited less
        if 0 < s.query_timeout <= waited:
            # PgBouncer counts a query's time from its arrival, queue included.
            error = PgError(
                QUERY_CANCELED,
                f"query_timeout: query waited longer than {s.query_timeout:g} s for a "
                f'server (pool "{pool.name}", size {pool.cfg.size})',
                fatal=True,
            )
        elif 0 < s.query_wait_timeout <= waited:
            error = PgError(
                QUERY_WAIT_TIMEOUT,
                "query_wait_timeout: no server connection became free in "
                f'{s.query_wait_timeout:g} s (pool "{pool.name}", size {pool.cfg.size})',
                fatal=True,
            )
        else:
            if not w.notified:
                w.notified = True
                text = f'No server connection available in pool "{pool.name}", client being queued'
                if pool.pinned:
                    held = pool.pinned.describe()
                    text += "; " + held
                    log.warning("pool %s: clients wait; %s", pool.name, held)
                w.notice(text)
            continue
        pool.cancel_wait(w)
        w.on_wait_error(error)
