"""A server connection that dies while pyproxy's own query runs on it (an alignment, a
read-back, a ROLLBACK) is forgotten, whatever waited for that answer: nothing tries to put the
dead connection back into the pool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from pyproxy.net.client import ClientConn
from pyproxy.net.server import ServerConn
from pyproxy.pool.pool import Place
from pyproxy.proto.phases import ServerPhase
from tests.support import fakes


def lose(server: ServerConn) -> None:
    server.connection_lost(ConnectionResetError("killed"))
    assert server.phase is ServerPhase.CLOSED
    assert server.place is Place.NONE


def linked() -> tuple[ServerConn, ClientConn]:
    servers, clients = fakes.world(1)
    server, client = servers[0], clients[0]
    pool = server.pool
    assert pool is not None
    assert pool.take_idle() is not None
    return server, client


def alignment_client_linked(server: ServerConn, client: ClientConn) -> None:
    server.link(client, "SET application_name = 'x'", wait=False)


def alignment_client_gone(server: ServerConn, client: ClientConn) -> None:
    server.link(client, "SET application_name = 'x'", wait=False)
    server.client = None  # the client went away first


def waited_alignment(server: ServerConn, client: ClientConn) -> None:
    server.link(client, "SET application_name = 'x'", wait=True)


def read_back(server: ServerConn, client: ClientConn) -> None:
    server.link(client, None)
    server.read_state("select 1", lambda error, rows: server.relink())


def rollback(server: ServerConn, client: ClientConn) -> None:
    server.clean("ROLLBACK")


CASES: dict[str, Callable[[ServerConn, ClientConn], None]] = {
    "pipelined alignment, client linked": alignment_client_linked,
    "pipelined alignment, client gone": alignment_client_gone,
    "alignment the client waits for": waited_alignment,
    "read-back": read_back,
    "rollback": rollback,
}


@pytest.mark.parametrize("name", CASES)
def test_a_server_lost_during_pyproxys_own_query_is_forgotten(name: str) -> None:
    async def run() -> None:
        server, client = linked()
        CASES[name](server, client)
        lose(server)

    asyncio.run(run())
