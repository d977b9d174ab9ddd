"""Process-wide proxy state shared by the client and server protocols (one per running proxy)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from pyproxy.auth.scram import make_scram_secret
from pyproxy.auth.throttle import LoginThrottle
from pyproxy.config import ClusterConfig, Config
from pyproxy.errors import CONNECTION_FAILURE, PgError
from pyproxy.net.server import ServerConn, send_cancel
from pyproxy.net.timeouts import check_client
from pyproxy.pool import params as P
from pyproxy.pool.prepared import StatementRegistry
from pyproxy.proto.messages import cancel_request

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn
    from pyproxy.pool.manager import PoolManager

log = logging.getLogger("pyproxy.cancel")
_MOCK_CACHE = 1024
CANCEL_TIMEOUT = 10.0  # seconds for PostgreSQL to take a forwarded cancel and close its connection


class ProxyState:
    """Everything a connection needs from the running proxy; no module-level globals."""

    def __init__(self, config: Config, manager: PoolManager) -> None:
        self.config = config
        self.manager = manager
        self.clients: set[ClientConn] = set()
        self.cancel_keys: dict[tuple[int, int], ClientConn] = {}
        self.tracked = P.tracked_set(config.proxy.track_extra_parameters)
        self.excluded = frozenset(n.lower() for n in config.proxy.replay_exclude)
        self.statements = StatementRegistry()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._secrets: dict[tuple[str, str, str], str] = {}
        self._mock: OrderedDict[str, str] = OrderedDict()
        self._mock_key = secrets.token_bytes(16)
        self._login_timers: dict[ClientConn, asyncio.TimerHandle] = {}
        self.throttle = _throttle(config)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.tracked = P.tracked_set(config.proxy.track_extra_parameters)
        self.excluded = frozenset(n.lower() for n in config.proxy.replay_exclude)
        self._secrets.clear()
        limits = (config.proxy.auth_failure_limit, config.proxy.auth_failure_window)
        if (self.throttle.limit, self.throttle.window) != limits:
            self.throttle = _throttle(config)  # counts start again

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def tick(self, now: float) -> None:
        """Client-side timeouts; skipped entirely while no pool configures any."""
        pools = self.manager.live_pools()
        if not any(
            p.settings.client_idle_timeout
            or p.settings.idle_transaction_timeout
            or p.settings.query_timeout
            or p.settings.transaction_timeout
            for p in pools
        ):
            return
        for client in list(self.clients):
            check_client(client, now)

    # ---- login deadline ---------------------------------------------------------------------

    def watch_login(self, client: ClientConn) -> None:
        """Start ``client_login_timeout`` for a new connection: it counts from the TCP accept."""
        timeout = self.config.proxy.client_login_timeout
        if timeout > 0:
            handle = asyncio.get_running_loop().call_later(timeout, self._login_expired, client)
            self._login_timers[client] = handle

    def login_done(self, client: ClientConn) -> None:
        handle = self._login_timers.pop(client, None)
        if handle is not None:
            handle.cancel()

    def _login_expired(self, client: ClientConn) -> None:
        from pyproxy.net.client import AUTH, LOGIN, STARTUP

        self._login_timers.pop(client, None)
        if client.state not in (STARTUP, AUTH, LOGIN):
            return
        timeout = self.config.proxy.client_login_timeout
        waiting = client.state == LOGIN and client.pool is not None and client.pool.welcome is None
        reason = " (server down)" if waiting else ""
        client.fatal(
            PgError(
                CONNECTION_FAILURE,
                f"client_login_timeout{reason}: login did not complete in {timeout:g} s",
                fatal=True,
            )
        )

    # ---- credentials ------------------------------------------------------------------------

    def scram_secret(self, cluster: ClusterConfig, user: str) -> str:
        """The SCRAM secret for a configured user, or a stable fake one for an unknown user."""
        known = cluster.user(user)
        if known is not None:
            key = (cluster.id, user, known.password)
            secret = self._secrets.get(key)
            if secret is None:
                secret = make_scram_secret(known.password)
                self._secrets[key] = secret
            return secret
        secret = self._mock.get(user)
        if secret is None:
            salt = hmac.new(self._mock_key, user.encode(), hashlib.sha256).digest()[:16]
            secret = make_scram_secret(secrets.token_hex(16), salt=salt)
            self._mock[user] = secret
            if len(self._mock) > _MOCK_CACHE:
                self._mock.popitem(last=False)
        return secret

    # ---- cancel -----------------------------------------------------------------------------

    def new_cancel_key(self, client: ClientConn) -> tuple[int, int]:
        """A random (process id, secret) pair, unique among live clients (one urandom call)."""
        while True:
            bits = int.from_bytes(secrets.token_bytes(8))
            key = ((bits >> 32) & 0x7FFFFFFF, bits & 0xFFFFFFFF)
            if key not in self.cancel_keys:
                self.cancel_keys[key] = client
                return key

    def handle_cancel(self, pid: int, secret: int) -> None:
        """A CancelRequest with a key pyproxy handed out: cancel that client's query only.

        The server is counted as being cancelled (``ServerConn.cancels``) from here until
        PostgreSQL has closed the cancel connection: PostgreSQL signals the backend before it
        closes it, so until then the cancel may still land, and the pool keeps the server away
        from every other client (``Pool.release``).
        """
        client = self.cancel_keys.get((pid, secret))
        if client is None:
            log.info("cancel request with an unknown key ignored")
            return
        from pyproxy.net.client import WAITING

        pool = client.pool
        if client.state == WAITING and pool is not None:
            pool.cancel_waiter(client)
            return
        server = client.server
        if server is None or server.closed or (server.pending <= 0 and not client.open_ext):
            log.info("[c%d] cancel request for an idle client ignored", client.id)
            return
        server.cancels += 1
        self.spawn(self._forward_cancel(client, server, server.link_gen))

    async def _forward_cancel(self, client: ClientConn, server: ServerConn, gen: int) -> None:
        landed = True  # False: sent, but PostgreSQL was not seen closing the connection
        try:
            pool = server.pool
            if pool is None:
                return
            host, port = pool.cluster.host, pool.cluster.port
            async with asyncio.timeout(CANCEL_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    # The query may have finished while we connected: send only if the same
                    # client still holds the same link with work running.
                    if (
                        client.server is server
                        and server.link_gen == gen
                        and (server.pending > 0 or client.open_ext)
                    ):
                        writer.write(cancel_request(server.pid, server.secret))
                        landed = False
                        while await reader.read(256):
                            pass
                        landed = True
                finally:
                    writer.close()
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
        host, port = pool.cluster.host, pool.cluster.port
        self.spawn(self._send_cancel(host, port, server.pid, server.secret))

    async def _send_cancel(self, host: str, port: int, pid: int, secret: int) -> None:
        try:
            await send_cancel(host, port, pid, secret)
        except OSError as exc:
            log.debug("cancel of abandoned query failed: %s", exc)


def _throttle(config: Config) -> LoginThrottle:
    """The failed-login throttle of the PostgreSQL listener, as [proxy] asks."""
    return LoginThrottle(config.proxy.auth_failure_limit, config.proxy.auth_failure_window)
