"""Routes, auth, validation and handlers of the DigitalOcean-compatible pools admin API."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast
from urllib.parse import unquote

from pyproxy.admin import metrics, pausing, poolstats
from pyproxy.admin.bodies import (
    BadRequest,
    Unprocessable,
    check_fields,
    connection_info,
    json_object,
    refuse_config_pool,
    target_path,
)
from pyproxy.admin.dashboard import Dashboard
from pyproxy.admin.http_messages import Request, Response, error_response, json_response
from pyproxy.admin.store import (
    PoolStore,
    StateStoreConflict,
    StateStoreError,
    StateStoreUnavailable,
)
from pyproxy.auth.throttle import LoginThrottle
from pyproxy.config import ClusterConfig, PoolConfig, PoolSettings

log = logging.getLogger("pyproxy.admin")

Route = Callable[[Request, list[str]], Awaitable[Response]]

NOT_FOUND = "The resource you requested could not be found."
CLUSTER_SHAPE = ["v2", "databases", "*"]
POOL_SHAPE = ["v2", "databases", "*", "pools", "*"]


class PoolManagerApi(Protocol):
    """What the admin API needs from the pool layer."""

    def clusters(self) -> tuple[ClusterConfig, ...]: ...
    def cluster(self, cluster_id: str) -> ClusterConfig | None: ...
    def pool_configs(self, cluster_id: str) -> list[PoolConfig]: ...
    def find_pool(self, name: str) -> tuple[str, PoolConfig] | None: ...
    def add_pool(self, cluster_id: str, pool: PoolConfig) -> None: ...
    def update_pool(self, name: str, pool: PoolConfig) -> None: ...
    def remove_pool(self, name: str) -> None: ...
    def servers_in_use(self, cluster_id: str) -> int: ...
    async def database_exists(self, cluster_id: str, db: str) -> bool: ...
    def client_listen(self) -> tuple[str, int]: ...
    def pool_stats(self, name: str) -> dict[str, int]: ...
    def pool_counters(self, name: str) -> dict[str, Any]: ...
    def wait_histogram(self, name: str) -> tuple[list[float], list[int], float]: ...
    def client_count(self) -> int: ...


class AdminApi:
    """Turns admin HTTP requests into pool-manager changes, persisted in the state store."""

    def __init__(
        self,
        manager: PoolManagerApi,
        store: PoolStore,
        *,
        token: str | None,
        openapi: bytes,
        pool_defaults: PoolSettings | None = None,
        db_check_timeout: float = 10.0,
        throttle: LoginThrottle | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.manager = manager
        self.store = store
        self.token = token.encode() if token is not None else None
        self.throttle = throttle if throttle is not None else LoginThrottle()
        self.clock = clock
        self.openapi = openapi
        self.pool_defaults = pool_defaults or PoolSettings()
        self.db_check_timeout = db_check_timeout
        self._write_lock = asyncio.Lock()
        self.dashboard = Dashboard()
        self.collect_stats = poolstats.collect  # may become an aggregate over processes
        # [proxy] metrics, read at each scrape; and what /metrics renders (metrics.merge adds
        # up the figures of several processes).
        self.metrics_per_transaction: Callable[[], bool] = lambda: True
        self.collect_metrics: Callable[[], dict[str, Any]] = lambda: metrics.collect(
            cast(metrics.MetricsSource, self.manager),
            self.manager.client_count(),
            self.metrics_per_transaction(),
        )
        self.client_ssl = False  # client TLS is on: connection details say ssl / sslmode=require

    # -- routing ---------------------------------------------------------------------------

    async def handle(self, req: Request) -> Response:
        try:
            path = target_path(req.target)
        except ValueError:
            return error_response(400, "malformed request target", req.request_id)
        segments = path.split("/")[1:]
        if segments == ["healthz"]:
            return await self._dispatch(req, {"GET": self.healthz}, [])
        if segments == ["openapi.json"]:
            return await self._dispatch(req, {"GET": self.openapi_doc}, [])
        if segments == [""] or segments[0] == "static":  # the dashboard page, no token needed
            return await self._dispatch(req, {"GET": self.page, "HEAD": self.page}, segments)
        if segments[0] not in ("v2", "metrics") or (segments[0] == "metrics" and len(segments) > 1):
            return error_response(404, NOT_FOUND, req.request_id)
        refused = await self._authenticate(req)
        if refused is not None:
            return refused
        resp = await self._route(req, segments)
        resp.authenticated = True
        return resp

    async def _route(self, req: Request, segments: list[str]) -> Response:
        """Answer an authenticated request for ``/metrics`` or ``/v2/...``."""
        if segments == ["metrics"]:
            return await self._dispatch(req, {"GET": self.metrics}, [])
        args = [unquote(s, errors="replace") for s in segments]
        shape = [s if i in (0, 1, 3, 5) else "*" for i, s in enumerate(args)]
        routes: dict[str, Route] | None = None
        if shape == ["v2", "databases"]:
            routes = {"GET": self.list_clusters}
        elif shape == ["v2", "databases", "*"]:
            routes = {"GET": self.get_cluster}
        elif shape == ["v2", "databases", "*", "stats"]:
            routes = {"GET": self.cluster_stats}
        elif shape == ["v2", "databases", "*", "pools"]:
            routes = {"GET": self.list_pools, "POST": self.create_pool}
        elif shape == ["v2", "databases", "*", "pools", "*"]:
            routes = {"GET": self.get_pool, "PUT": self.update_pool, "DELETE": self.delete_pool}
        elif shape[-1:] == ["pause"] and shape[:-1] in (CLUSTER_SHAPE, POOL_SHAPE):
            routes = {"POST": self.pause}
        elif shape[-1:] == ["resume"] and shape[:-1] in (CLUSTER_SHAPE, POOL_SHAPE):
            routes = {"POST": self.resume}
        if routes is None:
            return error_response(404, NOT_FOUND, req.request_id)
        return await self._dispatch(req, routes, args[2::2])

    async def _dispatch(self, req: Request, routes: dict[str, Route], args: list[str]) -> Response:
        route = routes.get(req.method)
        if route is None:
            allowed = ", ".join(routes)
            msg = f"method {req.method} is not allowed here; allowed: {allowed}"
            resp = error_response(405, msg, req.request_id)
            resp.headers.append(("allow", allowed))
            return resp
        try:
            return await route(req, args)
        except BadRequest as exc:
            return error_response(400, str(exc), req.request_id)
        except Unprocessable as exc:
            return error_response(422, str(exc), req.request_id)

    async def _authenticate(self, req: Request) -> Response | None:
        """None when the request may go on; else its 401, or 429 for an address that has failed
        too often. Wrong credentials count for the throttle and are answered after its delay;
        a request without any is answered at once and not counted (it guessed nothing)."""
        if self.token is None:
            return None  # allowed only on loopback, checked when the server starts
        now = self.clock()
        wait = self.throttle.check(req.client, None, now)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            msg = f"Too many failed authentication attempts; retry in {seconds} s."
            resp = error_response(429, msg, req.request_id)
            resp.headers.append(("retry-after", str(seconds)))
            resp.close = True
            return resp
        authorization = req.header("authorization")
        scheme, _, credential = (authorization or "").strip().partition(" ")
        given = credential.strip().encode("latin-1", "replace")
        if scheme.lower() == "bearer" and hmac.compare_digest(given, self.token):
            self.throttle.succeeded(req.client, None)
            return None
        if authorization is not None:
            await asyncio.sleep(self.throttle.failed(req.client, None, now))
        resp = error_response(401, "Unable to authenticate you.", req.request_id)
        resp.headers.append(("www-authenticate", 'Bearer realm="pyproxy"'))
        return resp

    # -- handlers --------------------------------------------------------------------------

    async def healthz(self, req: Request, args: list[str]) -> Response:
        return json_response(200, {"status": "ok"})

    async def metrics(self, req: Request, args: list[str]) -> Response:
        text = metrics.render(self.collect_metrics())
        return Response(200, text.encode(), [("content-type", "text/plain; version=0.0.4")])

    async def openapi_doc(self, req: Request, args: list[str]) -> Response:
        return Response(200, self.openapi, [("content-type", "application/json; charset=utf-8")])

    async def pause(self, req: Request, args: list[str]) -> Response:
        names = self._pause_names(args)
        if names is None:
            return error_response(404, NOT_FOUND, req.request_id)
        return await pausing.pause(cast(pausing.PauseManager, self.manager), names, req)

    async def resume(self, req: Request, args: list[str]) -> Response:
        names = self._pause_names(args)
        if names is None:
            return error_response(404, NOT_FOUND, req.request_id)
        return pausing.resume(cast(pausing.PauseManager, self.manager), names, req)

    def _pause_names(self, args: list[str]) -> list[str] | None:
        """The pool named in the path, or every pool of the cluster; None if not found."""
        if len(args) == 2:
            found = self._find(args)
            return None if found is None else [found[1].name]
        cluster = self.manager.cluster(args[0])
        if cluster is None:
            return None
        return [p.name for p in self.manager.pool_configs(cluster.id)]

    async def page(self, req: Request, args: list[str]) -> Response:
        return self.dashboard.serve(args, req.request_id)

    async def cluster_stats(self, req: Request, args: list[str]) -> Response:
        cluster = self.manager.cluster(args[0])
        if cluster is None:
            return error_response(404, NOT_FOUND, req.request_id)
        source = cast(poolstats.StatsSource, self.manager)
        return json_response(200, {"stats": self.collect_stats(source, cluster)})

    async def list_clusters(self, req: Request, args: list[str]) -> Response:
        clusters = [self._cluster(c) for c in self.manager.clusters()]
        return json_response(200, {"databases": clusters})

    async def get_cluster(self, req: Request, args: list[str]) -> Response:
        cluster = self.manager.cluster(args[0])
        if cluster is None:
            return error_response(404, NOT_FOUND, req.request_id)
        return json_response(200, {"database": self._cluster(cluster)})

    def _cluster(self, cluster: ClusterConfig) -> dict[str, Any]:
        pools = self.manager.pool_configs(cluster.id)
        used = sum(p.size for p in pools)
        host, port = self.manager.client_listen()
        database = {
            "id": cluster.id,
            "name": cluster.id,
            "engine": "pg",
            "status": "online",
            "num_nodes": 1,
            "host": cluster.host,
            "port": cluster.port,
            "connection_budget": cluster.budget,
            "pools_size_sum": used,
            "pools_size_free": max(0, cluster.budget - used),
            "connections_in_use": self.manager.servers_in_use(cluster.id),
            "users": [{"name": u.name} for u in cluster.users],
            "pools": [p.name for p in pools],
            "connection": {"host": host, "port": port, "ssl": self.client_ssl},
        }
        return database

    async def list_pools(self, req: Request, args: list[str]) -> Response:
        cluster = self.manager.cluster(args[0])
        if cluster is None:
            return error_response(404, NOT_FOUND, req.request_id)
        pools = [self._render(cluster, p) for p in self.manager.pool_configs(cluster.id)]
        return json_response(200, {"pools": pools})

    async def get_pool(self, req: Request, args: list[str]) -> Response:
        found = self._find(args)
        if found is None:
            return error_response(404, NOT_FOUND, req.request_id)
        cluster, pool = found
        return json_response(200, {"pool": self._render(cluster, pool)})

    async def create_pool(self, req: Request, args: list[str]) -> Response:
        cluster = self.manager.cluster(args[0])
        if cluster is None:
            return error_response(404, NOT_FOUND, req.request_id)
        body = json_object(req)
        fields = check_fields(body, cluster, creating=True)
        pool = PoolConfig(
            name=fields["name"],
            db=fields["db"],
            size=fields["size"],
            mode=fields["mode"],
            user=fields["user"],
            settings=self.pool_defaults,
            source="api",
        )
        self._check_available(cluster, pool, replacing=None)
        await self._check_database(cluster, pool.db)
        return await asyncio.shield(self._commit_create(cluster, pool, req.request_id))

    async def update_pool(self, req: Request, args: list[str]) -> Response:
        found = self._find(args)
        if found is None:
            return error_response(404, NOT_FOUND, req.request_id)
        cluster, old = found
        body = json_object(req)
        refuse_config_pool(old, "changed")
        fields = check_fields({"user": old.user, **body}, cluster, creating=False)
        pool = dataclasses.replace(
            old, db=fields["db"], size=fields["size"], mode=fields["mode"], user=fields["user"]
        )
        self._check_available(cluster, pool, replacing=old)
        await self._check_database(cluster, pool.db)
        return await asyncio.shield(self._commit_update(cluster, pool, req.request_id))

    async def delete_pool(self, req: Request, args: list[str]) -> Response:
        found = self._find(args)
        if found is None:
            return error_response(404, NOT_FOUND, req.request_id)
        refuse_config_pool(found[1], "deleted")
        return await asyncio.shield(self._commit_delete(found[0], found[1], req.request_id))

    # -- commit and apply: validate again under the lock, write the store, change the manager --

    async def _commit_create(self, cluster: ClusterConfig, pool: PoolConfig, rid: str) -> Response:
        async with self._write_lock:
            try:
                self._check_available(cluster, pool, replacing=None)
            except Unprocessable as exc:
                return error_response(422, str(exc), rid)
            resp = json_response(201, {"pool": self._render(cluster, pool)})
            failed = await self._store_write(
                self.store.save,
                cluster.id,
                pool,
                create=True,
                budget=self._api_budget(cluster),
                rid=rid,
            )
            if failed is not None:
                return failed
            self._apply("create", pool.name, self.manager.add_pool, cluster.id, pool)
            return resp

    async def _commit_update(self, cluster: ClusterConfig, pool: PoolConfig, rid: str) -> Response:
        async with self._write_lock:
            current = self._find([cluster.id, pool.name])
            if current is None:
                return error_response(404, NOT_FOUND, rid)
            try:
                self._check_available(cluster, pool, replacing=current[1])
            except Unprocessable as exc:
                return error_response(422, str(exc), rid)
            failed = await self._store_write(
                self.store.save,
                cluster.id,
                pool,
                create=False,
                budget=self._api_budget(cluster),
                rid=rid,
            )
            if failed is not None:
                return failed
            self._apply("update", pool.name, self.manager.update_pool, pool.name, pool)
            return Response(204)

    async def _commit_delete(self, cluster: ClusterConfig, pool: PoolConfig, rid: str) -> Response:
        async with self._write_lock:
            if self._find([cluster.id, pool.name]) is None:
                return error_response(404, NOT_FOUND, rid)
            failed = await self._store_write(self.store.remove, pool.name, rid=rid)
            if failed is not None:
                return failed
            self._apply("delete", pool.name, self.manager.remove_pool, pool.name)
            return Response(204)

    async def _store_write(
        self, write: Callable[..., Awaitable[None]], *args: Any, rid: str, **kw: Any
    ) -> Response | None:
        """None once the store has the change; else the answer saying why it has not."""
        try:
            await write(*args, **kw)
        except StateStoreConflict as exc:
            return error_response(422, str(exc), rid)
        except StateStoreUnavailable as exc:
            log.error("admin change not saved: %s", exc)
            resp = error_response(503, f"the change was not saved: {exc}", rid)
            resp.headers.append(("retry-after", "1"))
            return resp
        except StateStoreError as exc:
            log.error("admin change not saved: %s", exc)
            return error_response(500, f"the change was not saved: {exc}", rid)
        return None

    def _api_budget(self, cluster: ClusterConfig) -> int:
        """What the cluster's budget leaves for pools created through the API."""
        fixed = sum(p.size for p in self.manager.pool_configs(cluster.id) if p.source != "api")
        return cluster.budget - fixed

    @staticmethod
    def _apply(action: str, name: str, change: Callable[..., None], *args: Any) -> None:
        """Change the live pools; the state file already holds the change, so never fail here."""
        try:
            change(*args)
        except Exception:
            log.exception("pool %r: %s was saved but could not be applied live", name, action)

    # -- checks ----------------------------------------------------------------------------

    def _find(self, args: list[str]) -> tuple[ClusterConfig, PoolConfig] | None:
        cluster = self.manager.cluster(args[0])
        found = self.manager.find_pool(args[1])
        if cluster is None or found is None or found[0] != cluster.id:
            return None
        return cluster, found[1]

    def _check_available(
        self, cluster: ClusterConfig, pool: PoolConfig, replacing: PoolConfig | None
    ) -> None:
        """Name uniqueness (on create) and the cluster's connection budget."""
        if replacing is None and self.manager.find_pool(pool.name) is not None:
            raise Unprocessable(f"pool name is not available: a pool named {pool.name!r} exists")
        used = sum(p.size for p in self.manager.pool_configs(cluster.id) if p.name != pool.name)
        free = max(0, cluster.budget - used)
        if pool.size > free:
            raise Unprocessable(
                f"size {pool.size} exceeds the cluster's remaining budget: {free} of "
                f"{cluster.budget} connections are free"
            )

    async def _check_database(self, cluster: ClusterConfig, db: str) -> None:
        try:
            async with asyncio.timeout(self.db_check_timeout):
                exists = await self.manager.database_exists(cluster.id, db)
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            raise Unprocessable(
                f"database {db!r} could not be verified on cluster {cluster.id} ({reason}); "
                "check that the PostgreSQL server is reachable and retry"
            ) from exc
        if not exists:
            raise Unprocessable(f"database {db!r} does not exist on cluster {cluster.id}")

    # -- rendering -------------------------------------------------------------------------

    def _render(self, cluster: ClusterConfig, pool: PoolConfig) -> dict[str, Any]:
        host, port = self.manager.client_listen()
        user = cluster.user(pool.user) if pool.user else None
        return {
            "name": pool.name,
            "mode": pool.mode,
            "size": pool.size,
            "db": pool.db,
            "user": pool.user,
            "connection": connection_info(
                pool.name,
                host,
                port,
                pool.user,
                user.shown_password if user else None,
                self.client_ssl,
            ),
            "source": pool.source,
        }
