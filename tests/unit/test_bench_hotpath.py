"""bench.hotpath drives real pyproxy objects: its transactions must really complete."""

from __future__ import annotations

import asyncio

from bench import hotpath


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
        request, reply = hotpath.PROTOCOLS["simple"]
        servers, clients = hotpath._world(hotpath.SITUATIONS["queued"])
        for client in clients:
            client.data_received(request)
        pool = clients[0].pool
        assert pool is not None
        assert len(pool.waiters) == len(clients) - hotpath.POOL_SIZE
        before = pool.xact_count
        hotpath._transactions(servers, request, reply, 500)
        assert pool.xact_count - before == 500
        assert len(pool.waiters) == len(clients) - hotpath.POOL_SIZE

    asyncio.run(run())


def test_statement_mode_world_runs_statement_mode_clients() -> None:
    async def run() -> None:
        servers, clients = hotpath._world(hotpath.SITUATIONS["kept"], "statement")
        pool = clients[0].pool
        assert pool is not None and pool.mode == "statement"
        assert all(c.statement_mode and not c.session_mode for c in clients)
        request, reply = hotpath.PROTOCOLS["simple"]
        for client in clients:
            client.data_received(request)
        before = pool.xact_count
        hotpath._transactions(servers, request, reply, 100)
        assert pool.xact_count - before == 100

    asyncio.run(run())
