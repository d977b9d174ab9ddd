"""The SQLite state file that keeps pools created through the admin API across restarts."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from typing import Protocol

from pyproxy.config import PoolConfig, PoolSettings

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pools (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    cluster_id TEXT NOT NULL,
    db         TEXT NOT NULL,
    size       INTEGER NOT NULL CHECK (size >= 1),
    mode       TEXT NOT NULL,
    user       TEXT NOT NULL DEFAULT ''
)
"""


class StateStoreError(Exception):
    """The state file cannot be opened, read or written."""


class StateStoreUnavailable(StateStoreError):
    """The state database cannot be reached now: the change was not acknowledged (HTTP 503)."""


class StateStoreConflict(StateStoreError):
    """The change contradicts what another instance stored first (HTTP 422)."""


class PoolStore(Protocol):
    """Where pools created through the API live: the SQLite file (this module) or, for several
    instances, a PostgreSQL database (admin/pgstore.py). ``save`` and ``remove`` return once
    the change is durable; ``load`` gives the last known definitions without waiting."""

    def load(self, settings: PoolSettings | None = None) -> list[tuple[str, PoolConfig]]: ...
    async def save(
        self, cluster_id: str, pool: PoolConfig, *, create: bool, budget: int
    ) -> None: ...
    async def remove(self, name: str) -> None: ...
    def close(self) -> None: ...
    async def aclose(self) -> None: ...


class StateStore:
    """Pools created through the API, one row each, in creation order.

    Every write is a single transaction committed (and synced: WAL with synchronous=FULL) before
    the method returns, so a crash at any moment leaves either the old or the new state.
    Methods are safe to call from worker threads; one connection is shared under a lock.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = self._open(path)

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise StateStoreError(f"state file {path!r}: directory {parent!r} does not exist")
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateStoreError(
                    f"state file {path!r} has schema version {version}; "
                    f"this pyproxy reads version {SCHEMA_VERSION} or older"
                )
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.execute(_SCHEMA)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise StateStoreError(f"state file {path!r} cannot be used: {exc}") from exc
        return db

    def load(self, settings: PoolSettings | None = None) -> list[tuple[str, PoolConfig]]:
        """All stored pools as (cluster_id, pool), in creation order, with ``source="api"``."""
        settings = settings or PoolSettings()
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT cluster_id, name, db, size, mode, user FROM pools ORDER BY seq"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StateStoreError(f"state file {self.path!r} cannot be read: {exc}") from exc
        return [
            (cid, PoolConfig(name, db, size, mode, user, settings=settings, source="api"))
            for cid, name, db, size, mode, user in rows
        ]

    def put(self, cluster_id: str, pool: PoolConfig) -> None:
        """Insert the pool, or replace the settings of the pool with that name (keeps its order)."""
        self._write(
            "INSERT INTO pools (name, cluster_id, db, size, mode, user) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET cluster_id=excluded.cluster_id, db=excluded.db, "
            "size=excluded.size, mode=excluded.mode, user=excluded.user",
            (pool.name, cluster_id, pool.db, pool.size, pool.mode, pool.user),
        )

    def delete(self, name: str) -> None:
        """Remove the pool ``name`` (no error if it is not stored)."""
        self._write("DELETE FROM pools WHERE name = ?", (name,))

    async def save(self, cluster_id: str, pool: PoolConfig, *, create: bool, budget: int) -> None:
        """``put`` off the event loop (one instance: the API has checked name and budget)."""
        await asyncio.to_thread(self.put, cluster_id, pool)

    async def remove(self, name: str) -> None:
        await asyncio.to_thread(self.delete, name)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def aclose(self) -> None:
        self.close()

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        with self._lock:
            try:
                with self._db:
                    self._db.execute("BEGIN IMMEDIATE")
                    self._db.execute(sql, params)
            except sqlite3.Error as exc:
                raise StateStoreError(f"state file {self.path!r} cannot be written: {exc}") from exc
