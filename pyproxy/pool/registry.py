"""The registry of clusters and pools: lookup by name, live create/update/delete, statistics."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pyproxy.config import ClusterConfig, Config, PoolConfig
from pyproxy.config.model import is_stored_secret
from pyproxy.errors import ADMIN_SHUTDOWN, CONNECTION_FAILURE, INVALID_CATALOG_NAME, PgError
from pyproxy.pool.opening import Connector
from pyproxy.pool.pool import WAIT_BOUNDS, Pool
from pyproxy.pool.stats import counters, snapshot

log = logging.getLogger("pyproxy.manager")
PAUSE_POLL = 0.01  # seconds between checks for running transactions while pausing


class PoolRegistry:
    """Pool definitions (from the file and the API) and the live pools serving them.

    A definition without a fixed ``user`` gets one live pool per client user, as PgBouncer
    keys pools by (database, user).
    """

    def __init__(self, config: Config, connector: Connector) -> None:
        self.config = config
        self.connector = connector
        self._clusters: dict[str, ClusterConfig] = {c.id: c for c in config.clusters}
        self._defs: dict[str, tuple[str, PoolConfig]] = {}
        self._live: dict[tuple[str, str], Pool] = {}
        self._paused: set[str] = set()  # pool names held by pause() until resume()
        # The part of each pool's size this process may hold, when instances share pools
        # (None: all of it). A pool without an entry gets ``default_share``.
        self._shares: dict[str, int | None] = {}
        self.default_share: int | None = None
        self.client_address: Callable[[], tuple[str, int]] = lambda: (
            config.proxy.listen_host,
            config.proxy.listen_port,
        )
        self.client_count: Callable[[], int] = lambda: 0
        # Called with every live pool created (a worker process sets its share there).
        self.on_new_pool: Callable[[tuple[str, str], Pool], None] | None = None
        for cluster in config.clusters:
            for pool in cluster.pools:
                self._defs[pool.name] = (cluster.id, pool)

    # ---- lookups ----------------------------------------------------------------------------

    def clusters(self) -> tuple[ClusterConfig, ...]:
        return tuple(self._clusters.values())

    def cluster(self, cluster_id: str) -> ClusterConfig | None:
        return self._clusters.get(cluster_id.lower()) or self._clusters.get(cluster_id)

    def pool_configs(self, cluster_id: str) -> list[PoolConfig]:
        return [cfg for cid, cfg in self._defs.values() if cid == cluster_id]

    def find_pool(self, name: str) -> tuple[str, PoolConfig] | None:
        return self._defs.get(name)

    def live_pools(self, name: str | None = None) -> list[Pool]:
        return [p for (n, _), p in self._live.items() if name is None or n == name]

    def live_items(self) -> list[tuple[tuple[str, str], Pool]]:
        """Live pools by key: (pool name, client user, or "" when the pool names its user)."""
        return list(self._live.items())

    def get_pool(self, name: str, client_user: str) -> Pool | None:
        """The live pool serving ``client_user`` on pool ``name`` (created on first use)."""
        found = self._defs.get(name)
        if found is None:
            return None
        cluster_id, cfg = found
        cluster = self._clusters[cluster_id]
        login_user = cfg.user or client_user
        key = (name, "" if cfg.user else client_user)
        pool = self._live.get(key)
        if pool is None:
            account = cluster.user(login_user)
            pool = Pool(
                cfg, cluster, login_user, account.password if account else None, self.connector
            )
            self._live[key] = pool
            pool.set_paused(name in self._paused)
            pool.set_share(self._shares.get(name, self.default_share))
            if self.on_new_pool is not None:
                self.on_new_pool(key, pool)
        return pool

    def warm_pools(self) -> list[Pool]:
        """Live pools, after creating those that keep ``min_pool_size`` servers with no client.

        Only pools with a fixed server user can be opened before a client arrives.
        """
        for name, (_, cfg) in self._defs.items():
            if cfg.user and cfg.settings.min_pool_size > 0 and (name, "") not in self._live:
                self.get_pool(name, cfg.user)
        return list(self._live.values())

    def client_listen(self) -> tuple[str, int]:
        return self.client_address()

    # ---- changes at run time ----------------------------------------------------------------

    def add_pool(self, cluster_id: str, pool: PoolConfig) -> None:
        self._defs[pool.name] = (cluster_id, pool)
        log.info("pool %s added (%s, size %d, db %s)", pool.name, pool.mode, pool.size, pool.db)

    def update_pool(self, name: str, pool: PoolConfig) -> None:
        found = self._defs.get(name)
        if found is None:
            raise KeyError(name)
        cluster_id, old = found
        self._defs[name] = (cluster_id, pool)
        cluster = self._clusters[cluster_id]
        target_changed = old.db != pool.db or old.user != pool.user
        for (n, user_key), live in list(self._live.items()):
            if n != name:
                continue
            if old.user != pool.user:
                # Clients keyed by the old user rule keep their pool until they leave.
                account = cluster.user(pool.user or user_key)
                live.login_user = pool.user or user_key
                live.login_password = account.password if account else None
            live.reclaim_kept()
            live.reconfigure(pool)
            if target_changed:
                live.close_idle("pool db/user changed")
                live.mark_stale()
                live.forget_welcome()
            while live.idle and live.total > live.cap:
                live.close_idle("pool shrunk", keep=len(live.idle) - 1)
        log.info("pool %s updated (%s, size %d, db %s)", name, pool.mode, pool.size, pool.db)

    def share_needs(self) -> list[tuple[str, str, int, int, int]]:
        """(cluster id, pool, size, servers held by its fullest live pool, clients) of every
        pool: what sharing a pool's size with other processes goes by."""
        held: dict[str, int] = {}
        clients: dict[str, int] = {}
        for (name, _), live in self._live.items():
            held[name] = max(held.get(name, 0), live.total)
            clients[name] = clients.get(name, 0) + len(live.clients)
        return [
            (cid, n, cfg.size, held.get(n, 0), clients.get(n, 0))
            for n, (cid, cfg) in self._defs.items()
        ]

    def set_share(self, name: str, share: int | None) -> None:
        """Let each live pool of ``name`` hold at most ``share`` servers from now on."""
        self._shares[name] = share
        for live in self.live_pools(name):
            live.set_share(share)

    def remove_pool(self, name: str) -> None:
        self._defs.pop(name, None)
        self._shares.pop(name, None)
        self._paused.discard(name)
        err = PgError(
            ADMIN_SHUTDOWN, f'terminating connection because pool "{name}" was deleted', fatal=True
        )
        for key in [k for k in self._live if k[0] == name]:
            live = self._live.pop(key)
            live.mark_deleted()
            waiters, live.waiters = list(live.waiters), deque()
            for client in waiters:
                client.on_wait_error(err)
            for client in list(live.clients):
                client.kick(err)
            live.close_all("pool deleted")
        log.info("pool %s deleted", name)

    def replace_config(self, config: Config, api_pools: list[tuple[str, PoolConfig]]) -> None:
        """Apply a reloaded config file: pools added, changed and removed; users and timeouts."""
        old_defs = dict(self._defs)
        self.config = config
        self._clusters = {c.id: c for c in config.clusters}
        wanted: dict[str, tuple[str, PoolConfig]] = {}
        for cluster in config.clusters:
            for p in cluster.pools:
                wanted[p.name] = (cluster.id, p)
        for cid, p in api_pools:
            if cid in self._clusters and p.name not in wanted:
                wanted[p.name] = (cid, p)
        for name in list(old_defs):
            if name not in wanted:
                self.remove_pool(name)
        for name, (cid, p) in wanted.items():
            if name in self._defs:
                if self._defs[name] != (cid, p):
                    self.update_pool(name, p)
            else:
                self.add_pool(cid, p)
        for live in self._live.values():
            cluster = self._clusters.get(self._defs[live.name][0], live.cluster)
            live.cluster = cluster
            # Passwords may have been rotated: the next server login uses the file's.
            account = cluster.user(live.login_user)
            live.login_password = account.password if account else None

    def credentials_changed(self, cluster_id: str, user: str) -> None:
        """New credentials for logging in as ``user``: its pools' last login failure no longer
        holds their clients back."""
        for live in self._live.values():
            if live.cluster.id == cluster_id and live.login_user == user:
                live.last_error = None

    # ---- statistics -------------------------------------------------------------------------

    def pool_stats(self, name: str) -> dict[str, int]:
        total: dict[str, int] = {
            "cl_active": 0,
            "cl_waiting": 0,
            "cl_total": 0,
            "sv_active": 0,
            "sv_idle": 0,
            "sv_being_canceled": 0,
            "sv_login": 0,
            "sv_total": 0,
            "cl_pinned": 0,
        }
        for live in self.live_pools(name):
            for k, v in snapshot(live).items():
                total[k] = total.get(k, 0) + v
        return total

    def pool_counters(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for live in self.live_pools(name):
            for k, v in counters(live).items():
                out[k] = out.get(k, 0) + v
        return out

    def wait_histogram(self, name: str) -> tuple[list[float], list[int], float]:
        """Queue waits of a pool: bucket bounds, counts per bucket (+ overflow), total seconds."""
        counts = [0] * (len(WAIT_BOUNDS) + 1)
        total = 0.0
        for live in self.live_pools(name):
            for i, c in enumerate(live.wait_counts):
                counts[i] += c
            total += live.wait_time
        return list(WAIT_BOUNDS), counts, total

    def servers_in_use(self, cluster_id: str) -> int:
        return sum(p.total for p in self._live.values() if p.cluster.id == cluster_id)

    async def database_exists(self, cluster_id: str, db: str) -> bool:
        """Ask PostgreSQL whether ``db`` exists, logging in as a configured user of the cluster."""
        cluster = self.cluster(cluster_id)
        if cluster is None or not cluster.users:
            raise PgError(CONNECTION_FAILURE, "no configured user to check the database with")
        # A user with a plaintext password can always log in; one with a verifier only after
        # a client of that user logged in (pass-through keys).
        plain = [u for u in cluster.users if not is_stored_secret(u.password)]
        account = (plain or list(cluster.users))[0]
        probe_cfg = PoolConfig(name="__probe__", db=db, size=1, user=account.name)
        probe = Pool(probe_cfg, cluster, account.name, account.password, self.connector)
        try:
            server = await self.connector(probe)
        except PgError as exc:
            if exc.sqlstate == INVALID_CATALOG_NAME:
                return False
            raise
        server.pool = None
        server.close("probe done")
        return True

    # ---- pause and resume -------------------------------------------------------------------

    async def pause(self, name: str | None, timeout: float | None = None) -> list[str]:
        """Hold new queries of pool ``name`` (all pools if None) and wait for running work.

        From the call on, clients asking for a server wait in the queue (query_wait_timeout
        does not run while paused); transactions already running finish. When no server is
        linked any more, idle servers are closed (so PostgreSQL can be restarted or switched)
        and the names of the paused pools are returned. Session-mode clients keep their server
        until they leave. If ``timeout`` passes first, the pause is undone and TimeoutError
        raised. Raises KeyError for an unknown pool name.
        """
        return await self.pause_pools(self._pause_targets(name), timeout)

    def resume(self, name: str | None) -> list[str]:
        """Serve the queries held by ``pause``; returns the names of the pools resumed."""
        return self.resume_pools(self._pause_targets(name))

    async def pause_pools(self, names: list[str], timeout: float | None = None) -> list[str]:
        """``pause`` for several pools at once (e.g. every pool of one cluster)."""
        self._paused.update(names)
        for live in self._paused_pools(names):
            live.set_paused(True)
            live.reclaim_kept()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while any(
            live.linked or live.cleaning or live.canceling or live.connecting
            for live in self._paused_pools(names)
        ):
            if deadline is not None and loop.time() >= deadline:
                self.resume_pools(names)
                raise TimeoutError(f"pools still busy after {timeout:g} s; pause undone")
            await asyncio.sleep(PAUSE_POLL)
        for live in self._paused_pools(names):
            live.close_idle("pool paused")
        log.info("paused pools: %s", ", ".join(names) or "none")
        return sorted(names)

    def resume_pools(self, names: list[str]) -> list[str]:
        self._paused.difference_update(names)
        for live in self._paused_pools(names):
            if live.paused:
                live.set_paused(False)
                live.resume()
        log.info("resumed pools: %s", ", ".join(names) or "none")
        return sorted(names)

    def paused_names(self) -> set[str]:
        return set(self._paused)

    def hold_paused(self, names: set[str]) -> None:
        """Pools that start paused (a worker started while they are)."""
        self._paused.update(names)

    def is_paused(self, name: str) -> bool:
        return name in self._paused

    def _pause_targets(self, name: str | None) -> list[str]:
        if name is None:
            return sorted(self._defs)
        if name not in self._defs:
            raise KeyError(name)
        return [name]

    def _paused_pools(self, names: list[str]) -> list[Pool]:
        wanted = set(names)
        return [p for (n, _), p in self._live.items() if n in wanted]

    def replace_pool_cfg(self, name: str, **changes: Any) -> PoolConfig:
        _cluster_id, cfg = self._defs[name]
        new = replace(cfg, **changes)
        self.update_pool(name, new)
        return new
