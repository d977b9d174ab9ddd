"""Shares of each pool's size among pyproxy instances that keep their state in one database.

Every instance registers in ``pyproxy.instances`` and renews a heartbeat there each second;
``pyproxy.grants`` holds, per pool and instance, how many servers that instance may hold. One
transaction (under an advisory lock, so instances take turns) renews the heartbeat, expires
instances whose heartbeat stopped, and moves this instance's grants towards its fair part of
each pool. A grant only grows into room the other instances' grants leave, and only shrinks as
far as the servers still open allow, so the grants of all instances never sum past a pool's
size and no instance holds more servers than its grant: together they never open more than
``size``. An instance raises its local share only after the grant is committed; it lowers it
at once.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from pyproxy.admin.pgclient import PgClient

log = logging.getLogger("pyproxy.shares")

HEARTBEAT = 1.0  # seconds between heartbeats (and rebalances)
EXPIRE = 5.0  # an instance whose heartbeat is older than this is gone; its grants return
LOCK_KEY = 7_452_019_301  # pg_advisory_xact_lock key of the share table


@dataclass(frozen=True)
class PoolNeed:
    """A pool this instance serves: its size, the most servers one of its live pools holds,
    and how many clients it has here."""

    cluster_id: str
    name: str
    size: int
    held: int
    clients: int


@dataclass(frozen=True)
class Decision:
    cluster_id: str
    name: str
    share: int  # what the pool may hold here from now on
    grant: int  # what the share table says this instance holds (>= share, >= held)
    demand: int  # clients here, published so the others can yield room


class ShareTarget(Protocol):
    """What the allocator needs from the pool layer."""

    def share_needs(self) -> list[tuple[str, str, int, int, int]]: ...
    def set_share(self, name: str, share: int | None) -> None: ...


def fair_share(size: int, instances: list[str], me: str, name: str) -> int:
    """This instance's even part of ``size`` among ``instances`` (sorted ids); the remainder
    goes to instances in an order that depends on the pool, so it spreads over instances.
    An instance not among them gets nothing."""
    n = len(instances)
    if me not in instances:
        return 0
    index = (instances.index(me) - zlib.crc32(name.encode())) % n
    return size // n + (1 if index < size % n else 0)


def plan(
    me: str,
    needs: Iterable[PoolNeed],
    instances: dict[str, set[str]],
    grants: dict[tuple[str, str, str], tuple[int, int]],
) -> list[Decision]:
    """The new share and grant of each pool in ``needs``.

    ``instances`` maps the live instance ids to the cluster ids each serves; ``grants`` holds
    the share table as {(cluster id, pool, instance id): (granted, demand)}. A pool's size is
    split evenly among the instances that have clients of it (all of them when none has), so
    a pool of 1 follows its client, and an instance without clients yields its servers. A
    smaller size (a PUT) shrinks every share to its new fair part at once, as a smaller size
    does in one process: servers beyond it close as they come back."""
    out = []
    for need in needs:
        serving = {i for i, clusters in instances.items() if need.cluster_id in clusters}
        serving.add(me)
        others = 0
        busy = {me} if need.clients else set()
        for (cid, pool, inst), (granted, demand) in grants.items():
            if cid == need.cluster_id and pool == need.name and inst != me:
                others += granted
                if demand and inst in serving:
                    busy.add(inst)
        target = fair_share(need.size, sorted(busy or serving), me, need.name)
        mine = grants.get((need.cluster_id, need.name, me), (0, 0))[0]
        # Shrink straight to the target; grow only into the room the others leave.
        share = target if target <= mine else min(target, max(mine, need.size - others))
        out.append(Decision(need.cluster_id, need.name, share, max(share, need.held), need.clients))
    return out


class Allocator:
    """Runs the share transaction for instance ``me`` serving ``clusters``."""

    def __init__(self, me: str, clusters: Iterable[str], target: ShareTarget) -> None:
        self.me = me
        self.clusters = sorted(set(clusters))
        self.target = target
        self.shares: dict[str, int] = {}

    async def rebalance(self, client: PgClient, may_expire: bool) -> list[str]:
        """One round; returns the ids of the instances it expired. Local shares go down before
        the commit and up only after it; on failure they stay as low as they were."""
        needs = [PoolNeed(*n) for n in self.target.share_needs()]
        async with client.transaction():
            await client.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            await client.execute(
                "INSERT INTO pyproxy.instances (id, clusters, heartbeat) VALUES ($1, $2, now()) "
                "ON CONFLICT (id) DO UPDATE SET heartbeat = now(), clusters = excluded.clusters",
                self.me,
                json.dumps(self.clusters),
            )
            expired: list[str] = []
            if may_expire:
                rows = await client.execute(
                    "DELETE FROM pyproxy.instances WHERE heartbeat < now() - make_interval("
                    "secs => $1) RETURNING id",
                    EXPIRE,
                )
                expired = [str(r[0]) for r in rows]
            instances = {
                str(i): set(json.loads(str(c)))
                for i, c in await client.execute("SELECT id, clusters FROM pyproxy.instances")
            }
            grants = {
                (str(c), str(p), str(i)): (int(str(g)), int(str(d)))
                for c, p, i, g, d in await client.execute(
                    "SELECT cluster_id, pool, instance_id, granted, demand FROM pyproxy.grants"
                )
            }
            decisions = plan(self.me, needs, instances, grants)
            for d in decisions:
                if d.share < self.shares.get(d.name, 0):
                    self._set(d.name, d.share)
            # Count the servers held again now that no share can grow: the grant covers them.
            held = {need[1]: need[3] for need in self.target.share_needs()}
            decisions = [
                Decision(d.cluster_id, d.name, d.share, max(d.grant, held.get(d.name, 0)), d.demand)
                for d in decisions
            ]
            rows_json = json.dumps(
                [
                    {"c": d.cluster_id, "p": d.name, "g": d.grant, "d": d.demand}
                    for d in decisions
                    if d.grant or d.demand
                ]
            )
            await client.execute("DELETE FROM pyproxy.grants WHERE instance_id = $1", self.me)
            await client.execute(
                "INSERT INTO pyproxy.grants (cluster_id, pool, instance_id, granted, demand) "
                "SELECT c, p, $1, g, d FROM json_to_recordset($2::json) "
                "AS x(c text, p text, g int, d int)",
                self.me,
                rows_json,
            )
            yielded = any(
                d.grant < grants.get((d.cluster_id, d.name, self.me), (0, 0))[0] for d in decisions
            )
            if expired or yielded:  # room for the others: tell them now, not at their next beat
                await client.execute("SELECT pg_notify('pyproxy_shares', $1)", self.me)
        for d in decisions:
            self._set(d.name, d.share)
        for name in set(self.shares) - {d.name for d in decisions}:
            del self.shares[name]
        if expired:
            log.warning("instances %s stopped heartbeating; their shares return", expired)
        return expired

    def _set(self, name: str, share: int) -> None:
        if self.shares.get(name) != share:
            self.shares[name] = share
            self.target.set_share(name, share)

    async def leave(self, client: PgClient) -> None:
        """Unregister (a clean stop): this instance's grants return to the others at once."""
        async with client.transaction():
            await client.execute("DELETE FROM pyproxy.instances WHERE id = $1", self.me)
            await client.execute("SELECT pg_notify('pyproxy_shares', $1)", self.me)
