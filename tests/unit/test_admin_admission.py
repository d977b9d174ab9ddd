"""Admission bookkeeping of the admin listener, without sockets: slots, queue, per-address cap."""

from __future__ import annotations

import asyncio

import pytest

from pyproxy.admin.admission import Admission, Progress, Refused, Ticket


def admission(
    slots: int = 1,
    *,
    max_queued: int = 2,
    queue_timeout: float = 5.0,
    grace: float = 0.0,
    per_address: int = 2,
) -> Admission:
    return Admission(
        slots,
        max_queued=max_queued,
        queue_timeout=queue_timeout,
        per_address=per_address,
        grace=grace,
    )


def ticket(address: str = "a", evicted: list[Ticket] | None = None) -> Ticket:
    def evict() -> None:
        if evicted is not None:
            evicted.append(new)

    new = Ticket(address, evict)
    return new


async def test_a_released_slot_passes_to_the_waiter_and_is_freed_at_the_end() -> None:
    adm = admission()
    first, second = ticket(), ticket()
    await adm.acquire(first)
    waiting = asyncio.create_task(adm.acquire(second))
    await asyncio.sleep(0)
    assert (adm.in_use, adm.queued) == (1, 1)
    adm.release(first)
    await waiting
    assert second.holds_slot and (adm.in_use, adm.queued) == (1, 0)
    adm.release(second)
    adm.release(second)  # twice is harmless
    assert (adm.in_use, adm.queued) == (0, 0)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    adm = admission()
    holder = ticket()
    await adm.acquire(holder)
    waiting = asyncio.create_task(adm.acquire(ticket()))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert adm.queued == 0
    adm.release(holder)
    assert adm.in_use == 0


async def test_a_waiter_is_refused_when_its_wait_is_over() -> None:
    adm = admission(queue_timeout=0.01)
    await adm.acquire(ticket())
    with pytest.raises(Refused):
        await adm.acquire(ticket())
    assert adm.queued == 0


async def test_the_oldest_unauthenticated_connections_beyond_the_cap_are_evicted() -> None:
    adm = admission(slots=10)
    evicted: list[Ticket] = []
    tickets = [ticket("a", evicted) for _ in range(4)]
    other = ticket("b", evicted)
    adm.waiting(other)
    for t in tickets:
        adm.waiting(t)
    assert evicted == tickets[:2]
    assert adm.unauthenticated("a") == 2 and adm.unauthenticated("b") == 1
    adm.done_waiting(tickets[3])
    assert adm.unauthenticated("a") == 1


async def test_young_connections_are_evicted_when_the_grace_is_over() -> None:
    adm = admission(slots=10, grace=0.05)
    evicted: list[Ticket] = []
    tickets = [ticket("a", evicted) for _ in range(3)]
    for t in tickets:
        adm.waiting(t)
    assert evicted == []
    await asyncio.sleep(0.1)
    assert evicted == tickets[:1]
    adm.close()


async def queue_up(adm: Admission, *tickets: Ticket) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(adm.acquire(t)) for t in tickets]
    await asyncio.sleep(0)
    return tasks


async def test_a_ready_waiter_goes_first_then_the_one_that_waited_longest() -> None:
    adm = admission(max_queued=3)
    holder, slow, ready, later = ticket(), ticket(), ticket(), ticket()
    await adm.acquire(holder)
    tasks = await queue_up(adm, slow, ready, later)
    adm.progressed(ready, Progress.READY)
    adm.release(holder)
    assert ready.holds_slot and not slow.holds_slot
    adm.release(ready)
    assert slow.holds_slot and not later.holds_slot
    adm.release(slow)
    await asyncio.gather(*tasks)


async def test_a_freed_slot_goes_to_the_address_holding_fewest() -> None:
    adm = admission(slots=2, max_queued=3)
    a1, a2, a3, b1 = ticket("a"), ticket("a"), ticket("a"), ticket("b")
    await adm.acquire(a1)
    await adm.acquire(a2)
    tasks = await queue_up(adm, a3, b1)
    adm.release(a1)  # "a" still holds one, "b" none
    assert b1.holds_slot and not a3.holds_slot
    adm.release(a2)
    await asyncio.gather(*tasks)


async def test_a_full_queue_drops_the_hopeless_oldest_first() -> None:
    adm = admission(max_queued=4, grace=60)
    holder = ticket()
    await adm.acquire(holder)
    silent, ready, gone, partial = ticket(), ticket(), ticket(), ticket()
    tasks = await queue_up(adm, silent, ready, gone, partial)
    adm.progressed(ready, Progress.READY)
    adm.progressed(gone, Progress.GONE)
    adm.progressed(partial, Progress.PARTIAL)
    newcomers = [ticket() for _ in range(3)]
    (first,) = await queue_up(adm, newcomers[0])
    with pytest.raises(Refused):
        await tasks[2]  # the client has gone
    assert not tasks[3].done()
    (second,) = await queue_up(adm, newcomers[1])
    with pytest.raises(Refused):
        await tasks[3]  # an incomplete request head
    assert adm.queued == 4 and not tasks[0].done()  # silent for less than the grace: kept...
    (third,) = await queue_up(adm, newcomers[2])
    with pytest.raises(Refused):
        await tasks[0]  # ... unless nothing else may go: the oldest unread of the address goes
    for t in newcomers:
        adm.progressed(t, Progress.READY)
    with pytest.raises(Refused):
        await adm.acquire(ticket())  # only complete requests wait: the newcomer is refused
    waiting = [tasks[1], first, second, third]
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert adm.queued == 0


async def test_a_full_queue_drops_one_silent_past_the_grace() -> None:
    adm = admission(max_queued=1, grace=0.01)
    await adm.acquire(ticket())
    (silent,) = await queue_up(adm, ticket())
    await asyncio.sleep(0.02)
    (newcomer,) = await queue_up(adm, ticket())
    with pytest.raises(Refused):
        await silent
    newcomer.cancel()
    await asyncio.gather(newcomer, return_exceptions=True)
