"""Pool definitions kept in PostgreSQL (``[admin] state_dsn``), shared by several instances.

The ``pyproxy`` schema is created on first start and upgraded by numbered migrations. Writes
are single transactions that NOTIFY ``pyproxy_pools`` before they commit; an API answer is
sent only after the COMMIT succeeded. Every instance LISTENs and re-reads the definitions when
told, and every few seconds anyway; a background loop also renews the instance's heartbeat and
its shares of each pool (admin/shares.py). When the database is unreachable the last known
definitions keep serving, writes fail with StateStoreUnavailable, and the loop reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from pyproxy.admin.pgclient import PgClient, PgClientError, PgConnectionLost, parse_dsn
from pyproxy.admin.shares import EXPIRE, HEARTBEAT, Allocator, ShareTarget
from pyproxy.admin.store import StateStoreConflict, StateStoreError, StateStoreUnavailable
from pyproxy.config import PoolConfig, PoolSettings

log = logging.getLogger("pyproxy.state")

RESYNC = 5.0  # seconds between re-reads of the definitions without a notification
OP_TIMEOUT = 5.0  # seconds a statement round may take before the connection is dropped
RETRY = 1.0  # seconds between reconnection attempts
MIGRATION_LOCK = 7_452_019_300
WRITE_LOCK = 7_452_019_302
FAILURES = (PgConnectionLost, PgClientError, TimeoutError, OSError)

# (version, SQL): applied in order, each once, in the transaction that records it.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE pyproxy.pools (
            seq        bigserial NOT NULL,
            name       text PRIMARY KEY,
            cluster_id text NOT NULL,
            db         text NOT NULL,
            size       integer NOT NULL CHECK (size >= 1),
            mode       text NOT NULL,
            "user"     text NOT NULL DEFAULT '',
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE pyproxy.instances (
            id         text PRIMARY KEY,
            clusters   text NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            heartbeat  timestamptz NOT NULL
        );
        CREATE TABLE pyproxy.grants (
            cluster_id  text NOT NULL,
            pool        text NOT NULL,
            instance_id text NOT NULL REFERENCES pyproxy.instances (id) ON DELETE CASCADE,
            granted     integer NOT NULL CHECK (granted >= 0),
            demand      integer NOT NULL DEFAULT 0,
            PRIMARY KEY (cluster_id, pool, instance_id)
        );
        """,
    ),
]
LATEST = MIGRATIONS[-1][0]

Row = tuple[str, str, str, int, str, str]  # cluster id, name, db, size, mode, user


class DefinitionTarget(Protocol):
    """What applying stored definitions needs from the pool layer."""

    def cluster(self, cluster_id: str) -> Any: ...
    def clusters(self) -> tuple[Any, ...]: ...
    def pool_configs(self, cluster_id: str) -> list[PoolConfig]: ...
    def find_pool(self, name: str) -> tuple[str, PoolConfig] | None: ...
    def add_pool(self, cluster_id: str, pool: PoolConfig) -> None: ...
    def update_pool(self, name: str, pool: PoolConfig) -> None: ...
    def remove_pool(self, name: str) -> None: ...


def sync_definitions(target: DefinitionTarget, stored: list[tuple[str, PoolConfig]]) -> int:
    """Make the API pools of ``target`` those ``stored``; pools from the file stay. Returns the
    number of pools added, changed or removed."""
    changes = 0
    wanted: dict[str, tuple[str, PoolConfig]] = {}
    for cid, pool in stored:
        if target.cluster(cid) is not None:
            wanted[pool.name] = (cid, pool)
    for cluster in target.clusters():
        for pool in target.pool_configs(cluster.id):
            if pool.source == "api" and pool.name not in wanted:
                target.remove_pool(pool.name)
                changes += 1
    for name, (cid, pool) in wanted.items():
        found = target.find_pool(name)
        if found is None:
            target.add_pool(cid, pool)
            changes += 1
        elif found[1].source == "api" and found != (cid, pool):
            target.update_pool(name, pool)
            changes += 1
    return changes


