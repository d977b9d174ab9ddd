"""The SHOW commands: each returns its columns and rows, read from the live pools and clients."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pyproxy import __version__
from pyproxy.config import Config, PoolConfig
from pyproxy.console import columns as K
from pyproxy.console.periods import Periods, totals
from pyproxy.pool.pool import Pool
from pyproxy.pool.registry import PoolRegistry
from pyproxy.pool.stats import longest_wait
from pyproxy.proto.phases import ClientPhase

C = ClientPhase
LOGGING_IN = (C.STARTUP, C.AUTH, C.LOGIN)
Row = list[str | None]
VERSION = f"pyproxy {__version__} (PgBouncer 1.25 admin console)"


class View:
    """What the SHOW commands read: the registry, the connected clients, the config."""

    def __init__(
        self, registry: PoolRegistry, clients: Iterable[Any], config: Config, periods: Periods
    ) -> None:
        self.registry = registry
        self.clients = sorted(clients, key=lambda c: c.id)
        self.config = config
        self.periods = periods
        self.now = time.monotonic()
        self.wall = time.time()

    def definitions(self) -> list[tuple[Any, PoolConfig]]:
        """(cluster, pool definition) of every pool, by name."""
        out = [(c, p) for c in self.registry.clusters() for p in self.registry.pool_configs(c.id)]
        return sorted(out, key=lambda cp: cp[1].name)

    def pools(self) -> list[Pool]:
        return sorted(self.registry.live_pools(), key=lambda p: (p.name, p.login_user))

    def timestamp(self, monotonic: float) -> str:
        """PgBouncer's ``YYYY-MM-DD HH:MM:SS TZ`` in local time, for a monotonic instant."""
        wall = self.wall - (self.now - monotonic)
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(wall))


def _s(value: object) -> str:
    return str(value)


