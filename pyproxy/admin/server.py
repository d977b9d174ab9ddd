"""The admin HTTP server: checks the admin config, binds the listener, serves the pools API."""

from __future__ import annotations

import ipaddress
import logging

from pyproxy.admin.api import AdminApi, PoolManagerApi
from pyproxy.admin.http import HttpServer
from pyproxy.admin.http_messages import HttpLimits
from pyproxy.admin.openapi import document_bytes
from pyproxy.admin.store import PoolStore
from pyproxy.auth.throttle import LoginThrottle
from pyproxy.config import AdminConfig, PoolSettings

log = logging.getLogger("pyproxy.admin")


class AdminConfigError(Exception):
    """The admin API cannot start with this configuration."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AdminServer:
    """Serves the admin API for ``manager``, keeping API-created pools in ``store``."""

    def __init__(
        self,
        cfg: AdminConfig,
        manager: PoolManagerApi,
        store: PoolStore,
        *,
        pool_defaults: PoolSettings | None = None,
        limits: HttpLimits | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.cfg = cfg
        auth = cfg.token is not None
        self.api = AdminApi(
            manager,
            store,
            token=cfg.token,
            openapi=document_bytes(auth, [c.id for c in manager.clusters()]),
            pool_defaults=pool_defaults,
            throttle=throttle,
        )
        self.http = HttpServer(self.api.handle, limits)
        self._started = False

    async def start(self) -> None:
        cfg = self.cfg
        if cfg.token is None and not (cfg.allow_no_token and is_loopback(cfg.listen_host)):
            raise AdminConfigError(
                "the admin API needs a token ([admin] token or token_env); running without one "
                "is allowed only with allow_no_token = true and a loopback listen address"
            )
        if cfg.token == "":
            raise AdminConfigError("the admin token is empty; set a non-empty [admin] token")
        await self.http.start(cfg.listen_host, cfg.listen_port)
        self._started = True
        log.info("admin API listening on %s:%d", cfg.listen_host, self.port)

    @property
    def port(self) -> int:
        """The port actually bound (useful when the config says 0)."""
        return self.http.port

    async def stop(self) -> None:
        if self._started:
            await self.http.stop()
            self._started = False
