"""Configuration: the TOML file's shape as frozen dataclasses, loading and validation."""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pyproxy.errors import ConfigError

MODES = ("session", "transaction", "statement")
AUTH_TYPES = ("trust", "md5", "scram-sha-256")
SESSION_STATE_POLICIES = ("pin", "warn", "error", "allow")


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
    defaults: PoolSettings = field(default_factory=PoolSettings)


@dataclass(frozen=True)
class AdminConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    enabled: bool = True
    token: str | None = None  # resolved from token / token_env
    allow_no_token: bool = False  # only honoured when listening on loopback
    state_path: str = "pyproxy-state.db"


@dataclass(frozen=True)
class UserConfig:
    name: str
    password: str


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


# --- loading and validation -------------------------------------------------------------------

DEFAULT_TOKEN_ENV = "PYPROXY_ADMIN_TOKEN"
DEFAULT_LISTEN_HOST = "127.0.0.1"
POOL_NAME_MIN_LEN = 3
POOL_NAME_MAX_LEN = 60
DATABASE_NAME_MAX_BYTES = 63
MIN_PACKET_SIZE = 1024

_POOL_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

_SETTINGS_FIELDS = {f.name: f for f in fields(PoolSettings)}
_PROXY_ONLY_KEYS = frozenset(
    {
        "listen",
        "max_client_conn",
        "auth_type",
        "client_login_timeout",
        "auth_failure_limit",
        "auth_failure_window",
        "shutdown_timeout",
        "max_packet_size",
        "track_extra_parameters",
        "ignore_startup_parameters",
        "replay_exclude",
    }
)
_PROXY_KEYS = _PROXY_ONLY_KEYS | _SETTINGS_FIELDS.keys()
_ADMIN_KEYS = frozenset({"listen", "token_env", "token", "allow_no_token", "enabled", "state_path"})
_CLUSTER_KEYS = frozenset({"id", "host", "port", "ram_gib", "max_connections", "users", "pools"})
_USER_KEYS = frozenset({"name", "password"})
_POOL_KEYS = frozenset({"name", "db", "user", "size", "mode"}) | _SETTINGS_FIELDS.keys()


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file; ``Config.path`` is set to its absolute path.

    ``env`` is where ``admin.token_env`` is looked up (default: ``os.environ``).
    Raises ConfigError for an unreadable file, invalid TOML or invalid settings.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the config file: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from exc
    return parse_config(data, env, os.path.abspath(name))


def parse_config(
    data: Mapping[str, Any], env: Mapping[str, str] | None = None, path: str | None = None
) -> Config:
    """Validate parsed TOML and build a Config.

    Every problem found is reported at once: the ConfigError message holds one line per
    error, each starting with the key it is about. ``path`` (the config file) is stored in
    ``Config.path`` and used to resolve a relative ``admin.state_path``.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: must be a table, got {_show(data)}")
    env = os.environ if env is None else env
    errs: list[str] = []
    _check_keys(data, {"proxy", "admin", "clusters"}, "", errs)
    proxy = _parse_proxy(_table(data, "proxy", "", errs), errs)
    admin = _parse_admin(_table(data, "admin", "", errs), env, path, errs)
    clusters = _parse_clusters(data.get("clusters", []), proxy.defaults, errs)
    if errs:
        raise ConfigError("\n".join(errs))
    return Config(proxy=proxy, admin=admin, clusters=clusters, path=path)


def parse_listen(value: str, key: str) -> tuple[str, int]:
    """Split a listen address into (host, port); raise ConfigError naming ``key`` if invalid.

    Accepted forms: ``"host:port"`` where host is an IPv4 literal or a host name such as
    ``localhost``; ``"[ipv6]:port"`` (brackets required, e.g. ``"[::1]:6432"``); and a bare
    port, ``":6432"``, ``"6432"`` or the integer ``6432``, which listens on 127.0.0.1 only
    (write ``"0.0.0.0:6432"`` or ``"[::]:6432"`` to accept remote clients).
    The port is 0..65535; 0 asks the kernel for a free port.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        host, port_text = DEFAULT_LISTEN_HOST, str(value)
    elif not isinstance(value, str):
        raise ConfigError(f'{key}: must be a string "host:port", got {_show(value)}')
    elif value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ConfigError(f'{key}: write an IPv6 address as "[addr]:port", got {_show(value)}')
        port_text = rest[1:]
        if not _is_ipv6(host):
            raise ConfigError(f"{key}: {_show(host)} is not an IPv6 address")
    elif value.count(":") > 1:
        raise ConfigError(
            f'{key}: put an IPv6 address in brackets, e.g. "[::1]:6432", got {_show(value)}'
        )
    else:
        host, sep, port_text = value.rpartition(":")
        if not host:
            host = DEFAULT_LISTEN_HOST
        if not _is_host(host):
            raise ConfigError(
                f"{key}: {_show(host)} is not an IP address or host name "
                f'(expected "host:port", e.g. "127.0.0.1:6432")'
            )
    if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise ConfigError(f"{key}: the port must be a number 0..65535, got {_show(value)}")
    return host, int(port_text)


