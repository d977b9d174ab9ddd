"""The admin HTTP server: checks the admin config, binds the listener, serves the pools API."""

from __future__ import annotations

import ipaddress
import logging
from ssl import SSLContext

from pyproxy.admin.api import AdminApi, PoolManagerApi
from pyproxy.admin.http import HttpServer
from pyproxy.admin.http_messages import HttpLimits
from pyproxy.admin.openapi import document_bytes
from pyproxy.admin.store import PoolStore
from pyproxy.auth.throttle import LoginThrottle
from pyproxy.config import AdminConfig, PoolSettings
from pyproxy.tls.contexts import TlsFileError, TlsFiles, serving_context

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
        self.tls = _https_context(cfg)
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
        await self.http.start(cfg.listen_host, cfg.listen_port, self.tls)
        self._started = True
        scheme = "https" if self.tls is not None else "http"
        log.info("admin API listening on %s://%s:%d", scheme, cfg.listen_host, self.port)
        if self.tls is None and not is_loopback(cfg.listen_host):
            log.warning(
                "the admin API listens on %s without TLS: its token travels in the clear; set "
                "[admin] tls_cert_file and tls_key_file",
                cfg.listen_host,
            )

    def reload_tls(self, cfg: AdminConfig) -> None:
        """New HTTPS handshakes use the certificate and key files as they are now (the files
        were checked by the config load; a file broken since keeps the old pair)."""
        if self.tls is None or not cfg.tls_cert_file:
            return
        try:
            serving_context(TlsFiles("require", cfg.tls_cert_file, cfg.tls_key_file), alpn=False)
            self.tls.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
        except (TlsFileError, OSError, ValueError) as exc:
            log.error("TLS reload: admin.tls_%s, keeping the previous certificate", exc)

    @property
    def port(self) -> int:
        """The port actually bound (useful when the config says 0)."""
        return self.http.port

    async def stop(self) -> None:
        if self._started:
            await self.http.stop()
            self._started = False


def _https_context(cfg: AdminConfig) -> SSLContext | None:
    if not (cfg.tls_cert_file and cfg.tls_key_file):
        return None
    try:
        return serving_context(
            TlsFiles("require", cfg.tls_cert_file, cfg.tls_key_file), alpn=False
        ).context
    except TlsFileError as exc:
        raise AdminConfigError(f"admin.tls_{exc}") from None
