"""Statement mode's refused transaction blocks, on the client side: a BEGIN refused after the
answers to what came before it, then the block answered by pyproxy until COMMIT or ROLLBACK (see
pyproxy.session.aborted_block)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyproxy.errors import ACTIVE_SQL_TRANSACTION
from pyproxy.net.relay import keep
from pyproxy.pool.figures import own_error
from pyproxy.proto import messages as m
from pyproxy.proto.codes import PARSE, QUERY, TERMINATE
from pyproxy.proto.framing import length_at, message_end
from pyproxy.proto.phases import ClientPhase
from pyproxy.session.aborted_block import AbortedBlock, opens_block
from pyproxy.session.rewrite import STATEMENT_BLOCK, STATEMENT_HINT

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn

C = ClientPhase


def defer(client: ClientConn, rest: bytes) -> None:
    """``rest`` opens a transaction block after requests already sent: it is refused once
    their answers are in (``ClientConn.refuse_deferred``), or now if none are pending."""
    server = client.server
    if server is None or (server.pending <= 0 and not client.open_ext):
        enter(client, rest)
    else:
        client.deferred = rest


def enter(client: ClientConn, rest: bytes = b"") -> None:
    """Refuse a transaction block (``rest`` starts with the Query or Parse that opens it) and
    leave the client in an aborted block, answered by pyproxy until COMMIT or ROLLBACK."""
    client.drop_server()
    block = client.block = AbortedBlock()
    client.move(C.BLOCKED)
    refusal = m.error_response(ACTIVE_SQL_TRANSACTION, STATEMENT_BLOCK, hint=STATEMENT_HINT)
    own_error(client.pool, ACTIVE_SQL_TRANSACTION)
    if rest and rest[0] == PARSE:  # extended protocol: the rest up to Sync is skipped
        block.skipping = True
        client.transport.write(refusal)
    else:
        client.transport.write(refusal + m.READY_FAILED_TX)
    if rest:
        rest = rest[message_end(rest) :]
        if rest:
            feed(client, rest)


def feed(client: ClientConn, data: bytes) -> None:
    """Client messages while its refused block lasts."""
    if client.tail:
        data = bytes(client.tail) + data
        client.tail = b""
    block = client.block
    assert block is not None
    reply, used = block.feed(data)
    if reply:
        client.transport.write(reply)
    rest = data[used:]
    if block.ended:
        client.block = None
        client.move(C.LINKED if client.server is not None else C.READY)
        if rest:
            client.data_received(rest)
    elif rest and rest[0] == TERMINATE:
        client.transport.close()
    elif rest:
        keep(client, rest, 0)


def opens_block_at(client: ClientConn, data: bytes) -> bool:
    """Statement mode: does ``data`` start with a whole Query or Parse opening a transaction
    block? The pre-checks first: the query's text, not the whole request."""
    if len(data) < 6:
        return False
    end = 1 + length_at(data, 0)[0]
    if data[0] == QUERY:
        seen = client.needs(data, 5, min(end, len(data)))
    elif data[0] == PARSE:
        name_end = data.find(0, 5, end)
        seen = name_end >= 0 and client.parse_needs(data, name_end + 1, min(end, len(data)))
    else:
        return False
    return seen and opens_block(data, 0)
