"""SHOW CONFIG: pyproxy's settings under PgBouncer's names where one exists, then its own."""

from __future__ import annotations

from pyproxy.config import Config, PoolSettings, ProxyConfig
from pyproxy.console import columns as K

Row = list[str | None]
_PROXY = ProxyConfig()
_POOL = PoolSettings()

# PgBouncer name, pyproxy's [proxy] key (or a PoolSettings field), changeable by RELOAD.
_KEYS = (
    ("listen_addr", "listen_host", False),
    ("listen_port", "listen_port", False),
    ("max_client_conn", "max_client_conn", True),
    ("auth_type", "auth_type", True),
    ("admin_users", "admin_users", True),
    ("stats_users", "stats_users", True),
    ("stats_period", "stats_period", True),
    ("client_login_timeout", "client_login_timeout", True),
    ("shutdown_timeout", "shutdown_timeout", True),
    ("track_extra_parameters", "track_extra_parameters", True),
    ("ignore_startup_parameters", "ignore_startup_parameters", True),
    ("query_wait_timeout", "query_wait_timeout", True),
    ("query_wait_notify", "query_wait_notify", True),
    ("server_reset_query", "server_reset_query", True),
    ("server_idle_timeout", "server_idle_timeout", True),
    ("server_lifetime", "server_lifetime", True),
    ("server_connect_timeout", "server_connect_timeout", True),
    ("server_login_retry", "server_login_retry", True),
    ("server_check_delay", "server_check_delay", True),
    ("idle_transaction_timeout", "idle_transaction_timeout", True),
    ("query_timeout", "query_timeout", True),
    ("transaction_timeout", "transaction_timeout", True),
    ("client_idle_timeout", "client_idle_timeout", True),
    ("min_pool_size", "min_pool_size", True),
    ("reserve_pool_size", "reserve_pool_size", True),
    ("reserve_pool_timeout", "reserve_pool_timeout", True),
    ("max_prepared_statements", "max_prepared_statements", True),
    ("max_packet_size", "max_packet_size", True),
    ("log_format", "log_format", False),
)
# PgBouncer settings pyproxy has no counterpart for, shown with the value that means "no
# limit" (pgbouncer_exporter reads max_user_connections).
_UNLIMITED = ("max_db_connections", "max_user_connections", "max_db_client_connections")


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _value(proxy: ProxyConfig | PoolSettings, key: str) -> str:
    return _text(getattr(proxy, key))


def show_config(config: Config) -> tuple[K.Columns, list[Row]]:
    proxy = config.proxy
    rows: list[Row] = []
    for name, key, changeable in _KEYS:
        if hasattr(_PROXY, key):
            now, default = _value(proxy, key), _value(_PROXY, key)
        else:
            now, default = _value(proxy.defaults, key), _value(_POOL, key)
        rows.append([name, now, default, "yes" if changeable else "no"])
    rows.extend([name, "0", "0", "yes"] for name in _UNLIMITED)
    return K.CONFIG, sorted(rows, key=lambda r: r[0] or "")
