"""Which admin connections are served: slots, a fair bounded queue, a per-address cap."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


class Refused(Exception):
    """No slot for this connection: the queue is full or the wait for a slot is over."""


@dataclass(eq=False)
class Ticket:
    """One connection as admission sees it: its client address and how to close it early."""

    address: str
    evict: Callable[[], None] = field(repr=False)
    holds_slot: bool = False


class Admission:
    """Slots for admin connections, a queue for connections waiting for one, and a cap on the
    unauthenticated connections of one client address.

    - A connection holds a slot while it reads or handles a request, and while a connection that
      has not completed an authenticated request waits for its next one (time-bounded by the HTTP
      layer). Without a free slot a new connection waits in a queue, FIFO per address; a freed
      slot goes to the queued address holding the fewest slots (in turn among equals). At most
      ``max_queued`` connections wait, each at most ``queue_timeout`` seconds, then ``Refused``;
      when the queue is full, a newcomer from an address with fewer queued connections than the
      address with the most takes the place of that address's newest one.
    - A connection that has not yet completed an authenticated request counts as
      "unauthenticated" while it waits for or reads a request. Beyond ``per_address`` of them
      from one address, the oldest are evicted as soon as they have waited ``grace`` seconds: a
      client that sends its request at once is never the oldest for long, so a caller sharing an
      address with slow clients still gets through, and other addresses are not touched.
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
        self.queued = 0
        self._held: dict[str, int] = {}  # slots held per address
        self._queues: dict[str, deque[tuple[Ticket, asyncio.Future[None]]]] = {}
        self._unauthenticated: dict[str, dict[Ticket, float]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # -- slots and the queue ---------------------------------------------------------------

    async def acquire(self, ticket: Ticket) -> None:
        """Take a slot for ``ticket``, waiting in the queue if none is free; raise Refused."""
        if ticket.holds_slot:
            return
        if self.in_use < self.slots and not self.queued:
            self.in_use += 1
            self._hold(ticket)
            return
        if self.queued >= self.max_queued and not self._make_room(ticket.address):
            raise Refused("too many admin connections are waiting, retry later")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (ticket, fut)
        self._queues.setdefault(ticket.address, deque()).append(entry)
        self.queued += 1
        try:
            async with asyncio.timeout(self.queue_timeout):
                await fut
        except TimeoutError:
            if not _granted(fut):
                self._unqueue(entry)
                raise Refused("no admin connection slot became free in time, retry later") from None
        except BaseException:
            if _granted(fut):
                self.release(ticket)
            else:
                self._unqueue(entry)
            raise
        # the slot was passed on by release(), which counted it for this address

    def release(self, ticket: Ticket) -> None:
        """Give ``ticket``'s slot to the next queued connection, or free it."""
        if not ticket.holds_slot:
            return
        ticket.holds_slot = False
        held = self._held[ticket.address] - 1
        if held:
            self._held[ticket.address] = held
        else:
            del self._held[ticket.address]
        while self._queues:
            address = min(self._queues, key=lambda a: self._held.get(a, 0))
            waiters = self._queues.pop(address)
            waiter, fut = waiters.popleft()
            if waiters:
                self._queues[address] = waiters  # to the end: in turn among equals
            self.queued -= 1
            if not fut.done():
                self._hold(waiter)
                fut.set_result(None)  # the slot passes on; in_use stays
                return
        self.in_use -= 1

    def _hold(self, ticket: Ticket) -> None:
        ticket.holds_slot = True
        self._held[ticket.address] = self._held.get(ticket.address, 0) + 1

    def _make_room(self, address: str) -> bool:
        """Refuse the newest queued connection of the address with the most, if that is not
        ``address``'s own share; True when a place was freed."""
        mine = len(self._queues.get(address, ()))
        biggest = max(self._queues, key=lambda a: len(self._queues[a]), default=None)
        if biggest is None or len(self._queues[biggest]) <= mine + 1:
            return False
        _, fut = self._queues[biggest].pop()
        self.queued -= 1
        if not fut.done():
            fut.set_exception(Refused("too many admin connections are waiting, retry later"))
        return True

    def _unqueue(self, entry: tuple[Ticket, asyncio.Future[None]]) -> None:
        waiters = self._queues.get(entry[0].address)
        if waiters is not None and entry in waiters:
            waiters.remove(entry)
            self.queued -= 1
            if not waiters:
                del self._queues[entry[0].address]

    # -- the per-address cap on unauthenticated connections ---------------------------------------

    def waiting(self, ticket: Ticket) -> None:
        """``ticket`` (not yet authenticated) starts waiting for a request."""
        if self.per_address <= 0:
            return
        now = asyncio.get_running_loop().time()
        conns = self._unauthenticated.setdefault(ticket.address, {})
        conns.pop(ticket, None)
        conns[ticket] = now
        self._enforce(ticket.address, from_timer=False)

    def done_waiting(self, ticket: Ticket) -> None:
        """``ticket`` has read its request (or is closing)."""
        conns = self._unauthenticated.get(ticket.address)
        if conns is not None and conns.pop(ticket, None) is not None and not conns:
            del self._unauthenticated[ticket.address]

    def unauthenticated(self, address: str) -> int:
        return len(self._unauthenticated.get(address, ()))

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
            del conns[ticket]
            excess -= 1
            ticket.evict()

    def close(self) -> None:
        """Cancel the timers (the server is stopping)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


def _granted(fut: asyncio.Future[None]) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None
