"""Live figures of a cluster's pools (GET /v2/databases/{uuid}/stats): collection and schema."""

from __future__ import annotations

import time
from typing import Any, Protocol

from pyproxy.config import MODES, ClusterConfig, PoolConfig
from pyproxy.pool.pool import Pool
from pyproxy.pool.stats import longest_wait


class StatsSource(Protocol):
    """What the figures are read from (the pool registry)."""

    def pool_configs(self, cluster_id: str) -> list[PoolConfig]: ...
    def pool_stats(self, name: str) -> dict[str, int]: ...
    def pool_counters(self, name: str) -> dict[str, Any]: ...
    def wait_histogram(self, name: str) -> tuple[list[float], list[int], float]: ...
    def live_pools(self, name: str | None = None) -> list[Pool]: ...
    def servers_in_use(self, cluster_id: str) -> int: ...
    def is_paused(self, name: str) -> bool: ...


# Per-pool figures of one process. Several processes serving the same pools add up by summing
# every field here except longest_wait_seconds (the largest wins).
POOL_COUNTS = (
    "clients_active",
    "clients_waiting",
    "clients_idle",
    "clients_total",
    "servers_active",
    "servers_idle",
    "servers_login",
    "servers_being_canceled",
    "servers_total",
    "transactions_total",
    "waits_total",
)


def collect(source: StatsSource, cluster: ClusterConfig) -> dict[str, Any]:
    """The body of the stats endpoint for ``cluster``: plain numbers and strings only.

    Counters (``*_total``) only grow while the pool exists, so a reader gets rates from two
    samples and their ``sampled_at`` (Unix seconds).
    """
    now = time.monotonic()
    pools = []
    sizes = 0
    for cfg in source.pool_configs(cluster.id):
        sizes += cfg.size
        pools.append(_pool(source, cfg, now))
    return {
        "cluster": cluster.id,
        "sampled_at": time.time(),
        "connection_budget": cluster.budget,
        "pools_size_sum": sizes,
        "pools_size_free": max(0, cluster.budget - sizes),
        "server_connections": source.servers_in_use(cluster.id),
        "pools": pools,
    }


def _pool(source: StatsSource, cfg: PoolConfig, now: float) -> dict[str, Any]:
    snap = source.pool_stats(cfg.name)
    _bounds, wait_counts, wait_seconds = source.wait_histogram(cfg.name)
    active, waiting, total = snap["cl_active"], snap["cl_waiting"], snap["cl_total"]
    longest = max((longest_wait(p, now) for p in source.live_pools(cfg.name)), default=0.0)
    return {
        "name": cfg.name,
        "mode": cfg.mode,
        "size": cfg.size,
        "paused": source.is_paused(cfg.name),
        "clients_active": active,
        "clients_waiting": waiting,
        "clients_idle": max(0, total - active - waiting),
        "clients_total": total,
        "servers_active": snap["sv_active"],
        "servers_idle": snap["sv_idle"],
        "servers_login": snap["sv_login"],
        "servers_being_canceled": snap["sv_being_canceled"],
        "servers_total": snap["sv_total"],
        "transactions_total": int(source.pool_counters(cfg.name).get("xact_count", 0)),
        "waits_total": sum(wait_counts),
        "wait_seconds_total": round(wait_seconds, 6),
        "longest_wait_seconds": round(longest, 6),
    }


# ---- the OpenAPI description ----------------------------------------------------------------

_COUNT = {"type": "integer", "minimum": 0}
_SECONDS = {"type": "number", "minimum": 0}
_POOL_DESCRIPTIONS = {
    "clients_active": "Clients in a transaction (session mode: holding a server).",
    "clients_waiting": "Clients queued for a server.",
    "clients_idle": "Connected clients neither active nor waiting.",
    "clients_total": "Clients connected to the pool.",
    "servers_active": "Server connections linked to a client or being cleaned.",
    "servers_idle": "Server connections ready for the next client.",
    "servers_login": "Server connections being opened.",
    "servers_being_canceled": "Server connections waiting for a forwarded cancel to land.",
    "servers_total": "Server connections open.",
    "transactions_total": (
        "Transactions served in transaction mode, statements in statement mode; a counter. "
        "Session-mode pools count none (a client keeps its server until it leaves)."
    ),
    "waits_total": "Clients that were given a server after queueing; a counter.",
}

SCHEMAS: dict[str, Any] = {
    "PoolStats": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "mode": {"type": "string", "enum": list(MODES)},
            "size": {"type": "integer", "minimum": 1},
            "paused": {"type": "boolean", "description": "Held by a pause request."},
            **{k: {**_COUNT, "description": _POOL_DESCRIPTIONS[k]} for k in POOL_COUNTS},
            "wait_seconds_total": {
                **_SECONDS,
                "description": "Seconds those clients spent queued; a counter.",
            },
            "longest_wait_seconds": {
                **_SECONDS,
                "description": "How long the longest-queued client has waited so far (maxwait).",
            },
        },
        "required": [
            "name",
            "mode",
            "size",
            "paused",
            *POOL_COUNTS,
            "wait_seconds_total",
            "longest_wait_seconds",
        ],
    },
    "ClusterStats": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "cluster": {"type": "string"},
            "sampled_at": {"type": "number", "description": "When: Unix time in seconds."},
            "connection_budget": {
                **_COUNT,
                "description": "Server connections the cluster's pools may share.",
            },
            "pools_size_sum": {**_COUNT, "description": "Sum of the pools' sizes."},
            "pools_size_free": {
                **_COUNT,
                "description": "Backend connections left in the budget for new or larger pools.",
            },
            "server_connections": {**_COUNT, "description": "Server connections open now."},
            "pools": {"type": "array", "items": {"$ref": "#/components/schemas/PoolStats"}},
        },
        "required": [
            "cluster",
            "sampled_at",
            "connection_budget",
            "pools_size_sum",
            "pools_size_free",
            "server_connections",
            "pools",
        ],
    },
}

GET_STATS: dict[str, Any] = {
    "operationId": "databases_get_connectionPoolStats",
    "summary": "Live figures of every pool of a cluster (the dashboard polls this)",
    "description": (
        "Clients and server connections by state now, and counters of transactions and queue "
        "waits since the pool was created; rates come from two samples and their sampled_at."
    ),
}
