"""Which admin connections are served: slots, a fair bounded queue, a per-address cap."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

READY_FIRST_AGE = 0.1  # see Admission: evictable to let a complete queued request in


class Refused(Exception):
    """No slot for this connection: the queue is full or the wait for a slot is over."""


class Progress(enum.Enum):
    """How far a queued connection has got with sending its request (its headers are read while
    it waits)."""

    UNREAD = "nothing received yet"
    PARTIAL = "part of the request line and headers"
    READY = "the whole request line and headers"
    GONE = "the client closed the connection"


@dataclass(eq=False)
class Ticket:
    """One connection as admission sees it: its client address and how to close it early."""

    address: str
    evict: Callable[[], None] = field(repr=False)
    holds_slot: bool = False
    progress: Progress = Progress.UNREAD


class Admission:
    """Slots for admin connections, a queue for connections waiting for one, and a cap on the
    unauthenticated connections of one client address.

    - A connection holds a slot while it reads or handles a request, and while a connection that
      has not completed an authenticated request waits for its next one (time-bounded by the HTTP
      layer). Without a free slot a new connection waits in the queue, at most ``queue_timeout``
      seconds, then ``Refused``; the HTTP layer reads its request line and headers meanwhile
      and reports its ``progress``. A freed slot goes to the connection that has waited longest
      among those with a complete request head (else among all) from the addresses holding the
      fewest slots: a caller that sent its request is not kept behind slow clients.
    - At most ``max_queued`` connections wait. For a newcomer to a full queue, the connection
      that has waited longest of those that cannot be a quick request any more (gone, with an
      incomplete head, or silent for ``grace`` seconds) makes room; else the newest of the
      address with the most waiting, if that is more than the newcomer's address has plus one;
      else the oldest of its own address that has sent nothing yet (unknowns are alike, and
      the newcomer's request may be in by the time it is read); else it is refused.
    - A connection that has not yet completed an authenticated request counts as
      "unauthenticated" while it waits for or reads a request. Beyond ``per_address`` of them
      from one address, the oldest are evicted as soon as they have waited ``grace`` seconds: a
      client that sends its request at once is never the oldest for long, so a caller sharing an
      address with slow clients still gets through, and other addresses are not touched.
    - While a complete request waits in the queue and every slot is taken, the unauthenticated
      connection that has waited longest for its request, from the address with the most of
      them, is evicted once it has waited ``READY_FIRST_AGE`` (or ``grace`` if shorter): slow
      clients cannot keep a ready request waiting.
    """

    def __init__(
        self,
        slots: int,
        *,
        max_queued: int,
        queue_timeout: float,
        per_address: int,
        grace: float,
    ) -> None:
        self.slots = slots
        self.max_queued = max_queued
        self.queue_timeout = queue_timeout
        self.per_address = per_address
        self.grace = grace
        self.in_use = 0
        self._held: dict[str, int] = {}  # slots held per address
        # the queue, in arrival order; the same waiters by address (in turn among addresses)
        # and those with a complete request head
        self._queue: dict[Ticket, tuple[asyncio.Future[None], float]] = {}
        self._by_address: dict[str, dict[Ticket, None]] = {}
        self._ready: dict[Ticket, None] = {}
        self._unauthenticated: dict[str, dict[Ticket, float]] = {}  # oldest first
        self._evicted: set[Ticket] = set()  # evicted, slot not given back yet
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._ready_timer: asyncio.TimerHandle | None = None

    # -- slots and the queue ---------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

    def try_acquire(self, ticket: Ticket) -> bool:
        """Take a free slot for ``ticket`` if there is one and nobody is waiting for it."""
        if ticket.holds_slot:
            return True
        if self.in_use < self.slots and not self._queue:
            self.in_use += 1
            self._hold(ticket)
            return True
        return False

    async def acquire(self, ticket: Ticket) -> None:
        """Take a slot for ``ticket``, waiting in the queue if none is free; raise Refused."""
        if self.try_acquire(ticket):
            return
        if self.queued >= self.max_queued and not self._make_room(ticket.address):
            raise Refused("too many admin connections are waiting, retry later")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue[ticket] = (fut, loop.time())
        self._by_address.setdefault(ticket.address, {})[ticket] = None
        if ticket.progress is Progress.READY:
            self._ready[ticket] = None
            self._serve_ready()
        try:
            async with asyncio.timeout(self.queue_timeout):
                await fut
        except TimeoutError:
            if not _granted(fut):
                self._unqueue(ticket)
                raise Refused("no admin connection slot became free in time, retry later") from None
        except BaseException:
            if _granted(fut):
                self.release(ticket)
            else:
                self._unqueue(ticket)
            raise
        # the slot was passed on by release(), which counted it for this ticket

    def progressed(self, ticket: Ticket, progress: Progress) -> None:
        """How far ``ticket``, perhaps queued, has got with sending its request."""
        ticket.progress = progress
        if progress is Progress.READY and ticket in self._queue:
            self._ready[ticket] = None
            self._serve_ready()

    def release(self, ticket: Ticket) -> None:
        """Give ``ticket``'s slot to the next queued connection, or free it."""
        if not ticket.holds_slot:
            return
        ticket.holds_slot = False
        self._evicted.discard(ticket)
        held = self._held[ticket.address] - 1
        if held:
            self._held[ticket.address] = held
        else:
            del self._held[ticket.address]
        while self._queue:
            if self._ready:  # the first of equals: the one that has waited longest
                waiter = min(self._ready, key=lambda t: self._held.get(t.address, 0))
            else:
                address = min(self._by_address, key=lambda a: self._held.get(a, 0))
                waiter = next(iter(self._by_address[address]))
                self._by_address[address] = self._by_address.pop(address)  # in turn
            fut = self._unqueue(waiter)
            if fut is not None and not fut.done():
                self._hold(waiter)
                fut.set_result(None)  # the slot passes on; in_use stays
                return
        self.in_use -= 1

    def _hold(self, ticket: Ticket) -> None:
        ticket.holds_slot = True
        self._held[ticket.address] = self._held.get(ticket.address, 0) + 1

    def _unqueue(self, ticket: Ticket) -> asyncio.Future[None] | None:
        entry = self._queue.pop(ticket, None)
        if entry is None:
            return None
        self._ready.pop(ticket, None)
        waiters = self._by_address[ticket.address]
        del waiters[ticket]
        if not waiters:
            del self._by_address[ticket.address]
        return entry[0]

    def _make_room(self, address: str) -> bool:
        """Refuse one queued connection for a newcomer from ``address``; False if none may be."""
        oldest = asyncio.get_running_loop().time() - self.grace
        victim = next(
            (
                t
                for t, (_, since) in self._queue.items()
                if t.progress in (Progress.GONE, Progress.PARTIAL)
                or (t.progress is Progress.UNREAD and since <= oldest)
            ),
            None,
        )
        if victim is None:
            biggest = max(self._by_address, key=lambda a: len(self._by_address[a]), default=None)
            mine = self._by_address.get(address, {})
            if biggest is not None and len(self._by_address[biggest]) > len(mine) + 1:
                victim = next(reversed(self._by_address[biggest]))
            else:  # unread ones cannot be told apart yet: keep the newest, about to be read
                victim = next((t for t in mine if t.progress is Progress.UNREAD), None)
            if victim is None:
                return False
        fut = self._unqueue(victim)
        if fut is not None and not fut.done():
            fut.set_exception(Refused("too many admin connections are waiting, retry later"))
        return True

    # -- the per-address cap on unauthenticated connections ---------------------------------------

    def waiting(self, ticket: Ticket) -> None:
        """``ticket`` (not yet authenticated) starts waiting for a request."""
        now = asyncio.get_running_loop().time()
        conns = self._unauthenticated.setdefault(ticket.address, {})
        conns.pop(ticket, None)
        conns[ticket] = now
        if self.per_address > 0:
            self._enforce(ticket.address, from_timer=False)

    def done_waiting(self, ticket: Ticket) -> None:
        """``ticket`` has read its request (or is closing)."""
        conns = self._unauthenticated.get(ticket.address)
        if conns is not None and conns.pop(ticket, None) is not None and not conns:
            del self._unauthenticated[ticket.address]

    def unauthenticated(self, address: str) -> int:
        return len(self._unauthenticated.get(address, ()))

    def _evict(self, ticket: Ticket) -> None:
        conns = self._unauthenticated[ticket.address]
        del conns[ticket]
        if not conns:
            del self._unauthenticated[ticket.address]
        if ticket.holds_slot:
            self._evicted.add(ticket)
        ticket.evict()

    def _enforce(self, address: str, from_timer: bool = True) -> None:
        """Evict the oldest unauthenticated connections of ``address`` beyond the cap that have
        waited ``grace``; if younger ones are still beyond it, look again when the oldest is due."""
        if from_timer:
            self._timers.pop(address, None)
        conns = self._unauthenticated.get(address)
        if conns is None:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        excess = len(conns) - self.per_address
        for ticket, since in list(conns.items()):  # oldest first
            if excess <= 0:
                return
            if now - since < self.grace:
                if address not in self._timers:
                    when = since + self.grace
                    self._timers[address] = loop.call_at(when, self._enforce, address)
                return
            excess -= 1
            self._evict(ticket)

    def _serve_ready(self, from_timer: bool = False) -> None:
        """Evict slow unauthenticated connections for the complete requests in the queue (one
        each, counting evictions whose slots are on their way); look again when one is due."""
        if from_timer:
            self._ready_timer = None
        loop = asyncio.get_running_loop()
        age = min(self.grace, READY_FIRST_AGE)
        while len(self._ready) > len(self._evicted) and self.in_use >= self.slots:
            due = None
            for address in sorted(self._unauthenticated, key=lambda a: -self.unauthenticated(a)):
                ticket, since = next(iter(self._unauthenticated[address].items()))
                if loop.time() - since >= age:
                    self._evict(ticket)
                    break
                due = since + age if due is None else min(due, since + age)
            else:
                if due is not None and self._ready_timer is None:
                    self._ready_timer = loop.call_at(due, self._serve_ready, True)
                return

    def close(self) -> None:
        """Cancel the timers (the server is stopping)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._ready_timer is not None:
            self._ready_timer.cancel()
            self._ready_timer = None


def _granted(fut: asyncio.Future[None]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None
