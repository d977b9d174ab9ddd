"""The running proxy: listeners, pools, admin API, maintenance timer, reload and shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pyproxy.admin.store import PoolStore
from pyproxy.auth.throttle import LoginThrottle
from pyproxy.config import Config, PoolConfig, load_config
from pyproxy.console.periods import stats_line
from pyproxy.console.session import Console
from pyproxy.errors import ADMIN_SHUTDOWN, ConfigError, PgError
from pyproxy.net.connect import open_server
from pyproxy.net.listener import listen
from pyproxy.net.server import ServerConn
from pyproxy.net.state import ProxyState
from pyproxy.pool.maintenance import tick
from pyproxy.pool.pool import Pool
from pyproxy.pool.registry import PoolRegistry

log = logging.getLogger("pyproxy.app")
stats_log = logging.getLogger("pyproxy.stats")
JANITOR_INTERVAL = 0.05


class App:
    """One proxy instance. Several may run in one process (tests do)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.registry = PoolRegistry(config, self._connect)
        self.state = ProxyState(config, self.registry, self._connect)
        self.store: PoolStore | None = None
        self.admin = None
        self._server: asyncio.Server | None = None
        self._janitor: asyncio.Task[None] | None = None
        self.client_port = 0
        self.admin_port = 0
        self.stopping = False
        self.reuse_port = False  # a worker process: others accept on the same address
        self._stats: asyncio.Task[None] | None = None
        # SHUTDOWN from the admin console: the command line replaces this to end its serve loop.
        self.on_shutdown: Callable[[], object] = self._stop_soon
        self._stopper: asyncio.Task[None] | None = None
        self.console = Console(
            self.registry,
            lambda: self.config,
            lambda: list(self.state.clients),
            _ConsoleActions(self),
            self.state.spawn,
        )
        self.state.console = self.console

    async def _connect(self, pool: Pool) -> ServerConn:
        files = pool.cluster.server_tls
        return await open_server(
            pool,
            max_packet=self.config.proxy.max_packet_size,
            timeout=pool.settings.server_connect_timeout,
            tracked=self.state.tracked,
            tls=self.state.tls.server(files),
            sslmode=files.mode,
            keys=self.state.keys.get(pool.cluster.id, pool.login_user),
        )

    async def start(self) -> None:
        cfg = self.config
        if cfg.admin.enabled:
            await self._open_store()
        loop = asyncio.get_running_loop()
        self._server = await listen(
            self.state, cfg.proxy.listen_host, cfg.proxy.listen_port, self.reuse_port
        )
        sock = self._server.sockets[0]
        self.client_port = sock.getsockname()[1]
        host = cfg.proxy.listen_host
        self.registry.client_address = lambda: (host, self.client_port)
        self.registry.client_count = lambda: len(self.state.clients)
        log.info("accepting PostgreSQL clients on %s:%d", host, self.client_port)
        if cfg.admin.enabled and self.store is not None:
            from pyproxy.admin.server import AdminServer

            self.admin = AdminServer(
                cfg.admin,
                self.registry,
                self.store,
                pool_defaults=cfg.proxy.defaults,
                throttle=_login_throttle(cfg),
            )
            self.admin.api.client_ssl = cfg.proxy.client_tls.mode != "disable"
            try:
                await self.admin.start()
            except BaseException:
                self.admin = None
                self._server.close()
                await self.store.aclose()
                raise
            self.admin_port = self.admin.port
            self.admin.api.metrics_per_transaction = lambda: self.config.proxy.metrics
        self._janitor = loop.create_task(self._maintain())
        self._stats = loop.create_task(self._report_stats())

    async def _open_store(self) -> None:
        """Open the state store and add the pools it keeps (a PostgreSQL store also takes this
        instance's first shares of every pool before any client is served)."""
        cfg = self.config
        pg = None
        if cfg.admin.state_dsn:
            from pyproxy.admin.pgstore import PgStateStore

            pg = PgStateStore(cfg.admin.state_dsn, cfg.proxy.defaults)
            self.registry.default_share = 0  # nothing until the share table grants it
            await pg.open()
            self.store = pg
        else:
            from pyproxy.admin.store import StateStore

            self.store = StateStore(cfg.admin.state_path)
        for cluster_id, pool in self.store.load(cfg.proxy.defaults):
            if self.registry.cluster(cluster_id) is None:
                log.warning(
                    "stored pool %s names unknown cluster %s; ignored", pool.name, cluster_id
                )
                continue
            if self.registry.find_pool(pool.name) is not None:
                log.warning("stored pool %s clashes with a config pool; ignored", pool.name)
                continue
            self.registry.add_pool(cluster_id, pool)
        if pg is not None:
            from pyproxy.admin.pgstore import sync_definitions

            registry = self.registry
            try:
                await pg.start(
                    registry,
                    [c.id for c in cfg.clusters],
                    lambda pools: sync_definitions(registry, pools),
                )
            except BaseException:
                pg.close()
                raise

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(JANITOR_INTERVAL)
            now = time.monotonic()
            for pool in self.registry.warm_pools():
                try:
                    tick(pool, now)
                except Exception:
                    log.exception("maintenance of pool %s failed", pool.name)
            try:
                self.state.tick(now)
            except Exception:
                log.exception("client maintenance failed")

    def _stop_soon(self) -> None:
        if self._stopper is None:
            self._stopper = asyncio.get_running_loop().create_task(self.stop())

    async def _report_stats(self) -> None:
        """Every stats_period: one log line per pool with its averages (PgBouncer's ``stats:``
        line), the figures SHOW STATS_AVERAGES reports."""
        periods = self.console.periods
        periods.sample(self.registry, [], time.monotonic())
        while True:
            period = self.config.proxy.stats_period
            await asyncio.sleep(period if period > 0 else 1.0)
            if period <= 0:
                continue
            names = sorted(p.name for c in self.registry.clusters() for p in
                           self.registry.pool_configs(c.id))  # fmt: skip
            try:
                averages = periods.sample(self.registry, names, time.monotonic())
            except Exception:
                log.exception("stats sampling failed")
                continue
            for name, avg in averages.items():
                stats_log.info(stats_line(name, avg), extra={"pool": name, "stats": avg})

    def reload_file(self) -> None:
        """RELOAD: read the config file again and apply it (ConfigError when it is invalid)."""
        if self.config.path is None:
            raise ConfigError("the running configuration was not read from a file")
        self.reload(load_config(self.config.path))

    def reload(self, config: Config, api_pools: list[tuple[str, PoolConfig]] | None = None) -> None:
        """Apply a new config: pools, users, timeouts. Listeners stay as they are. A worker
        process is given the API's pools (``api_pools``) by its supervisor."""
        if api_pools is None:
            api_pools = self.store.load(config.proxy.defaults) if self.store is not None else []
        proxy = config.proxy
        self.config = config
        self.state.reconfigure(config)
        self.registry.replace_config(config, api_pools)
        if self.admin is not None:
            self.admin.api.client_ssl = proxy.client_tls.mode != "disable"
            self.admin.reload_tls(config.admin)
            old = self.admin.api.throttle
            if (old.limit, old.window) != (proxy.auth_failure_limit, proxy.auth_failure_window):
                self.admin.api.throttle = _login_throttle(config)  # counts start again
        log.info("configuration reloaded")

    async def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let linked clients finish up to ``timeout``, then end everyone."""
        if self.stopping:
            return
        self.stopping = True
        wait = self.config.proxy.shutdown_timeout if timeout is None else timeout
        if self._server is not None:
            self._server.close()
        if self.admin is not None:
            await self.admin.stop()
        err = PgError(ADMIN_SHUTDOWN, "pooler is shutting down", fatal=True)
        deadline = time.monotonic() + wait
        while True:
            # Idle clients are told at once; the others when their transaction is over.
            busy = False
            for client in list(self.state.clients):
                if client.in_flight():
                    busy = True
                else:
                    client.kick(err)
            if not busy or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        for client in list(self.state.clients):
            client.kick(err)
        for pool in self.registry.live_pools():
            pool.close_all("shutdown")
        self.state.auth_query.close()
        if self._janitor is not None:
            self._janitor.cancel()
        if self._stats is not None:
            self._stats.cancel()
        for task in list(self.state.tasks):
            task.cancel()
        if self.store is not None:
            await self.store.aclose()
        await asyncio.sleep(0)
        log.info("stopped")


class _ConsoleActions:
    """RELOAD and SHUTDOWN from the admin console."""

    def __init__(self, app: App) -> None:
        self.app = app

    def reload(self) -> None:
        self.app.reload_file()

    def shutdown(self) -> None:
        log.info("SHUTDOWN from the admin console")
        self.app.on_shutdown()


def _login_throttle(config: Config) -> LoginThrottle:
    """The failed-login throttle [proxy] asks for."""
    return LoginThrottle(config.proxy.auth_failure_limit, config.proxy.auth_failure_window)
