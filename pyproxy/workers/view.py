"""The supervisor's pool registry: the definitions the admin API changes, every change sent to
each worker, and figures added up over the workers' latest stats.

The supervisor opens no server connection for clients (its registry has no live pool); the
admin API works on this view exactly as on a single process's registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pyproxy.config import Config, PoolConfig
from pyproxy.pool.opening import Connector
from pyproxy.pool.pool import WAIT_BOUNDS
from pyproxy.pool.registry import PoolRegistry

# (method, args): broadcast to every worker; the awaitable ends when all have applied it.
Broadcast = Callable[[str, tuple[Any, ...]], Awaitable[list[str | None]]]


@dataclass
class _Head:
    wait_since: float


@dataclass
class RemotePool:
    """What the stats code reads of a live pool (the longest wait), for a worker's pool."""

    waiters: list[_Head] = field(default_factory=list)


class ClusterView(PoolRegistry):
    """Pool definitions as the admin API sees them, with the workers' figures."""

    def __init__(self, config: Config, connector: Connector, broadcast: Broadcast) -> None:
        super().__init__(config, connector)
        self.broadcast = broadcast
        self.worker_stats: dict[int, dict[str, Any]] = {}  # by worker index: its last stats
        self.sent: list[tuple[str, tuple[Any, ...]]] = []  # changes not yet broadcast
        self.on_change: Callable[[], None] = lambda: None
        # One delivery at a time: an API answer waits for changes another delivery (of
        # definitions re-read from the state database) took off the queue before it.
        self._delivering = asyncio.Lock()

    # ---- changes: applied here, then to every worker -------------------------------------------

    def add_pool(self, cluster_id: str, pool: PoolConfig) -> None:
        super().add_pool(cluster_id, pool)
        self._send("add_pool", (cluster_id, pool))

    def update_pool(self, name: str, pool: PoolConfig) -> None:
        super().update_pool(name, pool)
        self._send("update_pool", (name, pool))

    def remove_pool(self, name: str) -> None:
        super().remove_pool(name)
        self._send("remove_pool", (name,))

    def resume_pools(self, names: list[str]) -> list[str]:
        out = super().resume_pools(names)
        self._send("resume_pools", (names,))
        return out

    async def pause_pools(self, names: list[str], timeout: float | None = None) -> list[str]:
        """Pause on every worker at once; if one times out, resume everywhere and say so."""
        self._paused.update(names)
        errors = await self.broadcast("pause_pools", (names, timeout))
        failed = [e for e in errors if e]
        if failed:
            self.resume_pools(names)
            raise TimeoutError(f"pools still busy after {timeout:g} s; pause undone")
        return sorted(names)

    def forget_paused(self, names: list[str]) -> None:
        """Resumed on every worker (the console's RESUME): workers start unpaused again."""
        self._paused.difference_update(names)

    def _send(self, method: str, args: tuple[Any, ...]) -> None:
        self.sent.append((method, args))
        self.on_change()

    async def deliver(self) -> None:
        """Send the changes made so far to every worker and wait until all have applied them."""
        async with self._delivering:
            while self.sent:
                method, args = self.sent.pop(0)
                await self.broadcast(method, args)

    def definitions(self) -> list[tuple[str, PoolConfig]]:
        return list(self._defs.values())

    # ---- figures over the workers --------------------------------------------------------------

    def _pools(self, name: str) -> list[dict[str, Any]]:
        return [s["pools"][name] for s in self.worker_stats.values() if name in s["pools"]]

    def pool_stats(self, name: str) -> dict[str, int]:
        keys = ("cl_active", "cl_waiting", "cl_total", "sv_active", "sv_idle")
        keys += ("sv_being_canceled", "sv_login", "sv_total", "cl_pinned")
        total = dict.fromkeys(keys, 0)
        for pool in self._pools(name):
            for k, v in pool["stats"].items():
                total[k] = total.get(k, 0) + v
        return total

    def pool_counters(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pool in self._pools(name):
            for k, v in pool["counters"].items():
                out[k] = out.get(k, 0) + v
        return out

    def wait_histogram(self, name: str) -> tuple[list[float], list[int], float]:
        counts = [0] * (len(WAIT_BOUNDS) + 1)
        total = 0.0
        for pool in self._pools(name):
            _bounds, theirs, seconds = pool["histogram"]
            for i, c in enumerate(theirs):
                counts[i] += c
            total += seconds
        return list(WAIT_BOUNDS), counts, total

    def live_pools(self, name: str | None = None) -> list[Any]:  # type: ignore[override]
        """One stand-in per worker pool: stats read the longest wait from it."""
        now = time.monotonic()
        out = []
        for stats in self.worker_stats.values():
            for pool_name, pool in stats["pools"].items():
                if name is None or pool_name == name:
                    head = [_Head(now - pool["longest"])] if pool["longest"] else []
                    out.append(RemotePool(head))
        return out

    def servers_in_use(self, cluster_id: str) -> int:
        return sum(s["servers"].get(cluster_id, 0) for s in self.worker_stats.values())

    def clients_total(self) -> int:
        return sum(s["clients"] for s in self.worker_stats.values())
