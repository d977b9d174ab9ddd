"""Loading: the TOML file read, every section checked, one ConfigError listing every problem."""

from __future__ import annotations

import math
import os
import re
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from pyproxy.config.fields import (
    _array_of_tables,
    _bool,
    _check_keys,
    _choice,
    _duration,
    _int,
    _is_host,
    _is_loopback,
    _is_number,
    _names,
    _required_string,
    _show,
    _string,
    _table,
    _user_list,
    _window,
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
from pyproxy.config.tls import (
    ADMIN_TLS_KEYS,
    CLIENT_TLS_KEYS,
    SERVER_TLS_KEYS,
    admin_tls,
    tls_settings,
)
from pyproxy.config.users import (
    CLUSTER_AUTH_KEYS,
    PROXY_AUTH_KEYS,
    parse_cluster_auth,
    parse_proxy_auth,
    parse_users,
)
from pyproxy.config.validate import (
    check_budget,
    parse_listen,
    validate_database_name,
)
from pyproxy.errors import ConfigError

DEFAULT_TOKEN_ENV = "PYPROXY_ADMIN_TOKEN"
MIN_PACKET_SIZE = 1024
MAX_WORKERS = 64  # the cancel key carries the worker index in 6 bits
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
        "admin_users",
        "stats_users",
        "log_format",
        "stats_period",
        "metrics",
        "workers",
    }
    | PROXY_AUTH_KEYS
)
_PROXY_KEYS = _PROXY_ONLY_KEYS | _SETTINGS_FIELDS.keys() | CLIENT_TLS_KEYS | SERVER_TLS_KEYS
_ADMIN_KEYS = (
    frozenset(
        {"listen", "token_env", "token", "allow_no_token", "enabled", "state_path", "state_dsn"}
    )
    | ADMIN_TLS_KEYS
)
_CLUSTER_KEYS = (
    frozenset({"id", "host", "port", "ram_gib", "max_connections", "users", "pools"})
    | SERVER_TLS_KEYS
    | CLUSTER_AUTH_KEYS
)
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
    base_dir = os.path.dirname(os.path.abspath(path)) if path is not None else None
    proxy_table = _table(data, "proxy", "", errs)
    proxy = _parse_proxy(proxy_table, errs)
    proxy = replace(
        proxy,
        client_tls=tls_settings(proxy_table, "client", "proxy", proxy.client_tls, base_dir, errs),
        server_tls=tls_settings(proxy_table, "server", "proxy", proxy.server_tls, base_dir, errs),
    )
    admin_table = _table(data, "admin", "", errs)
    admin = _parse_admin(admin_table, env, path, errs)
    if admin.enabled:
        cert, key = admin_tls(admin_table, base_dir, errs)
        admin = replace(admin, tls_cert_file=cert, tls_key_file=key)
    clusters = _parse_clusters(data.get("clusters", []), proxy, env, errs)
    clusters = tuple(
        replace(c, server_tls=tls_settings(t, "server", f"clusters[{i}]", proxy.server_tls,
                                           base_dir, errs))
        for c, (i, t) in zip(clusters, _cluster_tables(data.get("clusters", [])), strict=True)
    )  # fmt: skip
    if errs:
        raise ConfigError("\n".join(errs))
    return Config(proxy=proxy, admin=admin, clusters=clusters, path=path)


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
        metrics=_bool(t, "metrics", "proxy", d.metrics, errs),
        workers=_workers(t, d.workers, errs),
        **parse_proxy_auth(t, errs),
        admin_users=_user_list(t, "admin_users", "proxy", d.admin_users, errs),
        stats_users=_user_list(t, "stats_users", "proxy", d.stats_users, errs),
        log_format=_choice(t, "log_format", "proxy", d.log_format, LOG_FORMATS, errs),
        stats_period=_duration(t, "stats_period", "proxy", d.stats_period, errs),
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
    state_dsn = _string(t, "state_dsn", "admin", d.state_dsn, errs)
    if state_dsn and not state_dsn.startswith(("postgresql://", "postgres://")):
        errs.append(
            f"admin.state_dsn: must be a postgresql:// URL (or empty for the SQLite "
            f"state_path), got {_show(state_dsn.split('@')[-1])}"
        )
    return AdminConfig(
        listen_host=host,
        listen_port=port,
        enabled=enabled,
        token=token,
        allow_no_token=allow_no_token,
        state_path=state_path,
        state_dsn=state_dsn,
    )


def _parse_clusters(
    value: object, proxy: ProxyConfig, env: Mapping[str, str], errs: list[str]
) -> tuple[ClusterConfig, ...]:
    defaults = proxy.defaults
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
        users = parse_users(t.get("users", []), prefix, env, errs)
        pools = _parse_pools(t.get("pools", []), prefix, users, defaults, pool_names, errs)
        cluster = ClusterConfig(
            id=cid or "",
            host=host,
            port=_int(t, "port", prefix, 5432, 1, errs, maximum=65535),
            ram_gib=ram_gib,
            max_connections=max_connections,
            users=users,
            pools=pools,
            **parse_cluster_auth(t, prefix, proxy, users, errs),
        )
        problem = check_budget(cluster, pools) if budget_ok else None
        if problem:
            errs.append(f"{prefix}.pools: {problem}")
        clusters.append(cluster)
    return tuple(clusters)


def _cluster_tables(value: object) -> list[tuple[int, Mapping[str, Any]]]:
    """The [[clusters]] tables _parse_clusters made a cluster of, with their index."""
    return list(_array_of_tables(value, "clusters", [])) if isinstance(value, list) else []


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


def _workers(t: Mapping[str, Any], default: int, errs: list[str]) -> int:
    """``[proxy] workers``: a count from 1 to MAX_WORKERS, or "auto" for the number of CPUs."""
    value = t.get("workers", default)
    if value == "auto":
        return max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        errs.append(
            f'proxy.workers: expected a whole number from 1 to {MAX_WORKERS} or "auto", '
            f"got {value!r}"
        )
        return default
    return value
