"""The admin API with worker processes: served by the supervisor over its ClusterView. Reads
see fresh figures from every worker; a change is answered only once every worker applied it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pyproxy.admin import metrics
from pyproxy.admin.http_messages import Request, Response
from pyproxy.admin.pgstore import PgStateStore, sync_definitions
from pyproxy.admin.server import AdminServer
from pyproxy.admin.store import PoolStore, StateStore
from pyproxy.auth.throttle import LoginThrottle
from pyproxy.config import Config, PoolConfig
from pyproxy.workers.view import ClusterView

if TYPE_CHECKING:
    from pyproxy.workers.supervisor import Supervisor

log = logging.getLogger("pyproxy.supervisor")


class AdminFront:
    def __init__(self, config: Config, view: ClusterView, sup: Supervisor) -> None:
        self.config = config
        self.view = view
        self.sup = sup
        self.pg: PgStateStore | None = None
        self.store: PoolStore
        if config.admin.state_dsn:
            self.store = self.pg = PgStateStore(config.admin.state_dsn, config.proxy.defaults)
        else:
            self.store = StateStore(config.admin.state_path)
        proxy = config.proxy
        self.server = AdminServer(
            config.admin,
            view,
            self.store,
            pool_defaults=proxy.defaults,
            throttle=LoginThrottle(proxy.auth_failure_limit, proxy.auth_failure_window),
        )
        self.api = self.server.api
        self.api.client_ssl = config.proxy.client_tls.mode != "disable"
        self.api.collect_metrics = self.metrics_figures
        self.server.http.handler = self.handle
        view.client_address = lambda: (config.proxy.listen_host, sup.port)
        view.client_count = view.clients_total

    def api_pools(self, config: Config) -> list[tuple[str, PoolConfig]]:
        return self.store.load(config.proxy.defaults)

    async def load_store(self) -> None:
        """Pools created through the API, as a single process loads them (App.start). With
        ``state_dsn`` the supervisor is the instance: it takes its first part of every pool
        before any worker starts, then keeps parts and definitions up to date."""
        if self.pg is not None:
            await self.pg.open()
        for cluster_id, pool in self.api_pools(self.config):
            if self.view.cluster(cluster_id) is None or self.view.find_pool(pool.name):
                log.warning("state file pool %s ignored (unknown cluster or clash)", pool.name)
                continue
            self.view.add_pool(cluster_id, pool)
        self.view.sent.clear()  # workers get the definitions when they start
        if self.pg is not None:
            clusters = [c.id for c in self.config.clusters]
            await self.pg.start(self.sup, clusters, self._stored)

    def _stored(self, pools: list[tuple[str, PoolConfig]]) -> None:
        """Definitions re-read from the state database (another instance changed them): every
        worker applies the changes, as it does those made through this instance's API."""
        if sync_definitions(self.view, pools):
            self.sup._background(self.view.deliver())

    def reload(self, config: Config) -> None:
        self.config = config
        proxy = config.proxy
        self.api.client_ssl = proxy.client_tls.mode != "disable"
        self.server.reload_tls(config.admin)
        old = self.api.throttle
        if (old.limit, old.window) != (proxy.auth_failure_limit, proxy.auth_failure_window):
            self.api.throttle = LoginThrottle(proxy.auth_failure_limit, proxy.auth_failure_window)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        """The API stops; the store is closed by the supervisor once the workers stopped."""
        await self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port

    async def handle(self, req: Request) -> Response:
        if req.method in ("GET", "HEAD"):
            await self.sup.collect_stats()
        resp = await self.api.handle(req)
        await self.view.deliver()  # every worker has applied the change before the answer
        if req.method == "GET" and req.target.split("?")[0] == "/metrics" and resp.status == 200:
            resp.body += self.worker_metrics().encode()
        return resp

    def metrics_figures(self) -> dict[str, Any]:
        """/metrics: every worker's figures added up, the supervisor's process among them."""
        own = {
            "bounds": list(metrics.BOUNDS),
            "per_transaction": True,
            "clients": 0,
            "process": metrics.process_figures(),
            "clusters": [],
            "pools": [],
        }
        return metrics.merge([own, *(s["metrics"] for s in self.view.worker_stats.values())])

    def worker_metrics(self) -> str:
        """Per-worker lines after the totals: which workers run, what they accepted, their
        share of each pool (the console can add up over workers the same way)."""
        lines = [
            "# HELP pyproxy_worker_up A worker process is running and accepting clients.",
            "# TYPE pyproxy_worker_up gauge",
        ]
        stats: dict[int, dict[str, Any]] = self.view.worker_stats
        for h in self.sup.handles:
            lines.append(f'pyproxy_worker_up{{worker="{h.index}"}} {int(h.alive)}')
        lines += [
            "# HELP pyproxy_worker_clients_accepted_total Client connections a worker accepted.",
            "# TYPE pyproxy_worker_clients_accepted_total counter",
        ]
        for index, s in sorted(stats.items()):
            lines.append(
                f'pyproxy_worker_clients_accepted_total{{worker="{index}"}} {s["accepted"]}'
            )
        lines += [
            "# HELP pyproxy_worker_cancels_forwarded_total Cancel requests a worker received "
            "for another worker's client and passed on.",
            "# TYPE pyproxy_worker_cancels_forwarded_total counter",
        ]
        for index, s in sorted(stats.items()):
            lines.append(
                f'pyproxy_worker_cancels_forwarded_total{{worker="{index}"}} {s["forwarded"]}'
            )
        lines += [
            "# HELP pyproxy_worker_restarts_total Times the supervisor restarted a worker.",
            "# TYPE pyproxy_worker_restarts_total counter",
        ]
        for h in self.sup.handles:
            lines.append(f'pyproxy_worker_restarts_total{{worker="{h.index}"}} {h.restarts}')
        lines += [
            "# HELP pyproxy_worker_pool_share Server connections of a pool a worker may hold.",
            "# TYPE pyproxy_worker_pool_share gauge",
        ]
        for cluster in self.view.clusters():
            for cfg in self.view.pool_configs(cluster.id):
                for h in self.sup.handles:
                    share = self.sup.share_of(h.index, cfg.name)
                    lines.append(
                        f'pyproxy_worker_pool_share{{worker="{h.index}",pool="{cfg.name}"}} {share}'
                    )
        return "\n".join(lines) + "\n"
