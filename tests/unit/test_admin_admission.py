"""Admission bookkeeping of the admin listener, without sockets: slots, queue, per-address cap."""

from __future__ import annotations

import asyncio

import pytest

from pyproxy.admin.admission import Admission, Refused, Ticket


def admission(
    slots: int = 1, *, queue_timeout: float = 5.0, grace: float = 0.0, per_address: int = 2
) -> Admission:
    return Admission(
        slots, max_queued=2, queue_timeout=queue_timeout, per_address=per_address, grace=grace
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
