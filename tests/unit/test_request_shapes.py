"""The learnt request shape is a shortcut of the forward path's message walk: for any bytes a
client sends, taking it must end exactly as the walk would (same bytes to the server and the
client, same counters, same statement queue)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import pytest

from pyproxy.net.client import ClientConn
from pyproxy.net.server import ServerConn
from tests.support import fakes
from tests.support.extended import bind, describe, execute, flush, parse, sync
from tests.support.recording import Recorder, plain
from tests.support.wire import typed

SQL = "select $1::int as v"


def request(value: str | None = "12345", *, portal: str = "", stmt: str = "") -> bytes:
    return parse("", SQL) + bind(portal, stmt, [value]) + describe("P", "") + execute() + sync()


def linked_client() -> tuple[ClientConn, ServerConn]:
    """A client whose first requests (a named Parse, then ``request()``) were answered: it
    keeps its server, and has learnt the shape of ``request()``."""
    _, clients = fakes.world(1)
    client = clients[0]
    client.transport = Recorder()  # type: ignore[assignment]
    client.data_received(parse("s", SQL) + sync())  # a named statement, for the cases below
    server = client.server
    assert server is not None
    server.data_received(server.transport.answer())  # type: ignore[union-attr]
    client.data_received(request())
    server.data_received(server.transport.answer())  # type: ignore[union-attr]
    assert client.server is server and server.held
    server.transport = Recorder()  # type: ignore[assignment]
    return client, server


def outcome(client: ClientConn, server: ServerConn) -> dict[str, Any]:
    return {
        "to_server": b"".join(server.transport.written),  # type: ignore[union-attr]
        "to_client": b"".join(client.transport.written),  # type: ignore[union-attr]
        "pending": server.pending,
        "queue": [tuple(map(plain, entry)) for entry in server.stmts.queue],
        "sent_seg": server.stmts.sent_seg,
        "open_ext": client.open_ext,
        "copy_syncs": client.copy_syncs,
        "tail": bytes(client.tail),
        "skip": client.skip,
        "state": client.phase,
    }


def both_ways(data: bytes) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """(outcome with the learnt shape, outcome of the walk alone, whether the shape matched)."""

    async def run() -> tuple[dict[str, Any], dict[str, Any], bool]:
        shaped, server = linked_client()
        assert shaped.shape is not None
        walks = shaped.shape_misses  # counts the requests the walk could have learnt from
        shaped.data_received(data)
        matched = shaped.shape_misses == walks
        walked, other = linked_client()
        walked.shape = None
        walked.data_received(data)
        return outcome(shaped, server), outcome(walked, other), matched

    return asyncio.run(run())


def with_bind_length(delta: int) -> bytes:
    data = bytearray(request())
    at = data.index(b"B")
    (ln,) = struct.unpack_from("!I", data, at + 1)
    struct.pack_into("!I", data, at + 1, ln + delta)
    return bytes(data)


SHAPE_MATCHES: dict[str, Callable[[], bytes]] = {
    "same parameter": request,
    "longer parameter": lambda: request("123456789"),
    "shorter parameter": lambda: request("7"),
    "null parameter": lambda: request(None),
}
SHAPE_MISSES: dict[str, Callable[[], bytes]] = {
    "bind length one too long": lambda: with_bind_length(1),
    "bind length two too long": lambda: with_bind_length(2),
    "bind length one too short": lambda: with_bind_length(-1),
    "bind length too short for its names": lambda: with_bind_length(-12),
    "cut before the last byte": lambda: request()[:-1],
    "an extra Sync": lambda: request() + sync(),
    "twice": lambda: request() + request("2"),
    "another tail": lambda: parse("", SQL) + bind("", "", ["1"]) + execute() + sync(),
    "statement describe": lambda: (
        request()[: -len(describe("P", "") + execute() + sync())]
        + describe("S", "")
        + execute()
        + sync()
    ),
    "named portal": lambda: request(portal="p").replace(execute(), execute("p")),
    "named statement": lambda: parse("s", SQL) + bind("", "s", ["1"]) + execute() + sync(),
    "a named statement after the Parse": lambda: request(stmt="s"),
    "a Query where the Bind was": lambda: request().replace(b"B", b"Q", 1),
    "Flush instead of Sync": lambda: request()[:-5] + flush(),
    "the Parse alone": lambda: parse("", SQL),
    "the Parse and half a Bind": lambda: request()[: len(parse("", SQL)) + 6],
    "followed by a Query": lambda: request() + typed("Q", b"select 1\0"),
    "followed by half a message": lambda: request() + b"Q\0\0",
    "a Describe with no body, last": lambda: typed("D", b""),
    "a Describe with no body, then Sync": lambda: typed("D", b"") + sync(),
    "a Describe of a statement with no name": lambda: typed("D", b"S") + sync(),
    "a Close with no body, last": lambda: typed("C", b""),
    "a Close with no body, then Sync": lambda: typed("C", b"") + sync(),
}


@pytest.mark.parametrize("name", SHAPE_MATCHES)
def test_a_repeat_takes_the_shape_and_ends_as_the_walk_does(name: str) -> None:
    shaped, walked, matched = both_ways(SHAPE_MATCHES[name]())
    assert matched
    assert shaped == walked
    assert shaped["pending"] == 1 and len(shaped["queue"]) == 1


@pytest.mark.parametrize("name", SHAPE_MISSES)
def test_anything_else_ends_as_the_walk_does(name: str) -> None:
    shaped, walked, _ = both_ways(SHAPE_MISSES[name]())
    assert shaped == walked


@pytest.mark.parametrize("kind", ["D", "C"])
def test_a_describe_or_close_without_a_body_goes_to_postgresql_as_sent(kind: str) -> None:
    """PostgreSQL answers a body-less Describe or Close with its own error; pyproxy must pass
    it on rather than read past the message (it once raised IndexError here)."""
    for data in (typed(kind, b""), typed(kind, b"") + sync()):
        shaped, _, _ = both_ways(data)
        assert shaped["to_server"] == data
