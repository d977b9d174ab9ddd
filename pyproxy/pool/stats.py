"""Read-only views of a pool for statistics: clients and servers by state, counters."""

from __future__ import annotations

from typing import Any

from pyproxy.pool.pool import Pool


def snapshot(pool: Pool) -> dict[str, int]:
    """Clients and servers by state, PgBouncer's SHOW POOLS names."""
    linked = sum(1 for server in pool.linked if server.client is not None)
    kept = sum(1 for s in pool.linked if s.client is not None and s.client.reclaimable())
    return {
        "cl_active": linked - kept,
        "cl_waiting": len(pool.waiters),
        "cl_total": len(pool.clients),
        "sv_active": len(pool.linked) + len(pool.cleaning),
        "sv_idle": len(pool.idle),
        "sv_being_canceled": len(pool.canceling),
        "sv_login": pool.connecting,
        "sv_total": pool.total,
        "cl_pinned": len(pool.pinned),
    }


def counters(pool: Pool) -> dict[str, Any]:
    return {
        "xact_count": pool.xact_count,
        "wait_count": pool.wait_count,
        "wait_time": pool.wait_time,
        "session_state_pins": pool.pinned.total,
        **pool.stats,
    }


def longest_wait(pool: Pool, now: float) -> float:
    """Seconds the longest-queued client has waited so far (PgBouncer's maxwait); 0 when none
    waits. ``now`` is ``time.monotonic()``, the clock ``wait_since`` is read from."""
    if not pool.waiters:
        return 0.0
    return max(0.0, now - pool.waiters[0].wait_since)
