"""The configuration's shape: frozen dataclasses for [proxy], [admin] and [[clusters]]."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyproxy.tls.contexts import TlsFiles

MODES = ("session", "transaction", "statement")
AUTH_TYPES = ("trust", "md5", "scram-sha-256")
LOG_FORMATS = ("text", "json")
SESSION_STATE_POLICIES = ("pin", "warn", "error", "allow")
# PgBouncer's auth_query on pg_authid: NULL for an expired role, only roles that may log in.
DEFAULT_AUTH_QUERY = (
    "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
    "FROM pg_authid WHERE rolname = $1 AND rolcanlogin"
)


@dataclass(frozen=True)
class PoolSettings:
    """Settings a pool inherits from [proxy] and may override in its [[clusters.pools]] entry.

    Durations are in seconds (floats allowed); 0 disables a timeout.
    """

    query_wait_timeout: float = 120.0
    query_wait_notify: float = 5.0
    server_reset_query: str = "DISCARD ALL"
    server_idle_timeout: float = 600.0
    server_lifetime: float = 3600.0
    server_connect_timeout: float = 15.0
    server_login_retry: float = 1.0
    server_check_delay: float = 30.0
    idle_transaction_timeout: float = 0.0
    query_timeout: float = 0.0
    transaction_timeout: float = 0.0
    client_idle_timeout: float = 0.0
    min_pool_size: int = 0
    reserve_pool_size: int = 0
    reserve_pool_timeout: float = 5.0
    max_client_conn: int = 0  # per pool; 0 = only the proxy-wide limit applies
    # "" = by pool mode: "pin" for transaction pools, "warn" for statement pools
    session_state: str = ""
    max_prepared_statements: int = 200


@dataclass(frozen=True)
class ProxyConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 6432
    max_client_conn: int = 10000
    auth_type: str = "scram-sha-256"
    client_login_timeout: float = 60.0
    auth_failure_limit: int = 10  # failed logins per window before throttling; 0 = off
    auth_failure_window: float = 60.0
    shutdown_timeout: float = 30.0
    max_packet_size: int = 64 * 1024 * 1024
    track_extra_parameters: tuple[str, ...] = ("IntervalStyle",)
    ignore_startup_parameters: tuple[str, ...] = ("extra_float_digits",)
    replay_exclude: tuple[str, ...] = ()  # session settings never replayed on another server
    metrics: bool = True  # per-transaction figures for /metrics (histograms, bytes)
    workers: int = 1  # processes accepting clients on the listen address (one budget)
    # auth_query defaults for every cluster (a cluster may set its own auth_user/auth_query)
    auth_user: str = ""
    auth_query: str = DEFAULT_AUTH_QUERY
    auth_dbname: str = ""  # "" = the database of the pool the client asked for
    auth_cache_seconds: float = 15.0  # how long a looked-up secret (or its absence) is reused
    # The admin console (database "pgbouncer" or "pyproxy"): users allowed every command, and
    # users allowed SHOW only.
    admin_users: tuple[str, ...] = ()
    stats_users: tuple[str, ...] = ()
    log_format: str = "text"  # "text" or "json" (one object per line)
    stats_period: float = 60.0  # seconds between stats log lines and SHOW STATS averages; 0 = off
    defaults: PoolSettings = field(default_factory=PoolSettings)
    # client_tls_* (pyproxy as TLS server) and server_tls_* (as TLS client of PostgreSQL; the
    # default for every cluster), PgBouncer's names; see pyproxy.config.tls.
    client_tls: TlsFiles = field(default_factory=lambda: TlsFiles("disable"))
    server_tls: TlsFiles = field(default_factory=lambda: TlsFiles("prefer"))


@dataclass(frozen=True)
class AdminConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    enabled: bool = True
    token: str | None = None  # resolved from token / token_env
    allow_no_token: bool = False  # only honoured when listening on loopback
    state_path: str = "pyproxy-state.db"
    tls_cert_file: str = ""  # both set: the admin API is served over HTTPS
    tls_key_file: str = ""
    # postgresql:// URL of a database that keeps API pools for several instances ("" = SQLite)
    state_dsn: str = ""


@dataclass(frozen=True)
class UserConfig:
    """A role: its stored secret is a plaintext password, a SCRAM-SHA-256 verifier or an md5
    hash, written in the file (``password``) or read from the environment (``password_env``)."""

    name: str
    password: str
    password_env: str = ""  # the variable it was read from ("" = written in the file)

    @property
    def shown_password(self) -> str | None:
        """The password the admin API may show: only a plaintext one written in the file."""
        if self.password_env or is_stored_secret(self.password):
            return None
        return self.password


def is_stored_secret(password: str) -> bool:
    """A SCRAM verifier or an md5 hash rather than a plaintext password (as PostgreSQL tells)."""
    if password.startswith("SCRAM-SHA-256$"):
        return True
    return (
        len(password) == 35
        and password.startswith("md5")
        and all(c in "0123456789abcdef" for c in password[3:])
    )


@dataclass(frozen=True)
class PoolConfig:
    name: str
    db: str
    size: int
    mode: str = "transaction"
    user: str = ""  # "" = each client's own user
    settings: PoolSettings = field(default_factory=PoolSettings)
    source: str = "config"  # "config" (file) or "api" (state store)


@dataclass(frozen=True)
class ClusterConfig:
    id: str
    host: str = "127.0.0.1"
    port: int = 5432
    ram_gib: float | None = None
    max_connections: int | None = None
    users: tuple[UserConfig, ...] = ()
    pools: tuple[PoolConfig, ...] = ()
    server_tls: TlsFiles = field(default_factory=lambda: TlsFiles("prefer"))  # [proxy]'s + own
    auth_user: str = ""  # "" = no auth_query: only the users listed may log in
    auth_query: str = DEFAULT_AUTH_QUERY
    auth_dbname: str = ""

    @property
    def budget(self) -> int:
        """Backend connections all pools of this cluster may share."""
        if self.max_connections is not None:
            return self.max_connections
        return int(25 * (self.ram_gib or 1) - 3)

    def user(self, name: str) -> UserConfig | None:
        for u in self.users:
            if u.name == name:
                return u
        return None


@dataclass(frozen=True)
class Config:
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    clusters: tuple[ClusterConfig, ...] = ()
    path: str | None = None
