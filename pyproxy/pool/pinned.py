"""Clients pinned to their server (session_state = "pin"): who they are, for the clients queued
behind them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyproxy.pool.pool import Pool


class Pinned:
    """The pool's pinned clients and how many were pinned so far."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.clients: set[Any] = set()
        self.total = 0

    def __len__(self) -> int:
        return len(self.clients)

    def __bool__(self) -> bool:
        return bool(self.clients)

    def add(self, client: Any) -> None:
        self.clients.add(client)
        self.total += 1

    def discard(self, client: Any) -> None:
        self.clients.discard(client)

    def describe(self) -> str:
        """Which pinned clients hold servers of the pool, for the clients waiting behind them."""
        pinned = sorted(self.clients, key=lambda c: c.id)
        named = ", ".join(c.pin_description() for c in pinned[:5])
        more = f" and {len(pinned) - 5} more" if len(pinned) > 5 else ""
        return f"{len(pinned)} of its {self.pool.cfg.size} servers are pinned to {named}{more}"
