"""Listening sockets for PostgreSQL clients; SO_REUSEPORT when worker processes share one."""

from __future__ import annotations

import asyncio

from pyproxy.net.client import ClientConn
from pyproxy.net.state import ProxyState

BACKLOG = 4096


async def listen(
    state: ProxyState, host: str, port: int, reuse_port: bool = False
) -> asyncio.Server:
    """Accept PostgreSQL clients on ``host:port`` (port 0: any free port); with ``reuse_port``
    several worker processes accept on the same address and the kernel spreads clients."""
    loop = asyncio.get_running_loop()

    def factory() -> ClientConn:
        state.accepted += 1
        return ClientConn(state)

    return await loop.create_server(
        factory, host, port, reuse_address=True, reuse_port=reuse_port or None, backlog=BACKLOG
    )
