"""bench.hotpath drives real pyproxy objects: its transactions must really complete."""

from __future__ import annotations

import asyncio

from bench import hotpath
from tests.support import fakes


def test_every_situation_completes_transactions_and_counts_instructions() -> None:
    async def run() -> None:
        for mode in hotpath.MODES:
            for situation in hotpath.SITUATIONS:
                for protocol in hotpath.PROTOCOLS:
                    micros, instructions = hotpath.measure(situation, protocol, 200, mode)
                    assert micros > 0
                    # Each transaction runs pyproxy code in both directions: hundreds of
                    # instructions, never none (which would mean the loop measured nothing).
                    assert 100 < instructions < 10_000, (mode, situation, protocol, instructions)

    asyncio.run(run())


def test_queued_situation_keeps_a_queue_and_hands_servers_over() -> None:
    async def run() -> None:
        servers, clients = fakes.world(hotpath.SITUATIONS["queued"])
        request = hotpath.start_clients(clients, "simple")
        pool = clients[0].pool
        assert pool is not None
        assert len(pool.waiters) == len(clients) - fakes.POOL_SIZE
        before = pool.xact_count
        fakes.transactions(servers, request, 500)
        assert pool.xact_count - before == 500
        assert len(pool.waiters) == len(clients) - fakes.POOL_SIZE

    asyncio.run(run())


def test_statement_mode_world_runs_statement_mode_clients() -> None:
    async def run() -> None:
        servers, clients = fakes.world(hotpath.SITUATIONS["kept"], "statement")
        pool = clients[0].pool
        assert pool is not None and pool.mode == "statement"
        assert all(c.statement_mode and not c.session_mode for c in clients)
        request = hotpath.start_clients(clients, "simple")
        before = pool.xact_count
        fakes.transactions(servers, request, 100)
        assert pool.xact_count - before == 100

    asyncio.run(run())


def test_prepared_protocol_binds_the_statement_each_server_prepared_once() -> None:
    async def run() -> None:
        servers, clients = fakes.world(hotpath.SITUATIONS["queued"])
        request = hotpath.start_clients(clients, "prepared")
        assert request.startswith(b"B") and b"P0_1" in request
        fakes.transactions(servers, request, 500)
        for server in servers:
            assert len(server.stmts.prepared) == 1  # prepared on demand, once per server
            name = next(iter(server.stmts.prepared))
            last = server.transport.last  # type: ignore[union-attr]
            # The client's Bind reaches the server under the server-side name.
            assert last.startswith(b"B") and b"\x00" + name + b"\x00" in last
            assert b"P0_1" not in last

    asyncio.run(run())


def test_metrics_cost_measures_both_worlds_and_off_runs_fewer_instructions() -> None:
    async def run() -> None:
        us_on, us_off, on, off = hotpath.measure_on_off("kept", "simple", 0, "transaction")
        assert us_on > 0 and us_off > 0
        # Off, the data path skips the figures: fewer instructions, never more.
        assert 100 < off < on < 10_000

    asyncio.run(run())