def pool_settings_from(
    table: Mapping[str, Any], base: PoolSettings, key_prefix: str
) -> PoolSettings:
    """Return ``base`` with the PoolSettings keys found in ``table`` applied.

    Only PoolSettings field names are read; other keys are left for the caller to check.
    Raises ConfigError (keys named ``key_prefix.field``) if any value is invalid.
    """
    errs: list[str] = []
    settings = _parse_settings(table, base, key_prefix, errs)
    if errs:
        raise ConfigError("\n".join(errs))
    return settings


def validate_pool_name(name: object) -> str | None:
    """Return why ``name`` cannot be a pool name, or None if it can.

    A pool name is what clients pass as the database name, so it must travel unquoted in a
    connection URL and in a PostgreSQL startup packet: 3 to 60 characters, only ASCII
    letters, digits, ``_``, ``-`` and ``.``, and the first character is a letter, a digit
    or ``_`` (so a name never looks like a command-line option or a relative path).
    """
    if not isinstance(name, str):
        return f"must be a string, got {_show(name)}"
    if not POOL_NAME_MIN_LEN <= len(name) <= POOL_NAME_MAX_LEN:
        return (
            f"must be {POOL_NAME_MIN_LEN} to {POOL_NAME_MAX_LEN} characters long, "
            f"got {len(name)} ({_show(name)})"
        )
    if not _POOL_NAME_RE.fullmatch(name):
        return (
            "may contain only ASCII letters, digits, '_', '-' and '.', and must start with "
            f"a letter, a digit or '_', got {_show(name)}"
        )
    return None


def validate_database_name(name: object) -> str | None:
    """Return why ``name`` cannot be a config-file pool name, or None if it can.

    A pool in the config file may have any name PostgreSQL accepts as a database name (1 to
    63 bytes, no NUL), so PgBouncer ``[databases]`` entries such as ``db`` move over unchanged;
    pools created through the API keep DigitalOcean's stricter rule (``validate_pool_name``).
    """
    if not isinstance(name, str):
        return f"must be a string, got {_show(name)}"
    size = len(name.encode())
    if not 1 <= size <= DATABASE_NAME_MAX_BYTES or "\x00" in name:
        return (
            f"must be 1 to {DATABASE_NAME_MAX_BYTES} bytes (a PostgreSQL database name) "
            f"without NUL, got {size} bytes ({_show(name)})"
        )
    return None


def check_budget(cluster: ClusterConfig, pools: Iterable[PoolConfig]) -> str | None:
    """Return a message if the pools' sizes add up to more than the cluster's budget."""
    need = sum(p.size for p in pools)
    budget = cluster.budget
    if need <= budget:
        return None
    if cluster.max_connections is not None:
        source = f"max_connections {cluster.max_connections}"
    elif cluster.ram_gib is not None:
        source = f"25 * ram_gib {cluster.ram_gib:g} - 3"
    else:
        source = "25 * ram_gib 1 - 3; ram_gib defaults to 1"
    return (
        f"cluster {cluster.id}: pools need {need} server connections but the budget is "
        f"{budget} ({source}); make the pool sizes add up to at most {budget} "
        "or raise ram_gib / max_connections"
    )


