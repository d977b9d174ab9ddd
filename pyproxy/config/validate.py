"""Rules shared by the config file and the admin API: listen addresses, pool and database
names, and the cluster's connection budget."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pyproxy.config.fields import _is_host, _is_ipv6, _show
from pyproxy.config.model import ClusterConfig, PoolConfig
from pyproxy.errors import ConfigError

DEFAULT_LISTEN_HOST = "127.0.0.1"
POOL_NAME_MIN_LEN = 3
POOL_NAME_MAX_LEN = 60
DATABASE_NAME_MAX_BYTES = 63
_POOL_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


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


# Database names the admin console answers to (pyproxy.console): no pool may take them.
RESERVED_POOL_NAMES = frozenset({"pgbouncer", "pyproxy"})


def _reserved(name: str) -> str | None:
    if name in RESERVED_POOL_NAMES:
        return f"{_show(name)} is the admin console's database name; choose another pool name"
    return None


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
    return _reserved(name)


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
    return _reserved(name)


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
