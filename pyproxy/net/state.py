"""Process-wide proxy state shared by the client and server protocols (one per running proxy)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from pyproxy.auth.credentials import Credentials
from pyproxy.auth.passthrough import KeyStore
from pyproxy.auth.throttle import LoginThrottle
from pyproxy.config import Config
from pyproxy.errors import CONNECTION_FAILURE, PgError
from pyproxy.net.authquery import AuthQuery, Opener
from pyproxy.net.cancel import Cancels
from pyproxy.net.timeouts import check_client
from pyproxy.proto.phases import ClientPhase
from pyproxy.session import params as P
from pyproxy.session.prepared import StatementRegistry
from pyproxy.tls.live import LiveTls

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn
    from pyproxy.pool.registry import PoolRegistry
    from pyproxy.tls.contexts import TlsFiles


class ConsoleHandler(Protocol):
    """The admin console as the client shell sees it (the app hands one in)."""

    databases: frozenset[str]

    def role(self, user: str) -> str | None: ...
    def greeting(self, application_name: str) -> bytes: ...
    def attach(self, client: Any, role: str) -> None: ...
    def feed(self, client: Any, data: bytes) -> None: ...


class ProxyState:
    """Everything a connection needs from the running proxy; no module-level globals."""

    def __init__(self, config: Config, registry: PoolRegistry, opener: Opener) -> None:
        self.config = config
        self.registry = registry
        self.clients: set[ClientConn] = set()
        self.accepted = 0  # client connections accepted since start
        self.tracked = P.tracked_set(config.proxy.track_extra_parameters)
        self.excluded = frozenset(n.lower() for n in config.proxy.replay_exclude)
        self.statements = StatementRegistry()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.credentials = Credentials()
        self.keys = KeyStore()  # SCRAM keys recovered from clients, for pass-through
        self.auth_query = AuthQuery(
            opener, config.proxy.auth_cache_seconds, config.proxy.defaults.server_connect_timeout
        )
        self.throttle = _throttle(config)
        self.cancels = Cancels(self.spawn)
        self.tls = LiveTls(config.proxy.client_tls, _server_tls(config))
        self._login_timers: dict[ClientConn, asyncio.TimerHandle] = {}
        self.console: ConsoleHandler | None = None  # the admin console, when the app has one

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.tracked = P.tracked_set(config.proxy.track_extra_parameters)
        self.excluded = frozenset(n.lower() for n in config.proxy.replay_exclude)
        self.credentials.forget()
        self.tls.load(config.proxy.client_tls, _server_tls(config))
        self.auth_query.reconfigure(config.proxy.auth_cache_seconds)
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
        pools = self.registry.live_pools()
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

    # ---- login deadline -------------------------------------------------------------------------

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
        self._login_timers.pop(client, None)
        phase = client.phase
        if phase not in (ClientPhase.STARTUP, ClientPhase.AUTH, ClientPhase.LOGIN):
            return
        if client.login is not None and client.login.upgrading is not None:
            client.transport.abort()  # mid TLS handshake: nothing may go out in the clear
            return
        timeout = self.config.proxy.client_login_timeout
        waiting = phase is ClientPhase.LOGIN and client.pool is not None
        reason = " (server down)" if waiting and client.pool.welcome is None else ""
        message = f"client_login_timeout{reason}: login did not complete in {timeout:g} s"
        client.fatal(PgError(CONNECTION_FAILURE, message, fatal=True))


def _throttle(config: Config) -> LoginThrottle:
    """The failed-login throttle of the PostgreSQL listener, as [proxy] asks."""
    return LoginThrottle(config.proxy.auth_failure_limit, config.proxy.auth_failure_window)


def _server_tls(config: Config) -> list[TlsFiles]:
    return [config.proxy.server_tls, *(c.server_tls for c in config.clusters)]
