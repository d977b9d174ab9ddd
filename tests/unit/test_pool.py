"""The pool without sockets: real pool, client and server objects over fake transports
(tests.support.fakes). Queue order, the size limit, hand-over under load and shrinking."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from pyproxy.net.client import ClientConn
from pyproxy.net.server import ServerConn
from pyproxy.pool.maintenance import tick
from pyproxy.pool.pool import Place, Pool
from pyproxy.proto.phases import ClientPhase
from tests.support import fakes
from tests.support.wire import query

SELECT = query("select 1")


def run(test: Callable[[], None]) -> None:
    async def body() -> None:
        test()

    asyncio.run(body())


def busy_world(clients: int) -> tuple[Pool, list[ServerConn], list[ClientConn]]:
    """Every client has sent one query, in order: the first ``POOL_SIZE`` run, the rest wait."""
    servers, conns = fakes.world(clients)
    pool = servers[0].pool
    assert pool is not None
    for client in conns:
        client.data_received(SELECT)
    return pool, servers, conns


def answer(server: ServerConn) -> None:
    server.data_received(server.transport.answer())  # type: ignore[union-attr]


def test_waiting_clients_get_servers_in_arrival_order() -> None:
    def test() -> None:
        pool, _, conns = busy_world(fakes.POOL_SIZE + 5)
        waiting = conns[fakes.POOL_SIZE :]
        assert list(pool.waiters) == waiting
        assert all(c.phase is ClientPhase.WAITING for c in waiting)
        served = []
        for running in conns[: len(waiting)]:
            server = running.server
            assert server is not None
            answer(server)  # its transaction ends: the server goes to the head of the queue
            served.append(server.client)
            assert running.server is None
        assert served == waiting
        assert not pool.waiters

    run(test)


def test_the_pool_never_holds_more_servers_than_its_size() -> None:
    def test() -> None:
        pool, servers, _ = busy_world(fakes.POOL_SIZE + 5)
        assert pool.total == fakes.POOL_SIZE == len(pool.linked)
        assert not pool.idle
        # A queued client does not make the pool open one more (no reserve pool).
        assert pool.opener.connecting == 0
        assert len({id(s.client) for s in servers}) == fakes.POOL_SIZE

    run(test)


def test_a_hand_over_is_one_step_the_server_stays_linked() -> None:
    def test() -> None:
        pool, _, conns = busy_world(fakes.POOL_SIZE + 1)
        first, waiter = conns[0], conns[-1]
        server = first.server
        assert server is not None
        answer(server)
        assert server.client is waiter and waiter.server is server
        assert server.place is Place.LINKED and not pool.idle
        assert waiter.phase is ClientPhase.LINKED
        # The waiter's query went to the server: answering it ends the waiter's transaction.
        assert server.transport.replies  # type: ignore[union-attr]

    run(test)


def test_without_waiters_a_released_server_goes_back_idle() -> None:
    def test() -> None:
        pool, _, conns = busy_world(3)
        for client in conns:
            server = client.server
            assert server is not None
            answer(server)
        pool.reclaim_kept()  # the pool takes back servers kept between transactions
        assert len(pool.idle) == fakes.POOL_SIZE and not pool.linked
        assert all(c.server is None for c in conns)

    run(test)


def test_a_smaller_share_closes_idle_servers_and_busy_ones_as_they_return() -> None:
    def test() -> None:
        pool, _, conns = busy_world(3)
        assert pool.total == fakes.POOL_SIZE
        pool.set_share(2)
        assert pool.cap == 2
        assert len(pool.idle) == 0 and pool.total == 3  # 17 idle closed; 3 busy remain
        busy = [c.server for c in conns]
        for client in conns:
            server = client.server
            assert server is not None
            answer(server)
        pool.reclaim_kept()
        assert pool.total == 2
        assert sum(s.closed for s in busy if s is not None) == 1
        pool.set_share(None)
        assert pool.cap == fakes.POOL_SIZE

    run(test)


def test_queued_clients_beyond_the_share_wait() -> None:
    def test() -> None:
        servers, conns = fakes.world(4)
        pool = servers[0].pool
        assert pool is not None
        pool.set_share(2)
        for client in conns:
            client.data_received(SELECT)
        assert len(pool.linked) == 2 and len(pool.waiters) == 2
        assert pool.opener.connecting == 0  # at its share: no server opened

    run(test)


def test_a_larger_share_opens_servers_for_queued_clients_at_once() -> None:
    def test() -> None:
        servers, conns = fakes.world(4)
        pool = servers[0].pool
        assert pool is not None
        pool.set_share(2)
        for client in conns:
            client.data_received(SELECT)
        assert len(pool.waiters) == 2 and pool.opener.connecting == 0
        pool.set_share(4)
        assert pool.opener.connecting == 2  # one per queued client, without waiting for a tick

    run(test)


def test_min_pool_size_and_the_reserve_stay_within_a_share() -> None:
    async def body() -> None:
        servers, conns = fakes.world(4)
        pool = servers[0].pool
        assert pool is not None
        settings = replace(pool.cfg.settings, min_pool_size=5, reserve_pool_size=3)
        pool.reconfigure(replace(pool.cfg, settings=settings))
        pool.set_share(2)
        assert pool.total == 2
        tick(pool, time.monotonic())
        assert pool.opener.connecting == 0  # min_pool_size 5, but the share is 2
        for client in conns:
            client.data_received(SELECT)
        for waiter in pool.waiters:
            waiter.wait_since -= 60  # long past reserve_pool_timeout
        tick(pool, time.monotonic())
        assert pool.limit() == 2 and pool.opener.connecting == 0

    asyncio.run(body())
