"""A server login whose whole answer arrives before anyone awaits it (trust auth on a fast
PostgreSQL: AuthenticationOk to ReadyForQuery in one read, delivered before the coroutine that
opened the connection resumes)."""

from __future__ import annotations

import asyncio

from pyproxy.net.connect import ServerLoginDriver
from pyproxy.net.server import ServerConn
from pyproxy.proto import messages as m
from tests.support import fakes


def test_a_login_finished_before_it_is_awaited_yields_the_server() -> None:
    async def body() -> None:
        servers, _ = fakes.world(0)
        pool = servers[0].pool
        assert pool is not None
        server = ServerConn(pool, max_packet=1 << 20, tracked=frozenset())
        server.login = ServerLoginDriver(server, pool, 1 << 20)
        server.connection_made(fakes.Transport())  # type: ignore[arg-type]
        auth_ok = fakes.message(b"R", b"\x00\x00\x00\x00")
        key = fakes.message(b"K", (1234).to_bytes(4, "big") + (5678).to_bytes(4, "big"))
        server.data_received(auth_ok + key + m.READY_IDLE)
        assert await asyncio.wait_for(server.wait_login(), 1) is server
        assert (server.pid, server.secret) == (1234, 5678)

    asyncio.run(body())
