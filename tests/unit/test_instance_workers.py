"""An instance with worker processes under a share table ([admin] state_dsn): the supervisor is
the share table's target; the part it is granted is divided among its workers, and what it
reports as held covers every server its workers hold or may hold."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

from pyproxy.config import load_config
from pyproxy.workers import wire
from pyproxy.workers.shares import PoolShares
from pyproxy.workers.supervisor import Supervisor
from tests.unit.test_worker_shares import SimWorker

USER = "app"
KEY = ("p", USER)
CID = "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30"


class Wire:
    """The supervisor's end of a worker's control connection: what it sent."""

    def __init__(self) -> None:
        self.data = b""

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        pass

    def messages(self) -> list[dict[str, Any]]:
        out, data = [], self.data
        while data:
            (length,) = wire.HEAD.unpack(data[: wire.HEAD.size])
            out.append(pickle.loads(data[wire.HEAD.size : wire.HEAD.size + length]))
            data = data[wire.HEAD.size + length :]
        self.data = b""
        return out


def supervisor(tmp_path: Path, state_dsn: str) -> tuple[Supervisor, list[Wire]]:
    path = tmp_path / "pyproxy.toml"
    path.write_text(
        f"""
[proxy]
listen = "127.0.0.1:0"
workers = 2

[admin]
listen = "127.0.0.1:0"
token = "t"
state_path = "{tmp_path / "state.db"}"
state_dsn = "{state_dsn}"

[[clusters]]
id = "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30"
host = "127.0.0.1"
port = 5432
max_connections = 20

[[clusters.users]]
name = "{USER}"
password = "secret"

[[clusters.pools]]
name = "p"
db = "appdb"
user = "{USER}"
size = 4
"""
    )
    sup = Supervisor(str(path), load_config(path, env={}), 2, "info")
    wires = []
    for handle in sup.handles:
        w = Wire()
        handle.writer = w  # type: ignore[assignment]
        handle.ready.set()
        wires.append(w)
    return sup, wires


def report(sup: Supervisor, w: int, held: int, idle: int, waiting: int, clients: int) -> None:
    handle = sup.handles[w]
    pools = {KEY: (4, held, idle, waiting, clients, 0)}
    sup._on_message(handle, {"op": "report", "seq": handle.grant_seq, "pools": pools})


def grants(wires: list[Wire]) -> list[dict[tuple[str, str], int]]:
    out = []
    for w in wires:
        shares: dict[tuple[str, str], int] = {}
        for m in w.messages():
            if m["op"] == "grant":
                shares.update(m["shares"])
        out.append(shares)
    return out


def test_the_part_granted_to_the_instance_is_divided_among_its_workers(tmp_path: Path) -> None:
    sup, wires = supervisor(tmp_path, "postgresql://u:pw@127.0.0.1:5432/state")
    assert sup.instance_part("p", 4) == 0  # nothing before the share table grants it
    assert sup.share_needs() == [(CID, "p", 4, 0, 0)]
    sup.set_share("p", 2)
    report(sup, 0, held=0, idle=0, waiting=1, clients=1)
    # The first report of a pool gets every worker its first share, within the part.
    assert grants(wires) == [{KEY: 1}, {KEY: 1}]
    report(sup, 1, held=0, idle=0, waiting=0, clients=2)
    assert sup.share_needs() == [(CID, "p", 4, 2, 3)]

    sup.set_share("p", 1)  # the share table took one back: lowered at once
    assert sum(g.get(KEY, 1) for g in grants(wires)) == 1
    # Not confirmed yet: the instance still counts what its workers may hold.
    assert sup.share_needs()[0][3] == 2
    report(sup, 0, held=1, idle=0, waiting=0, clients=1)
    report(sup, 1, held=0, idle=0, waiting=0, clients=2)
    assert sup.share_needs()[0][3] == 1

    sup.set_share("p", 4)
    report(sup, 1, held=0, idle=0, waiting=3, clients=2)
    assert sum(sup.share_of(i, "p") for i in range(2)) <= 4


def test_without_a_share_table_each_pool_is_the_instances_whole(tmp_path: Path) -> None:
    sup, wires = supervisor(tmp_path, "")
    assert sup.parts is None
    assert sup.instance_part("p", 4) == 4
    sup.set_share("p", 1)  # no share table: nothing to follow
    assert sup.instance_part("p", 4) == 4
    report(sup, 0, held=0, idle=0, waiting=0, clients=0)
    assert grants(wires) == [{KEY: 2}, {KEY: 2}]


def test_workers_never_hold_more_than_the_instance_reports_nor_grow_past_its_part() -> None:
    """Random parts (the share table's decisions), late shares and reports: the servers the
    workers hold never pass what the instance counts as held (so its grant covers them), and
    a rebalance never raises that count above the part."""
    for seed in range(40):
        rng = random.Random(seed)
        n = rng.randint(2, 4)
        part = rng.randint(0, 6)
        shares = PoolShares(part, n, set(range(n)))
        workers = [SimWorker(i, shares.grant[i]) for i in range(n)]
        sent = [0] * n
        for _ in range(400):
            w = workers[rng.randrange(n)]
            action = rng.random()
            if action < 0.05:
                part = rng.randint(0, 6)
                shares.resize(part)
            elif action < 0.4:
                w.step(rng)
            elif action < 0.6:
                if w.inbox:
                    w.apply_one()
            else:
                shares.report(w.index, w.usage(), w.applied == sent[w.index], w.share)
            before = shares.committed_total()
            for k, share in shares.rebalance().items():
                sent[k] += 1
                workers[k].inbox.append((sent[k], share))
            assert shares.committed_total() <= max(part, before), seed
            assert sum(x.held for x in workers) <= shares.committed_total(), seed
