"""Running pyproxy in tests: config dicts for the test PostgreSQL and a started App to talk to."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import asyncpg

from pyproxy.app import App
from pyproxy.config import Config, parse_config
from tests.support.pgcluster import APP_DB, USERS, PgServer

CLUSTER_ID = "5f0c3a52-8d1e-4c8b-9a57-0d6f2b7e4c11"
MODES = ("session", "transaction", "statement")
DEFAULT_POOL = "testpool"
SCRAM_USER, SCRAM_PASSWORD = USERS["scram"]
MD5_USER, MD5_PASSWORD = USERS["md5"]
TRUST_USER, TRUST_PASSWORD = USERS["trust"]
SUPERUSER, SUPERUSER_PASSWORD = USERS["superuser"]
STOP_TIMEOUT = 1.0


def pool_entry(
    name: str = DEFAULT_POOL,
    *,
    mode: str = "transaction",
    size: int = 5,
    db: str = APP_DB,
    user: str | None = SCRAM_USER,
    **settings: Any,
) -> dict[str, Any]:
    """One ``[[clusters.pools]]`` table; ``user=None`` or ``""`` = each client's own user.

    Any other keyword is a per-pool setting (``query_wait_timeout=0.3``, ``max_client_conn=2``).
    """
    entry: dict[str, Any] = {"name": name, "db": db, "size": size, "mode": mode}
    if user:
        entry["user"] = user
    entry.update(settings)
    return entry


def default_users() -> list[dict[str, str]]:
    """Every role of the test cluster with its password, as ``[[clusters.users]]`` tables."""
    return [{"name": name, "password": password} for name, password in USERS.values()]


def config_dict(
    pg: PgServer,
    pools: Iterable[Mapping[str, Any]] = (),
    *,
    proxy: Mapping[str, Any] | None = None,
    users: Iterable[Mapping[str, str]] | None = None,
    cluster: Mapping[str, Any] | None = None,
    admin: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A config in the TOML shape for the test PostgreSQL.

    Defaults: listen on 127.0.0.1 port 0, admin API disabled, every test role as a user, a
    budget of 300 server connections. ``proxy``/``cluster``/``admin`` entries override or add
    keys of those tables; ``pools`` defaults to one transaction pool named ``testpool``.
    """
    pool_list = [dict(p) for p in pools] or [pool_entry()]
    cluster_table: dict[str, Any] = {
        "id": CLUSTER_ID,
        "host": pg.host,
        "port": pg.port,
        "max_connections": 300,
        "users": [dict(u) for u in users] if users is not None else default_users(),
        "pools": pool_list,
    }
    cluster_table.update(cluster or {})
    return {
        "proxy": {"listen": "127.0.0.1:0", **(proxy or {})},
        "admin": {"enabled": False, **(admin or {})},
        "clusters": [cluster_table],
    }


@dataclass
class RunningProxy:
    """A started App and the ways to reach it."""

    app: App
    host: str
    port: int

    @property
    def config(self) -> Config:
        return self.app.config

    def dsn(
        self, pool: str = DEFAULT_POOL, user: str = SCRAM_USER, password: str | None = None
    ) -> str:
        """A postgresql:// URL; ``password=None`` = the role's known password, "" = none."""
        if password is None:
            password = known_password(user)
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(pool, safe='')}"

    async def asyncpg(
        self,
        pool: str = DEFAULT_POOL,
        user: str = SCRAM_USER,
        password: str | None = None,
        **kwargs: Any,
    ) -> asyncpg.Connection:
        """An asyncpg connection through the proxy (statement cache off unless given)."""
        kwargs.setdefault("statement_cache_size", 0)
        kwargs.setdefault("timeout", 10)
        return await asyncpg.connect(self.dsn(pool, user, password), **kwargs)

    def pool_stats(self, pool: str = DEFAULT_POOL) -> dict[str, int]:
        """cl_active, cl_waiting, cl_total, sv_active, sv_idle, sv_login, sv_total."""
        return self.app.registry.pool_stats(pool)

    async def wait_stats(
        self, pool: str = DEFAULT_POOL, timeout: float = 2.0, **expected: int
    ) -> dict[str, int]:
        """Wait until ``pool_stats`` shows the expected values; raise AssertionError if not."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.pool_stats(pool)
            if all(stats.get(k) == v for k, v in expected.items()):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"pool {pool} stats {stats}, expected {expected}")
            await asyncio.sleep(0.01)


def known_password(user: str) -> str:
    for name, password in USERS.values():
        if name == user:
            return password
    return ""


@contextlib.asynccontextmanager
async def running_proxy(
    pg: PgServer,
    pools: Iterable[Mapping[str, Any]] = (),
    *,
    stop_timeout: float = STOP_TIMEOUT,
    **overrides: Any,
) -> AsyncIterator[RunningProxy]:
    """Start an App for ``config_dict(pg, pools, **overrides)``; stop it on exit."""
    cfg = parse_config(config_dict(pg, pools, **overrides))
    app = App(cfg)
    await app.start()
    try:
        yield RunningProxy(app, cfg.proxy.listen_host, app.client_port)
    finally:
        await app.stop(stop_timeout)


# --- the server's view: pg_stat_activity through a direct superuser connection ---------------


async def backends(
    admin: asyncpg.Connection, user: str, db: str = APP_DB, states: Iterable[str] | None = None
) -> list[asyncpg.Record]:
    """Client backends of ``user`` on ``db`` (pid, state, query, xact_start), own one excluded."""
    rows = await admin.fetch(
        "SELECT pid, state, query, xact_start FROM pg_stat_activity "
        "WHERE usename = $1 AND datname = $2 AND backend_type = 'client backend' "
        "AND pid <> pg_backend_pid()",
        user,
        db,
    )
    wanted = set(states) if states is not None else None
    return [r for r in rows if wanted is None or r["state"] in wanted]


async def wait_backends(
    admin: asyncpg.Connection,
    user: str,
    db: str = APP_DB,
    *,
    states: Iterable[str] | None = None,
    at_most: int = 0,
    timeout: float = 2.0,
) -> list[asyncpg.Record]:
    """Poll until at most ``at_most`` such backends remain; AssertionError after ``timeout``."""
    wanted = tuple(states) if states is not None else None
    deadline = time.monotonic() + timeout
    while True:
        rows = await backends(admin, user, db, wanted)
        if len(rows) <= at_most:
            return rows
        if time.monotonic() > deadline:
            shown = [(r["pid"], r["state"], r["query"]) for r in rows]
            raise AssertionError(f"{len(rows)} backends of {user} on {db} remain: {shown}")
        await asyncio.sleep(0.02)


async def superuser_conn(pg: PgServer) -> asyncpg.Connection:
    """A direct superuser connection to the test database (watch or kill backends)."""
    return await asyncpg.connect(pg.dsn(SUPERUSER, SUPERUSER_PASSWORD, APP_DB))


async def wait_for_query(admin: asyncpg.Connection, marker: str, timeout: float = 2.0) -> int:
    """The pid of the backend running a statement containing ``marker``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 "
            "AND pid <> pg_backend_pid()",
            f"%{marker}%",
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    raise AssertionError(f"no backend is running the query marked {marker}")
