"""server_lifetime: when a server has lived long enough to be closed on its way back."""

from __future__ import annotations

from typing import Any


def lifetime_over(pool: Any, server: Any, now: float) -> bool:
    """Is ``server`` past server_lifetime, and may it close now? Lifetime closes are spread
    out: at most one per lifetime / size seconds, so a pool opened at once does not close at
    once."""
    lifetime = pool.settings.server_lifetime
    if lifetime <= 0 or now - server.created < lifetime:
        return False
    gap = lifetime / max(pool.cfg.size, 1)
    if now - pool.last_lifetime_close < gap:
        return False
    pool.last_lifetime_close = now
    return True