# --- sections -----------------------------------------------------------------------------


def _parse_proxy(t: Mapping[str, Any], errs: list[str]) -> ProxyConfig:
    d = ProxyConfig()
    if "replay_parameters" in t:
        errs.append(
            "proxy.replay_parameters: no longer used: every session setting a client makes is "
            "replayed on the servers it gets; list parameters never to replay in replay_exclude"
        )
        t = {k: v for k, v in t.items() if k != "replay_parameters"}
    _check_keys(t, _PROXY_KEYS, "proxy", errs)
    host, port = _listen(t, "proxy", (d.listen_host, d.listen_port), errs)
    return ProxyConfig(
        listen_host=host,
        listen_port=port,
        max_client_conn=_int(t, "max_client_conn", "proxy", d.max_client_conn, 1, errs),
        auth_type=_choice(t, "auth_type", "proxy", d.auth_type, AUTH_TYPES, errs),
        client_login_timeout=_duration(
            t, "client_login_timeout", "proxy", d.client_login_timeout, errs
        ),
        auth_failure_limit=_int(t, "auth_failure_limit", "proxy", d.auth_failure_limit, 0, errs),
        auth_failure_window=_window(t, "auth_failure_window", "proxy", d.auth_failure_window, errs),
        shutdown_timeout=_duration(t, "shutdown_timeout", "proxy", d.shutdown_timeout, errs),
        max_packet_size=_int(
            t, "max_packet_size", "proxy", d.max_packet_size, MIN_PACKET_SIZE, errs
        ),
        track_extra_parameters=_names(
            t, "track_extra_parameters", "proxy", d.track_extra_parameters, errs
        ),
        ignore_startup_parameters=_names(
            t, "ignore_startup_parameters", "proxy", d.ignore_startup_parameters, errs
        ),
        replay_exclude=_names(t, "replay_exclude", "proxy", d.replay_exclude, errs),
        # [proxy].max_client_conn is the proxy-wide limit, not a per-pool default.
        defaults=_parse_settings(t, PoolSettings(), "proxy", errs, skip={"max_client_conn"}),
    )


def _parse_admin(
    t: Mapping[str, Any], env: Mapping[str, str], path: str | None, errs: list[str]
) -> AdminConfig:
    d = AdminConfig()
    _check_keys(t, _ADMIN_KEYS, "admin", errs)
    host, port = _listen(t, "admin", (d.listen_host, d.listen_port), errs)
    enabled = _bool(t, "enabled", "admin", d.enabled, errs)
    allow_no_token = _bool(t, "allow_no_token", "admin", d.allow_no_token, errs)
    token_env = _string(t, "token_env", "admin", DEFAULT_TOKEN_ENV, errs, nonempty=True)
    token = _string(t, "token", "admin", None, errs, nonempty=True)
    if token is None:
        token = env.get(token_env) or None
    if enabled and token is None:
        loopback = _is_loopback(host)
        if allow_no_token and not loopback:
            errs.append(
                "admin.allow_no_token: only allowed when admin.listen is a loopback address "
                f"(127.0.0.0/8, ::1 or localhost), got {_show(host)}; "
                f"set a token (environment variable {token_env} or admin.token) instead"
            )
        elif not allow_no_token:
            errs.append(
                f"admin.token: the admin API needs a token: set the environment variable "
                f"{token_env} (admin.token_env) or admin.token; or set admin.allow_no_token = "
                "true with a loopback admin.listen, or admin.enabled = false"
            )
    state_path = _string(t, "state_path", "admin", d.state_path, errs, nonempty=True)
    if path is not None and state_path != ":memory:" and not os.path.isabs(state_path):
        state_path = os.path.normpath(
            os.path.join(os.path.dirname(os.path.abspath(path)), state_path)
        )
    return AdminConfig(
        listen_host=host,
        listen_port=port,
        enabled=enabled,
        token=token,
        allow_no_token=allow_no_token,
        state_path=state_path,
    )


