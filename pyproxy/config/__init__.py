"""Configuration: the TOML file's shape (model), its value readers (fields), the rules shared with
the admin API (validate) and loading (load)."""

from pyproxy.config.load import (
    DEFAULT_TOKEN_ENV,
    MIN_PACKET_SIZE,
    load_config,
    parse_config,
    pool_settings_from,
)
from pyproxy.config.model import (
    AUTH_TYPES,
    LOG_FORMATS,
    MODES,
    SESSION_STATE_POLICIES,
    AdminConfig,
    ClusterConfig,
    Config,
    PoolConfig,
    PoolSettings,
    ProxyConfig,
    UserConfig,
)
from pyproxy.config.validate import (
    DATABASE_NAME_MAX_BYTES,
    DEFAULT_LISTEN_HOST,
    POOL_NAME_MAX_LEN,
    POOL_NAME_MIN_LEN,
    check_budget,
    parse_listen,
    validate_database_name,
    validate_pool_name,
)

__all__ = [
    "AUTH_TYPES",
    "DATABASE_NAME_MAX_BYTES",
    "DEFAULT_LISTEN_HOST",
    "DEFAULT_TOKEN_ENV",
    "LOG_FORMATS",
    "MIN_PACKET_SIZE",
    "MODES",
    "POOL_NAME_MAX_LEN",
    "POOL_NAME_MIN_LEN",
    "SESSION_STATE_POLICIES",
    "AdminConfig",
    "ClusterConfig",
    "Config",
    "PoolConfig",
    "PoolSettings",
    "ProxyConfig",
    "UserConfig",
    "check_budget",
    "load_config",
    "parse_config",
    "parse_listen",
    "pool_settings_from",
    "validate_database_name",
    "validate_pool_name",
]
