"""Cancel requests: the keys clients get, and forwarding a cancel to the one server running that
client's query, counted as in flight until PostgreSQL has closed the cancel connection."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from pyproxy.net.connect import send_cancel
from pyproxy.proto.phases import ClientPhase

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn
    from pyproxy.net.server import ServerConn

log = logging.getLogger("pyproxy.cancel")
CANCEL_TIMEOUT = 10.0  # seconds for PostgreSQL to take a forwarded cancel and close its connection

Spawn = Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
WORKER_BITS = 0x3F  # with worker processes, the low 6 bits of a key's process id name its owner


class Cancels:
    """Cancel keys by client, and the cancels being forwarded."""

    def __init__(self, spawn: Spawn) -> None:
        self.spawn = spawn
        self.keys: dict[tuple[int, int], ClientConn] = {}
        # With worker processes: this worker's index, carried by every key it hands out, and
        # where a cancel for another worker's key goes (None: one process, keys are all ours).
        self.worker = 0
        self.forward: Callable[[int, int, int], None] | None = None

    def new_key(self, client: ClientConn) -> tuple[int, int]:
        """A random (process id, secret) pair, unique among live clients (one urandom call)."""
        while True:
            bits = int.from_bytes(secrets.token_bytes(8))
            pid = (bits >> 32) & 0x7FFFFFFF
            if self.forward is not None:
                pid = (pid & ~WORKER_BITS) | self.worker
            key = (pid, bits & 0xFFFFFFFF)
            if key not in self.keys:
                self.keys[key] = client
                return key

    def forget(self, key: tuple[int, int]) -> None:
        self.keys.pop(key, None)

    def handle(self, pid: int, secret: int) -> None:
        """A CancelRequest with a key pyproxy handed out: cancel that client's query only.

        The server is counted as being cancelled (``ServerConn.cancels``) from here until
        PostgreSQL has closed the cancel connection: PostgreSQL signals the backend before it
        closes it, so until then the cancel may still land, and the pool keeps the server away
        from every other client (``Pool.release``).
        """
        if self.forward is not None and pid & WORKER_BITS != self.worker:
            self.forward(pid & WORKER_BITS, pid, secret)  # another worker's client
            return
        client = self.keys.get((pid, secret))
        if client is None:
            log.info("cancel request with an unknown key ignored")
            return
        pool = client.pool
        if client.phase is ClientPhase.WAITING and pool is not None:
            pool.figures.cancel("dequeued")
            pool.cancel_waiter(client)
            return
        server = client.server
        if server is None or server.closed or (server.pending <= 0 and not client.open_ext):
            log.info("[c%d] cancel request for an idle client ignored", client.id)
            if pool is not None:
                pool.figures.cancel("ignored")
            return
        server.cancels += 1
        if pool is not None:
            pool.figures.cancel("forwarded")
        self.spawn(self._forward(client, server, server.link_gen))

    async def _forward(self, client: ClientConn, server: ServerConn, gen: int) -> None:
        landed = True  # False: sent, but PostgreSQL was not seen closing the connection
        try:
            pool = server.pool
            if pool is None:
                return

            def still() -> bool:
                # The query may have finished while we connected: send only if the same client
                # still holds the same link with work running.
                return (
                    client.server is server
                    and server.link_gen == gen
                    and (server.pending > 0 or client.open_ext)
                )

            landed = await send_cancel(
                pool.cluster.host, pool.cluster.port, server.pid, server.secret,
                wait=CANCEL_TIMEOUT, still=still,
            )  # fmt: skip
        except (OSError, TimeoutError) as exc:
            log.warning("[c%d] cancel request for s%d failed: %s", client.id, server.id, exc)
        finally:
            server.cancels -= 1
            if not landed:
                server.close("cancel request not confirmed by the server")
            elif not server.cancels and server.pool is not None:
                server.pool.cancel_landed(server)

    def cancel_backend(self, server: ServerConn) -> None:
        """Cancel whatever a server is running (its client left); fire and forget."""
        pool = server.pool
        if pool is None or not server.pid:
            return
        pool.figures.cancel("abandoned")
        self.spawn(self._abandon(pool.cluster.host, pool.cluster.port, server.pid, server.secret))

    async def _abandon(self, host: str, port: int, pid: int, secret: int) -> None:
        try:
            await send_cancel(host, port, pid, secret)
        except OSError as exc:
            log.debug("cancel of abandoned query failed: %s", exc)