def _parse_clusters(
    value: object, defaults: PoolSettings, errs: list[str]
) -> tuple[ClusterConfig, ...]:
    clusters: list[ClusterConfig] = []
    ids: dict[str, str] = {}
    pool_names: dict[str, str] = {}
    for i, t in _array_of_tables(value, "clusters", errs):
        prefix = f"clusters[{i}]"
        _check_keys(t, _CLUSTER_KEYS, prefix, errs)
        cid = _cluster_id(t, prefix, errs)
        if cid and cid in ids:
            errs.append(f"{prefix}.id: {cid} is already used by {ids[cid]}; ids must be unique")
        elif cid:
            ids[cid] = f"{prefix}.id"
        host = _string(t, "host", prefix, "127.0.0.1", errs)
        if not _is_host(host):
            errs.append(f"{prefix}.host: must be an IP address or host name, got {_show(host)}")
        ram_gib, max_connections, budget_ok = _budget_keys(t, prefix, errs)
        users = _parse_users(t.get("users", []), prefix, errs)
        pools = _parse_pools(t.get("pools", []), prefix, users, defaults, pool_names, errs)
        cluster = ClusterConfig(
            id=cid or "",
            host=host,
            port=_int(t, "port", prefix, 5432, 1, errs, maximum=65535),
            ram_gib=ram_gib,
            max_connections=max_connections,
            users=users,
            pools=pools,
        )
        problem = check_budget(cluster, pools) if budget_ok else None
        if problem:
            errs.append(f"{prefix}.pools: {problem}")
        clusters.append(cluster)
    return tuple(clusters)


def _cluster_id(t: Mapping[str, Any], prefix: str, errs: list[str]) -> str | None:
    if "id" not in t:
        errs.append(f'{prefix}.id: required; set it to the cluster\'s UUID, e.g. "{uuid.uuid4()}"')
        return None
    value = t["id"]
    if not isinstance(value, str) or not _UUID_RE.fullmatch(value):
        errs.append(
            f"{prefix}.id: must be a UUID like "
            f'"9cc10173-e9ea-4176-9dbc-a4cee4c4ff30", got {_show(value)}'
        )
        return None
    return value.lower()


def _budget_keys(
    t: Mapping[str, Any], prefix: str, errs: list[str]
) -> tuple[float | None, int | None, bool]:
    """Read ram_gib / max_connections; the flag says whether the budget is usable."""
    before = len(errs)
    if "ram_gib" in t and "max_connections" in t:
        errs.append(f"{prefix}: set either ram_gib or max_connections, not both")
    ram_gib: float | None = None
    if "ram_gib" in t:
        value = t["ram_gib"]
        if not _is_number(value) or not math.isfinite(value) or int(25 * value - 3) < 1:
            errs.append(
                f"{prefix}.ram_gib: must be a number >= 0.16 (the budget is 25 * ram_gib - 3 "
                f"connections), got {_show(value)}"
            )
        else:
            ram_gib = float(value)
    max_connections = _int(t, "max_connections", prefix, None, 1, errs)
    return ram_gib, max_connections, len(errs) == before


def _parse_users(value: object, prefix: str, errs: list[str]) -> tuple[UserConfig, ...]:
    users: dict[str, UserConfig] = {}
    for j, t in _array_of_tables(value, f"{prefix}.users", errs):
        key = f"{prefix}.users[{j}]"
        _check_keys(t, _USER_KEYS, key, errs)
        name = _required_string(t, "name", key, errs, "the user name on the server")
        password = _string(t, "password", key, None, errs)
        if password is None and "password" not in t:
            errs.append(f"{key}.password: required (the password of user {_show(name)})")
        if name is None:
            continue
        if name in users:
            errs.append(f"{key}.name: user {_show(name)} is listed twice in {prefix}.users")
            continue
        users[name] = UserConfig(name=name, password=password or "")
    return tuple(users.values())