async def migrate(client: PgClient) -> int:
    """Create or upgrade the ``pyproxy`` schema; returns the version it is at."""
    async with client.transaction():
        await client.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await client.simple(
            "CREATE SCHEMA IF NOT EXISTS pyproxy; CREATE TABLE IF NOT EXISTS pyproxy.migrations "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await client.simple("SELECT coalesce(max(version), 0) FROM pyproxy.migrations")
        current = int(str(rows[0][0]))
        if current > LATEST:
            raise StateStoreError(
                f"the state database's pyproxy schema is at version {current}; this pyproxy "
                f"knows versions up to {LATEST}"
            )
        for version, sql in MIGRATIONS:
            if version > current:
                await client.simple(sql)
                await client.execute(
                    "INSERT INTO pyproxy.migrations (version) VALUES ($1)", version
                )
                log.info("state database: pyproxy schema migrated to version %d", version)
    return max(current, LATEST)


class PgStateStore:
    """API pools in a PostgreSQL database, with the instance's heartbeat and pool shares."""

    def __init__(
        self, dsn: str, settings: PoolSettings | None = None, instance_id: str | None = None
    ) -> None:
        try:
            self.dsn = parse_dsn(dsn)
        except ValueError as exc:
            raise StateStoreError(f"[admin] state_dsn: {exc}") from None
        self.settings = settings or PoolSettings()
        self.me = instance_id or str(uuid.uuid4())
        self.where = f"{self.dsn.host}:{self.dsn.port}/{self.dsn.dbname}"
        self._client: PgClient | None = None
        self._rows: list[Row] = []
        self._writes = 0  # local writes so far: a re-read that overlaps one is not applied
        self._reread_due = True
        self._wake = asyncio.Event()
        self._connected_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._apply: Callable[[list[tuple[str, PoolConfig]]], object] | None = None
        self.allocator: Allocator | None = None

    # ---- the store interface -------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._client is not None and not self._client.closed

    async def open(self) -> None:
        """Connect, create or upgrade the schema and read the definitions (start-up)."""
        try:
            async with asyncio.timeout(OP_TIMEOUT + self.dsn.connect_timeout):
                await self._connect()
                assert self._client is not None
                await self._reread(self._client)
        except StateStoreError:
            raise
        except FAILURES as exc:
            raise StateStoreError(f"state database {self.where}: {exc}") from None

    def load(self, settings: PoolSettings | None = None) -> list[tuple[str, PoolConfig]]:
        """The last definitions read or written, as (cluster id, pool), in creation order."""
        s = settings or self.settings
        return [
            (cid, PoolConfig(name, db, size, mode, user, settings=s, source="api"))
            for cid, name, db, size, mode, user in self._rows
        ]

    async def save(self, cluster_id: str, pool: PoolConfig, *, create: bool, budget: int) -> None:
        """Create (or change) the pool; ``budget`` bounds the sizes of the cluster's API pools.
        Returns once committed; StateStoreConflict when another instance got there first."""
        args = (pool.name, cluster_id, pool.db, pool.size, pool.mode, pool.user)
        if create:
            sql = (
                'INSERT INTO pyproxy.pools (name, cluster_id, db, size, mode, "user") '
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING name"
            )
        else:
            sql = (
                'UPDATE pyproxy.pools SET db = $3, size = $4, mode = $5, "user" = $6, '
                "updated_at = now() WHERE name = $1 AND cluster_id = $2 RETURNING name"
            )

        async def write(client: PgClient) -> None:
            used = await client.execute(
                "SELECT coalesce(sum(size), 0) FROM pyproxy.pools "
                "WHERE cluster_id = $1 AND name <> $2",
                cluster_id,
                pool.name,
            )
            free = max(0, budget - int(str(used[0][0])))
            if pool.size > free:
                raise StateStoreConflict(
                    f"size {pool.size} exceeds the cluster's remaining budget: {free} "
                    "connections are free (pools created through other instances count)"
                )
            if not await client.execute(sql, *args):
                raise StateStoreConflict(
                    f"pool name is not available: a pool named {pool.name!r} exists"
                    if create
                    else f"pool {pool.name!r} was deleted through another instance"
                )

        await self._write(write, pool.name)
        row: Row = (cluster_id, pool.name, pool.db, pool.size, pool.mode, pool.user)
        if any(r[1] == pool.name for r in self._rows):
            self._rows = [row if r[1] == pool.name else r for r in self._rows]
        else:
            self._rows.append(row)

    async def remove(self, name: str) -> None:
        """Delete the pool ``name`` (no error if it is not stored); returns once committed."""

        async def write(client: PgClient) -> None:
            await client.execute("DELETE FROM pyproxy.pools WHERE name = $1", name)

        await self._write(write, name)
        self._rows = [r for r in self._rows if r[1] != name]

    async def _write(self, body: Callable[[PgClient], Any], name: str) -> None:
        client = self._client
        if client is None or client.closed:
            raise StateStoreUnavailable(f"the state database {self.where} is unreachable")
        self._writes += 1
        try:
            async with asyncio.timeout(OP_TIMEOUT), client.transaction():
                await client.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
                await body(client)
                await client.execute("SELECT pg_notify('pyproxy_pools', $1)", name)
        except StateStoreError:
            raise
        except (PgConnectionLost, TimeoutError, OSError) as exc:
            client.close()
            raise StateStoreUnavailable(
                f"the state database {self.where} did not confirm the change ({exc}); "
                "it may or may not have been saved: read it back and retry"
            ) from None
        except PgClientError as exc:
            raise StateStoreError(f"state database {self.where}: {exc}") from None
        finally:
            self._writes += 1
            self._wake.set()  # the new or changed pool needs its share

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Stop the loop and unregister, so the other instances get this one's shares now."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        client = self._client
        if client is not None and not client.closed and self.allocator is not None:
            try:
                async with asyncio.timeout(2):
                    await self.allocator.leave(client)
            except FAILURES as exc:
                log.warning("state database: could not unregister this instance: %s", exc)
        self.close()

    # ---- keeping up with the database ----------------------------------------------------------

    async def start(
        self, target: ShareTarget, clusters: list[str], apply: Callable[..., object]
    ) -> None:
        """Take the first shares (before any client is served), then keep them and the
        definitions up to date in the background."""
        self._apply = apply
        self.allocator = Allocator(self.me, clusters, target)
        client = self._client
        assert client is not None
        try:
            async with asyncio.timeout(OP_TIMEOUT):
                await self.allocator.rebalance(client, may_expire=False)
        except FAILURES as exc:
            raise StateStoreError(f"state database {self.where}: {exc}") from None
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _connect(self) -> None:
        client = await PgClient.connect(self.dsn, self._notified)
        try:
            await migrate(client)
            await client.simple("LISTEN pyproxy_pools; LISTEN pyproxy_shares")
            self._client = client
            self._connected_at = time.monotonic()
            self._reread_due = True
        except BaseException:
            client.close()
            raise

    def _notified(self, channel: str, payload: str) -> None:
        if channel == "pyproxy_pools":
            self._reread_due = True
        self._wake.set()

    async def _reread(self, client: PgClient) -> bool:
        """Read the definitions; False (and another re-read due) when a local write overlapped."""
        before = self._writes
        self._reread_due = False
        async with client.transaction():
            rows = await client.execute(
                'SELECT cluster_id, name, db, size, mode, "user" FROM pyproxy.pools ORDER BY seq'
            )
        if self._writes != before or before % 2:
            self._reread_due = True
            return False
        self._rows = [_row(r) for r in rows]
        return True

    async def _run(self) -> None:
        next_resync = time.monotonic() + RESYNC
        failing = False
        while True:
            self._wake.clear()  # what is notified from here on wakes the next round
            try:
                async with asyncio.timeout(OP_TIMEOUT + self.dsn.connect_timeout):
                    if not self.available:
                        await self._connect()
                        log.warning("state database %s reachable again", self.where)
                    client = self._client
                    assert client is not None and self.allocator is not None
                    now = time.monotonic()
                    if self._reread_due or now >= next_resync:
                        next_resync = now + RESYNC
                        if await self._reread(client) and self._apply is not None:
                            self._apply(self.load())
                    may_expire = now - self._connected_at >= EXPIRE
                    await self.allocator.rebalance(client, may_expire)
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    log.error(
                        "state database %s: %s; serving the last known pools", self.where, exc
                    )
                failing = True
                if self._client is not None and isinstance(exc, FAILURES):
                    self._client.close()
            delay = RETRY if failing else (0 if self._reread_due else HEARTBEAT)
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass


def _row(r: list[str | None]) -> Row:
    cid, name, db, size, mode, user = (str(v) if v is not None else "" for v in r)
    return (cid, name, db, int(size), mode, user)
