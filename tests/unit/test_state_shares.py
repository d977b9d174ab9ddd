"""Sharing pool sizes among instances (admin/shares.py), the state database client's pieces
(admin/pgclient.py) and applying stored definitions to the registry (admin/pgstore.py)."""

from __future__ import annotations

import random
import struct

import pytest

from pyproxy.admin.pgclient import extended_query, parse_dsn
from pyproxy.admin.pgstore import sync_definitions
from pyproxy.admin.shares import PoolNeed, fair_share, plan
from pyproxy.config import ClusterConfig, Config, PoolConfig
from pyproxy.pool.registry import PoolRegistry


async def never_connect(pool: object) -> object:
    raise AssertionError("no server is opened here")


# ---- fair parts -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 10])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_fair_parts_add_up_to_the_size_and_differ_by_at_most_one(size: int, n: int) -> None:
    ids = [f"i{k}" for k in range(n)]
    for name in ("a-pool", "another", "third-pool"):
        parts = [fair_share(size, ids, me, name) for me in ids]
        assert sum(parts) == size
        assert max(parts) - min(parts) <= 1


def test_the_remainder_goes_to_different_instances_for_different_pools() -> None:
    ids = ["i0", "i1"]
    owners = {tuple(fair_share(1, ids, me, f"pool-{k}") for me in ids) for k in range(20)}
    assert owners == {(1, 0), (0, 1)}


def test_an_instance_outside_the_list_gets_nothing() -> None:
    assert fair_share(4, ["i0", "i1"], "i9", "p") == 0


# ---- plans ----------------------------------------------------------------------------------


def test_a_newcomer_waits_until_the_holder_has_given_servers_back() -> None:
    grants = {("c", "p", "a"): (4, 0)}
    (d,) = plan("b", [PoolNeed("c", "p", 4, 0, 0)], {"a": {"c"}, "b": {"c"}}, grants)
    assert (d.share, d.grant) == (0, 0)  # nothing is free yet
    # a's own plan: fair part 2, but it still holds 3 servers, so the table keeps 3
    (d,) = plan("a", [PoolNeed("c", "p", 4, 3, 0)], {"a": {"c"}, "b": {"c"}}, grants)
    assert (d.share, d.grant) == (2, 3)
    grants[("c", "p", "a")] = (3, 0)
    (d,) = plan("b", [PoolNeed("c", "p", 4, 0, 0)], {"a": {"c"}, "b": {"c"}}, grants)
    assert (d.share, d.grant) == (1, 1)


def test_a_pool_follows_its_clients() -> None:
    instances = {"a": {"c"}, "b": {"c"}}
    need = PoolNeed("c", "p", 1, 0, 0)
    busy = PoolNeed("c", "p", 1, 0, 3)
    (idle_a,) = plan("a", [need], instances, {("c", "p", "b"): (0, 3)})
    assert idle_a.share == 0  # b has clients, a has none: a yields
    (busy_b,) = plan("b", [busy], instances, {})
    assert (busy_b.share, busy_b.demand) == (1, 3)


def test_only_instances_serving_the_cluster_share_its_pools() -> None:
    (d,) = plan("a", [PoolNeed("c", "p", 4, 0, 0)], {"a": {"c"}, "b": {"other"}}, {})
    assert d.share == 4


def test_servers_of_all_instances_never_exceed_the_size() -> None:
    """Instances rebalance one at a time in random order while their clients come and go and
    their servers follow the shares; some die. The servers held never sum past the size."""
    rng = random.Random(7)
    size = 5
    for _ in range(50):
        alive = {f"i{k}" for k in range(rng.randint(1, 4))}
        grants: dict[tuple[str, str, str], tuple[int, int]] = {}
        share = dict.fromkeys(alive, 0)
        held = dict.fromkeys(alive, 0)
        clients = dict.fromkeys(alive, 0)
        for _ in range(200):
            me = rng.choice(sorted(alive))
            event = rng.random()
            if event < 0.4:
                (d,) = plan(
                    me,
                    [PoolNeed("c", "p", size, held[me], clients[me])],
                    {i: {"c"} for i in alive},
                    grants,
                )
                share[me] = d.share
                held[me] = min(held[me], max(d.share, held[me]))
                grants[("c", "p", me)] = (max(d.grant, held[me]), d.demand)
            elif event < 0.7:  # servers open up to the share, or go back
                if held[me] < share[me]:
                    held[me] = rng.randint(held[me], share[me])
                else:
                    held[me] = rng.randint(share[me], held[me])
            elif event < 0.95:
                clients[me] = rng.randint(0, 3)
            elif len(alive) > 1:  # dies: its servers close and its grants expire
                alive.discard(me)
                grants = {k: v for k, v in grants.items() if k[2] != me}
            assert sum(held[i] for i in alive) <= size
            assert sum(g for g, _ in grants.values()) <= size


