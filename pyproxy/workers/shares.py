"""One budget over worker processes: how many of a pool's servers each worker may hold (its
share), moved to where clients wait without the sum ever passing the pool's size. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

# An idle server counts as free for another worker only once it has been idle this long: a
# server idle for a moment between two transactions of a busy worker stays where it is.
IDLE_GRACE = 0.05


def default_split(size: int, workers: int, index: int) -> int:
    """The share a worker starts with for a pool nobody has reported yet: an even split, the
    remainder to the lowest indexes. Every worker and the coordinator compute the same."""
    return size // workers + (1 if index < size % workers else 0)


@dataclass(frozen=True)
class Usage:
    """What a worker reports for one pool."""

    held: int = 0  # servers open or being opened
    idle: int = 0  # of those, idle for longer than IDLE_GRACE
    waiting: int = 0  # clients queued for a server (and logins waiting for a first one)

    @property
    def need(self) -> int:
        """Servers this worker could use now: busy ones plus one per waiting client."""
        return max(0, self.held - self.idle + self.waiting)


def targets(size: int, usage: dict[int, Usage]) -> dict[int, int]:
    """The shares to aim for, summing to ``size``: when the workers together need no more than
    the size, each gets what it needs, keeps its idle servers, and the rest is spread evenly
    (so a burst on any worker starts without asking); otherwise the size is water-filled over
    the needs (no worker gets more than it needs, the neediest get the remainder)."""
    order = sorted(usage)
    if not order:
        return {}
    need = {w: usage[w].need for w in order}
    if sum(need.values()) >= size:
        return _water_fill(size, need)
    out = dict(need)
    spare = size - sum(need.values())
    for w in order:
        keep = min(usage[w].idle, spare)
        out[w] += keep
        spare -= keep
    while spare > 0:
        w = min(order, key=lambda k: (out[k], k))
        out[w] += 1
        spare -= 1
    return out


def _water_fill(size: int, need: dict[int, int]) -> dict[int, int]:
    out = dict.fromkeys(need, 0)
    left = size
    active = sorted((w for w in need if need[w] > 0), key=lambda k: (-need[k], k))
    while left > 0 and active:
        each = max(1, left // len(active))
        for w in list(active):
            give = min(each, need[w] - out[w], left)
            out[w] += give
            left -= give
            if out[w] >= need[w]:
                active.remove(w)
            if left == 0:
                break
    return out


class PoolShares:
    """The shares of one pool, kept by the coordinator.

    Safety rests on one count per worker, ``ceiling``: the most servers it may hold without
    having told us, the largest share it was sent and has not confirmed replacing. A lower
    share is sent at once (the worker closes idle servers beyond it and busy ones as they come
    back); a higher one only out of what is free, ``size`` minus every worker's
    ``max(ceiling, held)``. So the sum of servers over the workers never passes ``size``, even
    while messages are on their way.
    """

    def __init__(self, size: int, workers: int, present: set[int]) -> None:
        self.size = size
        self.workers = workers
        self.absent = set(range(workers)) - present
        self.grant = {
            w: 0 if w in self.absent else default_split(size, workers, w) for w in range(workers)
        }
        self.ceiling = dict(self.grant)
        self.usage = {w: Usage() for w in range(workers)}
        self.dead: dict[int, int] = {}  # servers dead workers may still have, by death

    def committed(self, w: int) -> int:
        return max(self.ceiling[w], self.usage[w].held)

    def free(self) -> int:
        held = sum(self.committed(w) for w in self.grant) + sum(self.dead.values())
        return self.size - held

    def committed_total(self) -> int:
        """The most servers the workers together may hold now (what ``free`` leaves out)."""
        return self.size - self.free()

    def report(self, w: int, usage: Usage, confirmed: bool, cap: int = 0) -> None:
        """``confirmed``: the worker had applied every share we sent it when it reported;
        ``cap``: the share its pool has now (a worker may have taken an even split of a
        larger size for a pool before we knew of it)."""
        self.usage[w] = usage
        if confirmed:
            self.ceiling[w] = self.grant[w]
        self.ceiling[w] = max(self.ceiling[w], cap)

    def gone(self, w: int, death: int) -> None:
        """Worker ``w`` died (``death`` names this death). Its share is 0 at once (nobody to
        confirm it); what it may have held stays counted until ``released(death)``: its
        backends may still be running a query."""
        self.absent.add(w)
        self.dead[death] = self.committed(w)
        self.grant[w] = self.ceiling[w] = 0
        self.usage[w] = Usage()

    def released(self, death: int) -> None:
        """The dead worker's servers are gone: what it held is free again."""
        self.dead.pop(death, None)

    def joined(self, w: int) -> None:
        """A (re)started worker: it starts with the share it is sent, 0 until it needs one."""
        self.absent.discard(w)
        self.grant[w] = self.ceiling[w] = 0
        self.usage[w] = Usage()

    def resize(self, size: int) -> None:
        self.size = size

    def rebalance(self) -> dict[int, int]:
        """New shares to send: lowered ones first, then raised ones out of what is free,
        the workers with the most waiting clients first."""
        present = {w: u for w, u in self.usage.items() if w not in self.absent}
        want = targets(self.size, present)
        changes: dict[int, int] = {}
        for w in self.grant:
            goal = want.get(w, 0)
            if goal < self.grant[w]:
                self.grant[w] = goal
                changes[w] = goal
        free = self.free()
        for w in sorted(want, key=lambda k: (-self.usage[k].waiting, k)):
            if free <= 0:
                break
            goal = want[w]
            if goal <= self.grant[w]:
                continue
            base = self.committed(w)
            new = min(goal, base + free)
            if new <= self.grant[w]:
                continue
            free -= max(0, new - base)
            self.grant[w] = new
            self.ceiling[w] = max(self.ceiling[w], new)
            changes[w] = new
        return changes