def _parse_pools(
    value: object,
    prefix: str,
    users: tuple[UserConfig, ...],
    defaults: PoolSettings,
    seen: dict[str, str],
    errs: list[str],
) -> tuple[PoolConfig, ...]:
    pools: list[PoolConfig] = []
    user_names = [u.name for u in users]
    for j, t in _array_of_tables(value, f"{prefix}.pools", errs):
        key = f"{prefix}.pools[{j}]"
        _check_keys(t, _POOL_KEYS, key, errs)
        name = _pool_name(t, key, seen, errs)
        db = _required_string(t, "db", key, errs, "the database on the server to connect to")
        user = _string(t, "user", key, "", errs)
        if user and user not in user_names:
            known = ", ".join(user_names) or "none"
            errs.append(
                f"{key}.user: {_show(user)} is not a user of this cluster (users: {known}); "
                f'add it under [[clusters.users]] or use "" for each client\'s own user'
            )
        if "size" not in t:
            errs.append(f"{key}.size: required; the number of server connections of the pool")
        size = _int(t, "size", key, 0, 1, errs)
        mode = _choice(t, "mode", key, "transaction", MODES, errs)
        settings = _parse_settings(t, defaults, key, errs)
        if size and settings.min_pool_size > size:
            origin = "min_pool_size" if "min_pool_size" in t else "min_pool_size (from [proxy])"
            errs.append(
                f"{key}.min_pool_size: {origin} {settings.min_pool_size} is larger than "
                f"size {size}; lower it or raise size"
            )
        if name is not None and db is not None and size:
            pools.append(PoolConfig(name, db, size, mode, user, settings, "config"))
    return tuple(pools)


def _pool_name(t: Mapping[str, Any], key: str, seen: dict[str, str], errs: list[str]) -> str | None:
    if "name" not in t:
        errs.append(f"{key}.name: required; clients use it as the database name")
        return None
    name = t["name"]
    problem = validate_database_name(name)
    if problem:
        errs.append(f"{key}.name: {problem}")
        return None
    if name in seen:
        errs.append(f"{key}.name: pool {_show(name)} is already defined at {seen[name]}")
        return None
    seen[name] = f"{key}.name"
    return str(name)


def _parse_settings(
    t: Mapping[str, Any],
    base: PoolSettings,
    prefix: str,
    errs: list[str],
    skip: frozenset[str] | set[str] = frozenset(),
) -> PoolSettings:
    changes: dict[str, Any] = {}
    for name, f in _SETTINGS_FIELDS.items():
        if name in skip or name not in t:
            continue
        default = getattr(base, name)
        if name == "session_state":
            if t[name] == "":  # by the pool's mode
                changes[name] = ""
            else:
                changes[name] = _choice(t, name, prefix, default, SESSION_STATE_POLICIES, errs)
        elif f.type == "float":
            changes[name] = _duration(t, name, prefix, default, errs)
        elif f.type == "int":
            changes[name] = _int(t, name, prefix, default, 0, errs)
        else:
            changes[name] = _string(t, name, prefix, default, errs)
    return replace(base, **changes)