# ---- the client's pieces --------------------------------------------------------------------


def test_dsn_parts() -> None:
    dsn = parse_dsn("postgresql://st%40te:p%2Fw@db.example:5433/pyproxy_state?connect_timeout=3")
    assert (dsn.host, dsn.port, dsn.user, dsn.password, dsn.dbname) == (
        "db.example",
        5433,
        "st@te",
        "p/w",
        "pyproxy_state",
    )
    assert dsn.connect_timeout == 3.0
    assert parse_dsn("postgres://u@h").dbname == "u"


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("mysql://u@h/db", "postgresql:// URL"),
        ("postgresql://u@h/db?sslmode=require", "TLS"),
        ("postgresql://u@h/db?target_session_attrs=any", "unsupported parameter"),
        ("postgresql://u@h:99999/db", "bad port"),
    ],
)
def test_bad_dsns_say_what_is_wrong(dsn: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_dsn(dsn)


def test_extended_query_sends_text_parameters_and_null() -> None:
    data = extended_query("SELECT $1, $2", ("x", None))
    kinds = []
    pos = 0
    while pos < len(data):
        kinds.append(data[pos : pos + 1])
        (length,) = struct.unpack_from("!I", data, pos + 1)
        pos += 1 + length
    assert kinds == [b"P", b"B", b"E", b"S"]
    assert b"\x00\x02\x00\x00\x00\x01x\xff\xff\xff\xff\x00\x00" in data


# ---- applying what the database holds ------------------------------------------------------


def test_stored_definitions_replace_api_pools_and_leave_file_pools_alone() -> None:
    fixed = PoolConfig("file-pool", "db", 2)
    cluster = ClusterConfig(id="c1", pools=(fixed,))
    registry = PoolRegistry(Config(clusters=(cluster,)), never_connect)
    registry.add_pool("c1", PoolConfig("old-pool", "db", 1, source="api"))
    registry.add_pool("c1", PoolConfig("changed", "db", 1, source="api"))
    stored = [
        ("c1", PoolConfig("changed", "db", 3, "session", source="api")),
        ("c1", PoolConfig("new-pool", "db", 1, source="api")),
        ("c1", PoolConfig("file-pool", "other", 9, source="api")),  # the file wins
        ("unknown-cluster", PoolConfig("elsewhere", "db", 1, source="api")),
    ]
    assert sync_definitions(registry, stored) == 3
    assert {p.name: p.size for p in registry.pool_configs("c1")} == {
        "file-pool": 2,
        "changed": 3,
        "new-pool": 1,
    }
    assert sync_definitions(registry, stored) == 0


def test_a_share_applies_to_live_pools_and_to_those_opened_later() -> None:
    cluster = ClusterConfig(id="c1", pools=(PoolConfig("p", "db", 4),))
    registry = PoolRegistry(Config(clusters=(cluster,)), never_connect)
    registry.default_share = 0
    assert registry.get_pool("p", "alice").cap == 0
    registry.set_share("p", 3)
    assert registry.get_pool("p", "alice").cap == 3
    assert registry.get_pool("p", "bob").cap == 3
    assert registry.share_needs() == [("c1", "p", 4, 0, 0)]


def test_a_smaller_size_shrinks_every_share_at_once() -> None:
    instances = {"a": {"c"}, "b": {"c"}}
    grants = {("c", "p", "a"): (2, 0), ("c", "p", "b"): (2, 0)}
    for me in ("a", "b"):
        (d,) = plan(me, [PoolNeed("c", "p", 2, 2, 0)], instances, grants)
        assert (d.share, d.grant) == (1, 2)  # no instance drops to nothing meanwhile