def _us(seconds: float) -> tuple[str, str]:
    """Whole seconds and the microsecond part, as PgBouncer splits wait times."""
    micros = max(0, int(seconds * 1_000_000))
    return str(micros // 1_000_000), str(micros % 1_000_000)


# ---- pools ------------------------------------------------------------------------------------


def _client_state(client: Any) -> str:
    if client.phase is C.WAITING:
        return "waiting"
    if client.server is not None and not client.reclaimable():
        return "active"
    return "idle"


def show_pools(view: View) -> tuple[K.Columns, list[Row]]:
    rows = []
    for pool in view.pools():
        clients = [c for c in pool.clients if c.phase not in LOGGING_IN and c.phase is not C.CLOSED]
        waiting = sum(1 for c in clients if c.phase is C.WAITING)
        active = sum(1 for s in pool.linked if s.client is not None and not s.client.reclaimable())
        kept = len(pool.linked) - active
        delay = pool.settings.server_check_delay
        used = sum(1 for s in pool.idle if delay > 0 and view.now - s.idle_since > delay)
        wait_s, wait_us = _us(longest_wait(pool, view.now))
        rows.append(
            [
                pool.name,
                pool.login_user,
                _s(len(clients) - waiting),
                _s(waiting),
                "0",
                "0",
                _s(active),
                "0",
                _s(len(pool.canceling)),
                _s(len(pool.idle) - used + kept),
                _s(used),
                _s(len(pool.cleaning)),
                _s(pool.connecting),
                wait_s,
                wait_us,
                pool.mode,
                None,
            ]
        )
    return K.POOLS, rows


# ---- clients and servers ---------------------------------------------------------------------


def _ptr(obj: object) -> str:
    return f"{id(obj):x}"


def _local(transport: Any) -> tuple[str, str]:
    name = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(name, tuple):
        return str(name[0]), str(name[1])
    return str(name or "unix"), "0"


def _tls(transport: Any) -> str:
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return ""
    cipher = ssl_object.cipher() or ("", "", 0)
    return f"{ssl_object.version()}/{cipher[0]}/{cipher[2]}"


def _client_row(view: View, client: Any) -> Row:
    transport = client.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    port = str(peer[1]) if isinstance(peer, tuple) else "0"
    local_addr, local_port = _local(transport)
    waiting = client.phase is C.WAITING
    wait_s, wait_us = _us(view.now - client.wait_since if waiting else 0.0)
    server = client.server
    console = client.pool is None
    return [
        "C",
        client.user or "(nouser)",
        client.database or "(nodb)",
        "none",
        "active" if console else _client_state(client),
        client.address,
        port,
        local_addr,
        local_port,
        view.timestamp(client.connected_at),
        view.timestamp(max(client.last_active, client.query_start, client.wait_since)),
        wait_s,
        wait_us,
        "0",
        _ptr(client),
        _ptr(server) if server is not None else "",
        "0",
        _tls(transport),
        client.params.get("application_name", ""),
        _s(len(client.stmts)),
        _s(client.id),
    ]


def show_clients(view: View) -> tuple[K.Columns, list[Row]]:
    rows = [
        _client_row(view, c)
        for c in view.clients
        if c.phase not in LOGGING_IN and c.phase is not C.CLOSED
    ]
    return K.CLIENTS, rows


def _server_state(pool: Pool, server: Any, now: float) -> str:
    if server in pool.linked:
        return "idle" if server.held else "active"
    if server in pool.cleaning:
        return "tested"
    if server in pool.canceling:
        return "being_canceled"
    delay = pool.settings.server_check_delay
    return "used" if delay > 0 and now - server.idle_since > delay else "idle"


def _server_row(view: View, pool: Pool, server: Any) -> Row:
    transport = server.transport
    local_addr, local_port = _local(transport)
    client = server.client
    return [
        "S",
        pool.login_user,
        pool.name,
        "none",
        _server_state(pool, server, view.now),
        pool.cluster.host,
        _s(pool.cluster.port),
        local_addr,
        local_port,
        view.timestamp(server.created),
        view.timestamp(max(server.ready_at, server.idle_since)),
        "0",
        "0",
        "1" if server.stale else "0",
        _ptr(server),
        _ptr(client) if client is not None else "",
        _s(server.pid),
        _tls(transport),
        server.params.get("application_name", ""),
        _s(len(server.stmts.prepared)),
        _s(server.id),
    ]


def show_servers(view: View) -> tuple[K.Columns, list[Row]]:
    rows = []
    for pool in view.pools():
        servers = [*pool.linked, *pool.cleaning, *pool.canceling, *pool.idle]
        rows.extend(_server_row(view, pool, s) for s in sorted(servers, key=lambda s: s.id))
    return K.SERVERS, rows


# ---- stats -----------------------------------------------------------------------------------


def _numbers(figures: dict[str, int]) -> list[str | None]:
    return [_s(figures[k]) for k in K.STATS_FIELDS]


def show_stats(view: View) -> tuple[K.Columns, list[Row]]:
    rows = []
    for _, cfg in view.definitions():
        rows.append(
            [
                cfg.name,
                *_numbers(totals(view.registry, cfg.name)),
                *_numbers(view.periods.of(cfg.name)),
            ]
        )
    return K.STATS, rows


def show_stats_totals(view: View) -> tuple[K.Columns, list[Row]]:
    rows = [[cfg.name, *_numbers(totals(view.registry, cfg.name))] for _, cfg in view.definitions()]
    return K.STATS_TOTALS, rows


def show_stats_averages(view: View) -> tuple[K.Columns, list[Row]]:
    rows = [[cfg.name, *_numbers(view.periods.of(cfg.name))] for _, cfg in view.definitions()]
    return K.STATS_AVERAGES, rows


# ---- configuration ---------------------------------------------------------------------------


def show_databases(view: View) -> tuple[K.Columns, list[Row]]:
    rows = []
    for cluster, cfg in view.definitions():
        live = view.registry.live_pools(cfg.name)
        s = cfg.settings
        rows.append(
            [
                cfg.name,
                cluster.host,
                _s(cluster.port),
                cfg.db,
                cfg.user,
                _s(cfg.size),
                _s(s.min_pool_size),
                _s(s.reserve_pool_size),
                _s(int(s.server_lifetime)),
                cfg.mode,
                None,
                "0",
                _s(sum(p.total for p in live)),
                _s(s.max_client_conn),
                _s(sum(len(p.clients) for p in live)),
                "1" if view.registry.is_paused(cfg.name) else "0",
                "0",
            ]
        )
    return K.DATABASES, rows


def show_users(view: View) -> tuple[K.Columns, list[Row]]:
    names = sorted({u.name for c in view.registry.clusters() for u in c.users})
    pools = view.registry.live_pools()
    rows = []
    for name in names:
        servers = sum(p.total for p in pools if p.login_user == name)
        clients = sum(1 for c in view.clients if c.user == name and c.phase is not C.CLOSED)
        rows.append([name, "", "", "", "0", _s(servers), "0", _s(clients)])
    return K.USERS, rows


def show_lists(view: View) -> tuple[K.Columns, list[Row]]:
    pools = view.registry.live_pools()
    users = {u.name for c in view.registry.clusters() for u in c.users}
    login = sum(1 for c in view.clients if c.phase in LOGGING_IN)
    used = sum(1 for c in view.clients if c.phase is not C.CLOSED) - login
    items = {
        "databases": len(view.definitions()),
        "users": len(users),
        "peers": 0,
        "pools": len(pools),
        "peer_pools": 0,
        "free_clients": 0,
        "used_clients": used,
        "login_clients": login,
        "free_servers": 0,
        "used_servers": sum(p.servers for p in pools),
        "dns_names": 0,
        "dns_zones": 0,
        "dns_queries": 0,
        "dns_pending": 0,
    }
    return K.LISTS, [[k, _s(v)] for k, v in items.items()]


def show_version(view: View) -> tuple[K.Columns, list[Row]]:
    return K.VERSION, [[VERSION]]