# --- value readers: each appends an error naming the key and returns the default ------------


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "a table"
    return repr(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_keys(t: Mapping[str, Any], allowed: Iterable[str], prefix: str, errs: list[str]) -> None:
    allowed = sorted(allowed)
    for k in t:
        if k in allowed:
            continue
        close = difflib.get_close_matches(str(k), allowed, n=1)
        hint = f'did you mean "{close[0]}"?' if close else "remove it"
        errs.append(f"{_key(prefix, str(k))}: unknown key; {hint}")


def _table(t: Mapping[str, Any], name: str, prefix: str, errs: list[str]) -> Mapping[str, Any]:
    value = t.get(name, {})
    if not isinstance(value, Mapping):
        errs.append(f"{_key(prefix, name)}: must be a table ([{name}]), got {_show(value)}")
        return {}
    return value


def _array_of_tables(
    value: object, key: str, errs: list[str]
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    if not isinstance(value, list):
        errs.append(f"{key}: must be an array of tables ([[{key}]]), got {_show(value)}")
        return
    for i, item in enumerate(value):
        if isinstance(item, Mapping):
            yield i, item
        else:
            errs.append(f"{key}[{i}]: must be a table, got {_show(item)}")


def _listen(
    t: Mapping[str, Any], prefix: str, default: tuple[str, int], errs: list[str]
) -> tuple[str, int]:
    if "listen" not in t:
        return default
    try:
        return parse_listen(t["listen"], f"{prefix}.listen")
    except ConfigError as exc:
        errs.append(str(exc))
        return default


def _int(
    t: Mapping[str, Any],
    name: str,
    prefix: str,
    default: Any,
    minimum: int,
    errs: list[str],
    maximum: int | None = None,
) -> Any:
    if name not in t:
        return default
    value = t[name]
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if ok and (maximum is None or value <= maximum):
        return value
    bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
    errs.append(f"{_key(prefix, name)}: must be an integer {bound}, got {_show(value)}")
    return default


def _duration(
    t: Mapping[str, Any], name: str, prefix: str, default: float, errs: list[str]
) -> float:
    if name not in t:
        return default
    value = t[name]
    if _is_number(value) and math.isfinite(value) and value >= 0:
        return float(value)
    errs.append(
        f"{_key(prefix, name)}: must be a number of seconds >= 0 (0 disables it), "
        f"got {_show(value)}"
    )
    return default


def _window(t: Mapping[str, Any], name: str, prefix: str, default: float, errs: list[str]) -> float:
    """A span of time that cannot be turned off: a number of seconds > 0."""
    if name not in t:
        return default
    value = t[name]
    if _is_number(value) and math.isfinite(value) and value > 0:
        return float(value)
    errs.append(f"{_key(prefix, name)}: must be a number of seconds > 0, got {_show(value)}")
    return default


def _bool(t: Mapping[str, Any], name: str, prefix: str, default: bool, errs: list[str]) -> bool:
    if name not in t:
        return default
    value = t[name]
    if isinstance(value, bool):
        return value
    errs.append(f"{_key(prefix, name)}: must be true or false, got {_show(value)}")
    return default


def _string(
    t: Mapping[str, Any],
    name: str,
    prefix: str,
    default: Any,
    errs: list[str],
    nonempty: bool = False,
) -> Any:
    if name not in t:
        return default
    value = t[name]
    if isinstance(value, str) and "\x00" not in value and (value or not nonempty):
        return value
    what = "a non-empty string" if nonempty else "a string"
    errs.append(f"{_key(prefix, name)}: must be {what}, got {_show(value)}")
    return default


def _required_string(
    t: Mapping[str, Any], name: str, prefix: str, errs: list[str], hint: str
) -> str | None:
    if name not in t:
        errs.append(f"{_key(prefix, name)}: required; {hint}")
        return None
    return _string(t, name, prefix, None, errs, nonempty=True)


def _choice(
    t: Mapping[str, Any],
    name: str,
    prefix: str,
    default: str,
    choices: tuple[str, ...],
    errs: list[str],
) -> str:
    if name not in t:
        return default
    value = t[name]
    if isinstance(value, str) and value in choices:
        return value
    msg = f"{_key(prefix, name)}: must be one of {', '.join(choices)}, got {_show(value)}"
    close = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
    errs.append(msg + (f' (did you mean "{close[0]}"?)' if close else ""))
    return default


def _names(
    t: Mapping[str, Any], name: str, prefix: str, default: tuple[str, ...], errs: list[str]
) -> tuple[str, ...]:
    if name not in t:
        return default
    value = t[name]
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(value)
    errs.append(
        f"{_key(prefix, name)}: must be an array of parameter names, e.g. "
        f'["IntervalStyle"], got {_show(value)}'
    )
    return default


# --- addresses ------------------------------------------------------------------------------


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _is_host(host: object) -> bool:
    """An IPv4/IPv6 literal or a DNS host name (RFC 1123 labels)."""
    if not isinstance(host, str) or not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or all(label.isdigit() for label in labels):
        return False  # an all-numeric name is a malformed IPv4 address
    return all(_HOST_LABEL_RE.fullmatch(label) for label in labels)


def _is_loopback(host: str) -> bool:
    if host.lower().removesuffix(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
