"""The learnt reply shape is a shortcut of the relay's message walk: for any bytes a server
sends, taking it must end exactly as the walk would (same bytes to the client, same server
state, same statement queue, the server released or kept alike)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from pyproxy.net.client import ClientConn
from pyproxy.net.server import ServerConn
from pyproxy.proto import messages as m
from pyproxy.session.prepared import SKIP
from tests.support import fakes
from tests.support.extended import bind, describe, execute, parse, sync
from tests.support.fakes import ROW_DESCRIPTION
from tests.support.fakes import message as _msg
from tests.support.recording import Recorder, plain

QUERY = m.query("select abalance from pgbench_accounts where aid = 1")
EXTENDED = (
    parse("", "select $1::int") + bind("", "", ["1"]) + describe("P", "") + execute() + sync()
)


def row(value: bytes) -> bytes:
    return _msg(b"D", b"\x00\x01" + len(value).to_bytes(4, "big") + value)


COMPLETE = _msg(b"C", b"SELECT 1\x00")
PARSE_COMPLETE = _msg(b"1", b"")
BIND_COMPLETE = _msg(b"2", b"")
NOTICE = _msg(b"N", b"SWARNING\x00C01000\x00Mhello\x00\x00")
ERROR = _msg(b"E", b"SERROR\x00C22012\x00Mdivision by zero\x00\x00")
PARAMETER = _msg(b"S", b"TimeZone\x00Asia/Tokyo\x00")
READY_IN_TRANSACTION = _msg(b"Z", b"T")


def simple_reply(*rows: bytes, tail: bytes = COMPLETE + m.READY_IDLE) -> bytes:
    return ROW_DESCRIPTION + b"".join(map(row, rows)) + tail


def extended_reply(*rows: bytes) -> bytes:
    return PARSE_COMPLETE + BIND_COMPLETE + simple_reply(*rows)


def answered_client(mode: str, request: bytes, first: bytes) -> tuple[ClientConn, ServerConn]:
    """A client whose ``request`` was answered once with ``first`` (so it learnt the reply's
    shape) and was sent again: its server is waiting to send the second reply."""
    _, clients = fakes.world(1, mode)
    client = clients[0]
    client.data_received(request)
    server = client.server
    assert server is not None
    server.data_received(first)
    client.transport = Recorder()  # type: ignore[assignment]
    client.data_received(request)
    server = client.server  # statement mode: another one, the first is being rolled back
    assert server is not None and server.pending == 1
    return client, server


def outcome(client: ClientConn, server: ServerConn) -> dict[str, Any]:
    pool = server.pool
    assert pool is not None
    return {
        "to_client": b"".join(client.transport.written),  # type: ignore[union-attr]
        "pending": server.pending,
        "status": server.status,
        "queue": [tuple(map(plain, entry)) for entry in server.stmts.queue],
        "server_params": dict(server.params),
        "client_params": dict(client.params),
        "recv_seg": server.stmts.recv_seg,
        "linked": client.server is server,
        "held": server.held,
        "idle": server in pool.idle,
        "client_state": client.phase,
        "server_state": server.phase,
        "tail": bytes(server.tail),
        "skip": server.skip,
    }


Prepare = Callable[[ServerConn], None]


def both_ways(
    mode: str, request: bytes, first: bytes, reply: bytes, prepare: Prepare | None = None
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """(outcome with the learnt shape, outcome of the walk alone, whether the shape matched)."""

    async def run() -> tuple[dict[str, Any], dict[str, Any], bool]:
        results = []
        for use_shape in (True, False):
            client, server = answered_client(mode, request, first)
            if not use_shape:
                client.reply_shape = None
            if prepare is not None:
                prepare(server)
            walks = client.reply_misses
            server.data_received(reply)
            results.append((outcome(client, server), client.reply_misses == walks))
        (shaped, matched), (walked, _) = results
        return shaped, walked, matched

    return asyncio.run(run())


def ours_first(server: ServerConn) -> None:
    server.stmts.queue.appendleft((SKIP, server.stmts.recv_seg, None))


def no_entries(server: ServerConn) -> None:
    server.stmts.queue.clear()


FIRST = simple_reply(b"1")
FIRST_EXTENDED = extended_reply(b"1")
IN_TRANSACTION = COMPLETE + READY_IN_TRANSACTION
MATCHES: dict[str, tuple[bytes, bytes, bytes]] = {
    "same reply": (QUERY, FIRST, simple_reply(b"1")),
    "another value": (QUERY, FIRST, simple_reply(b"123456789")),
    "no rows": (QUERY, FIRST, simple_reply()),
    "three rows": (QUERY, FIRST, simple_reply(b"1", b"22", b"333")),
    "in a transaction again": (
        QUERY,
        simple_reply(b"1", tail=IN_TRANSACTION),
        simple_reply(b"2", tail=IN_TRANSACTION),
    ),
    "fewer rows than the first time": (QUERY, simple_reply(b"1", b"2"), simple_reply(b"3")),
    "rows of two statements": (
        QUERY,
        simple_reply(b"1", tail=COMPLETE + simple_reply(b"2")),
        simple_reply(b"1", b"11", tail=COMPLETE + simple_reply(b"2")),
    ),
    "extended, same reply": (EXTENDED, FIRST_EXTENDED, extended_reply(b"1")),
    "extended, two rows": (EXTENDED, FIRST_EXTENDED, extended_reply(b"4", b"55")),
}
MISSES: dict[str, tuple[bytes, bytes, bytes, Prepare | None]] = {
    "a notice between rows": (
        QUERY,
        FIRST,
        simple_reply(b"1").replace(COMPLETE, NOTICE + COMPLETE),
        None,
    ),
    "an error instead of rows": (QUERY, FIRST, ROW_DESCRIPTION + ERROR + m.READY_IDLE, None),
    "an error after a row": (QUERY, FIRST, simple_reply(b"1", tail=ERROR + m.READY_IDLE), None),
    "a parameter change": (
        QUERY,
        FIRST,
        simple_reply(b"1", tail=COMPLETE + PARAMETER + m.READY_IDLE),
        None,
    ),
    "in a transaction": (QUERY, FIRST, simple_reply(b"1", tail=IN_TRANSACTION), None),
    "idle after in a transaction": (
        QUERY,
        simple_reply(b"1", tail=IN_TRANSACTION),
        simple_reply(b"1"),
        None,
    ),
    "an error, twice": (
        QUERY,
        simple_reply(b"1", tail=ERROR + m.READY_IDLE),
        simple_reply(b"1", tail=ERROR + m.READY_IDLE),
        None,
    ),
    "extended, an error twice": (EXTENDED, ERROR + m.READY_IDLE, ERROR + m.READY_IDLE, None),
    "rows of two statements, the second longer": (
        QUERY,
        simple_reply(b"1", tail=COMPLETE + simple_reply(b"2")),
        simple_reply(b"1", tail=COMPLETE + simple_reply(b"2", b"22")),
        None,
    ),
    "a parameter change, twice": (
        QUERY,
        simple_reply(b"1", tail=COMPLETE + PARAMETER + m.READY_IDLE),
        simple_reply(b"1", tail=COMPLETE + PARAMETER + m.READY_IDLE),
        None,
    ),
    "two replies": (QUERY, FIRST, simple_reply(b"1") + simple_reply(b"2"), None),
    "cut before its end": (QUERY, FIRST, simple_reply(b"1")[:-1], None),
    "a row one byte longer than it says": (
        QUERY,
        FIRST,
        ROW_DESCRIPTION + row(b"1")[:-1] + b"12" + COMPLETE + m.READY_IDLE,
        None,
    ),
    "a row one byte shorter than it says": (
        QUERY,
        FIRST,
        ROW_DESCRIPTION + row(b"12")[:-1] + COMPLETE + m.READY_IDLE,
        None,
    ),
    "another row description": (
        QUERY,
        FIRST,
        _msg(b"T", b"\x00\x00") + COMPLETE + m.READY_IDLE,
        None,
    ),
    "extended, pyproxy's entry first in the queue": (
        EXTENDED,
        FIRST_EXTENDED,
        extended_reply(b"1"),
        ours_first,
    ),
    "extended, no queue entry": (EXTENDED, FIRST_EXTENDED, extended_reply(b"1"), no_entries),
}
MODES = ("transaction", "statement")
# In statement mode a first reply that leaves a transaction open puts the client in an aborted
# transaction block (answered by pyproxy, see test_statement_mode_reply_in_a_transaction_...):
# there is no second reply from a server to compare.
OPENS_A_TRANSACTION = {"in a transaction again", "idle after in a transaction"}


def cases(names: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (name, mode)
        for mode in MODES
        for name in names
        if not (mode == "statement" and name in OPENS_A_TRANSACTION)
    ]


@pytest.mark.parametrize(("name", "mode"), cases(MATCHES))
def test_a_repeated_reply_takes_the_shape_and_ends_as_the_walk_does(name: str, mode: str) -> None:
    request, first, reply = MATCHES[name]
    shaped, walked, matched = both_ways(mode, request, first, reply)
    assert matched
    assert shaped == walked
    assert shaped["pending"] == 0 and not shaped["queue"]


@pytest.mark.parametrize(("name", "mode"), cases(MISSES))
def test_any_other_reply_ends_as_the_walk_does(name: str, mode: str) -> None:
    shaped, walked, _ = both_ways(mode, *MISSES[name])
    assert shaped == walked


def test_statement_mode_reply_in_a_transaction_leaves_an_aborted_block() -> None:
    """A transaction block opened where pyproxy could not see it coming: the server is rolled
    back and the client gets one error and ReadyForQuery E, then 25P02 until ROLLBACK."""

    async def run() -> list[bytes]:
        _, clients = fakes.world(1, "statement")
        client = clients[0]
        client.transport = Recorder()  # type: ignore[assignment]
        client.data_received(QUERY)
        server = client.server
        assert server is not None
        server.data_received(simple_reply(b"1", tail=IN_TRANSACTION))
        assert client.server is None
        client.data_received(QUERY)
        client.data_received(m.query("ROLLBACK"))
        return client.transport.written  # type: ignore[no-any-return]

    written = b"".join(asyncio.run(run()))
    assert written.count(b"Z\x00\x00\x00\x05E") == 2
    assert b"C25001" in written and b"C25P02" in written
    assert written.endswith(m.command_complete("ROLLBACK") + m.READY_IDLE)


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_a_reply_whose_start_is_held_back_is_joined_to_it_not_dropped(mode: str) -> None:
    """While the start of a reply is held back (it may still be retried elsewhere), the rest
    must not be taken by the shape alone: the held bytes go first, as the walk sends them."""
    name = next(iter(MATCHES))
    request, first, reply = MATCHES[name]
    held = row(b"held back")

    def hold(server: ServerConn) -> None:
        server.held_reply = held

    shaped, walked, _ = both_ways(mode, request, first, reply, hold)
    assert shaped == walked
    assert held in shaped["to_client"]
