"""Listening sockets for PostgreSQL clients (where TLS contexts and SO_REUSEPORT will go)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pyproxy.net.client import ClientConn
from pyproxy.net.state import ProxyState

BACKLOG = 4096


async def listen(state: ProxyState, host: str, port: int) -> asyncio.Server:
    """Accept PostgreSQL clients on ``host:port`` (port 0: any free port)."""
    loop = asyncio.get_running_loop()
    factory: Callable[[], ClientConn] = lambda: ClientConn(state)  # noqa: E731
    return await loop.create_server(factory, host, port, reuse_address=True, backlog=BACKLOG)
