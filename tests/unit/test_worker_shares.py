"""Shares of one pool over worker processes (pyproxy.workers.shares): the sum of servers never
passes the size, even with shares on their way; capacity moves to where clients wait."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from pyproxy.workers.shares import PoolShares, Usage, default_split, targets


def test_the_default_split_covers_the_size_once() -> None:
    for size in range(0, 12):
        for workers in range(1, 6):
            assert sum(default_split(size, workers, i) for i in range(workers)) == size


def test_targets_follow_need_and_keep_idle_servers_where_they_are() -> None:
    assert targets(3, {0: Usage(held=3, idle=3), 1: Usage()}) == {0: 3, 1: 0}
    assert targets(3, {0: Usage(held=3, idle=3), 1: Usage(waiting=2)}) == {0: 1, 1: 2}
    assert targets(4, {0: Usage(held=2, waiting=9), 1: Usage(held=2, waiting=9)}) == {0: 2, 1: 2}
    assert targets(3, {0: Usage(held=0), 1: Usage(held=0)}) == {0: 2, 1: 1}
    got = targets(5, {0: Usage(held=1, waiting=1), 1: Usage(held=1, waiting=20)})
    assert got == {0: 2, 1: 3}


@dataclass
class SimWorker:
    """A worker as the coordinator cannot see it: shares arrive late, servers open and close."""

    index: int
    share: int
    held: int = 0
    busy: int = 0
    waiting: int = 0
    inbox: deque[tuple[int, int]] = field(default_factory=deque)  # (seq, share) on the way
    applied: int = 0

    def apply_one(self) -> None:
        seq, share = self.inbox.popleft()
        self.share, self.applied = share, seq
        idle = self.held - self.busy
        self.held -= min(idle, max(0, self.held - share))  # idle beyond the share close

    def step(self, rng: random.Random) -> None:
        if rng.random() < 0.3:
            self.waiting += rng.randint(0, 3)
        if self.busy and rng.random() < 0.4:
            self.busy -= 1  # a transaction ends: the server goes back, or closes if over
            if self.held > self.share:
                self.held -= 1
        while self.waiting and self.busy < self.held:
            self.waiting -= 1
            self.busy += 1
        while self.waiting > self.held - self.busy and self.held < self.share:
            self.held += 1  # open one (the pool's cap is its share)

    def usage(self) -> Usage:
        return Usage(held=self.held, idle=self.held - self.busy, waiting=self.waiting)


def test_no_interleaving_of_reports_and_late_shares_passes_the_size() -> None:
    for seed in range(40):
        rng = random.Random(seed)
        size, n = rng.randint(1, 8), rng.randint(2, 4)
        shares = PoolShares(size, n, set(range(n)))
        workers = [SimWorker(i, default_split(size, n, i)) for i in range(n)]
        sent = [0] * n
        for _ in range(400):
            w = workers[rng.randrange(n)]
            action = rng.random()
            if action < 0.4:
                w.step(rng)
            elif action < 0.6 and w.inbox:
                w.apply_one()
            elif action < 0.9:
                shares.report(w.index, w.usage(), confirmed=w.applied == sent[w.index])
                for k, share in shares.rebalance().items():
                    sent[k] += 1
                    workers[k].inbox.append((sent[k], share))
            assert sum(x.held for x in workers) <= size, seed


def test_a_waiting_worker_gets_the_idle_servers_of_another_in_two_steps() -> None:
    shares = PoolShares(3, 2, {0, 1})
    assert shares.grant == {0: 2, 1: 1}
    shares.report(0, Usage(held=2, idle=2), confirmed=True)
    shares.report(1, Usage(held=1, waiting=4), confirmed=True)
    assert shares.rebalance() == {0: 0}  # lowered first: worker 1 gets them once 0 confirms
    shares.report(0, Usage(held=0), confirmed=True)
    assert shares.rebalance() == {1: 3}


def test_a_dead_workers_servers_count_until_released_then_the_pool_is_whole() -> None:
    shares = PoolShares(3, 2, {0, 1})
    shares.report(0, Usage(held=2), confirmed=True)
    shares.report(1, Usage(held=1, waiting=5), confirmed=True)
    shares.rebalance()
    shares.gone(0, death=1)
    assert shares.rebalance() == {} and shares.free() == 0
    shares.joined(0)  # restarted before the old servers are known to be gone: still counted
    assert shares.rebalance() == {} and shares.free() == 0
    shares.released(1)
    assert shares.rebalance() == {1: 3}
    assert shares.grant[0] == 0 and shares.free() == 0


def test_a_smaller_size_lowers_shares_at_once_and_raises_none_until_servers_close() -> None:
    shares = PoolShares(4, 2, {0, 1})
    shares.report(0, Usage(held=2, waiting=3), confirmed=True)
    shares.report(1, Usage(held=2, waiting=3), confirmed=True)
    shares.resize(2)
    assert shares.rebalance() == {0: 1, 1: 1}
    shares.report(0, Usage(held=1, waiting=3), confirmed=True)
    assert shares.rebalance() == {}  # worker 1 still holds 2: nothing is free
