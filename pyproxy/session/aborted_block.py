"""Statement mode's refused transaction block, answered the way PostgreSQL answers an aborted one.

A statement-mode pool cannot run a transaction block, so pyproxy refuses BEGIN. Refusing only the
BEGIN would let the statements after it run one by one in autocommit, and a script ending with
ROLLBACK would keep them. So the client is left where PostgreSQL leaves a client after an error
inside a block: every statement gets 25P02 ``current transaction is aborted`` (ReadyForQuery
status E) until COMMIT or ROLLBACK, which answer ROLLBACK and end the block. No statement of the
block ever reaches a server. ``AbortedBlock.feed`` takes whole client messages and returns the
answers, sans-IO.
"""

from __future__ import annotations

import struct

from pyproxy.errors import IN_FAILED_SQL_TRANSACTION
from pyproxy.proto import messages as m
from pyproxy.proto.codes import (
    BIND,
    CLOSE,
    COPY_IN_TYPES,
    DESCRIBE,
    EXECUTE,
    FLUSH,
    FUNCTION_CALL,
    PARSE,
    QUERY,
    SYNC,
    TERMINATE,
)
from pyproxy.session.sqlscan import split_statements

_IGNORED = COPY_IN_TYPES | {FLUSH}  # answered by nothing

_ABORTED = "current transaction is aborted, commands ignored until end of transaction block"
_ENDS = {"commit", "end", "rollback", "abort"}
_ROLLBACK_DONE = m.command_complete("ROLLBACK")
_len = struct.Struct("!I").unpack_from


def ends_block(sql: str) -> bool:
    """Is ``sql`` one COMMIT / END / ROLLBACK / ABORT (not ROLLBACK TO, not ... PREPARED)?"""
    statements = split_statements(sql)
    if len(statements) != 1:
        return False
    tokens = statements[0][1]
    return (
        tokens[0] in _ENDS
        and "prepared" not in tokens
        and not (tokens[0] == "rollback" and tokens[1:2] == ["to"])
    )


def starts_block(sql: str) -> bool:
    """Does ``sql`` open a transaction block anywhere (BEGIN / START TRANSACTION)?"""
    for _, tokens in split_statements(sql):
        if tokens[0] == "begin" or tokens[:2] == ["start", "transaction"]:
            return True
    return False


def opens_block(data: bytes, off: int) -> bool:
    """Is the message at ``off`` a whole Query or Parse whose text opens a transaction block?"""
    n = len(data)
    if n - off < 5 or data[off] not in (PARSE, QUERY):
        return False
    end = off + 1 + _len(data, off + 1)[0]
    if end > n:
        return False
    body = data[off + 5 : end]
    if data[off] == PARSE:  # name, then the query
        body = body.split(b"\x00", 2)[1] if body.count(b"\x00") >= 2 else b""
    return starts_block(body.rstrip(b"\x00").decode("utf-8", "replace"))


def message_end(data: bytes, off: int = 0) -> int:
    """Where the (whole) message at ``off`` ends."""
    return off + 1 + _len(data, off + 1)[0]


class AbortedBlock:
    """One refused block, from the refusal to the COMMIT/ROLLBACK that ends it."""

    __slots__ = ("_portals", "_statements", "ended", "skipping")

    def __init__(self) -> None:
        self.skipping = False  # an extended-protocol error: messages are skipped up to Sync
        self.ended = False  # COMMIT/ROLLBACK ran: the next ReadyForQuery says idle
        self._statements: set[bytes] = set()  # statement names parsed as COMMIT/ROLLBACK
        self._portals: set[bytes] = set()  # portals bound to them

    def feed(self, data: bytes) -> tuple[bytes, int]:
        """Answer the whole messages at the start of ``data``; return the answers and how many
        bytes were used. Stops after the message whose ReadyForQuery ends the block (then
        ``ended`` is true) and before a Terminate, which the caller handles."""
        out: list[bytes] = []
        off = 0
        n = len(data)
        while n - off >= 5:
            end = off + 1 + _len(data, off + 1)[0]
            if end > n or data[off] == TERMINATE:  # cut, or Terminate
                break
            done = self._message(data[off], data[off + 5 : end], out)
            off = end
            if done:
                break
        return b"".join(out), off

    def _message(self, kind: int, body: bytes, out: list[bytes]) -> bool:
        """Answer one message; True when its ReadyForQuery ended the block."""
        if kind == QUERY:
            sql = body.rstrip(b"\x00").decode("utf-8", "replace")
            if not split_statements(sql):
                out.append(m.EMPTY_QUERY_RESPONSE + m.READY_FAILED_TX)
            elif ends_block(sql):
                self.ended = True
                out.append(_ROLLBACK_DONE + m.READY_IDLE)
                return True
            else:
                out.append(_aborted() + m.READY_FAILED_TX)
            return False
        if kind == FUNCTION_CALL:
            out.append(_aborted() + m.READY_FAILED_TX)
            return False
        if kind == SYNC:
            self.skipping = False
            out.append(m.READY_IDLE if self.ended else m.READY_FAILED_TX)
            return self.ended
        if self.skipping or kind in _IGNORED:  # skipped; copy data; Flush
            return False
        if not self._extended(kind, body, out):
            self.skipping = True
            out.append(_aborted())
        return False

    def _extended(self, kind: int, body: bytes, out: list[bytes]) -> bool:
        """An extended-protocol message that PostgreSQL still takes in an aborted block (the
        ones carrying COMMIT/ROLLBACK); False when it gets 25P02."""
        if kind == PARSE:
            name, _, rest = body.partition(b"\x00")
            query = rest.split(b"\x00", 1)[0].decode("utf-8", "replace")
            if not ends_block(query):
                return False
            self._statements.add(name)
            out.append(m.PARSE_COMPLETE)
        elif kind == BIND:
            portal, _, rest = body.partition(b"\x00")
            name = rest.split(b"\x00", 1)[0]
            if name not in self._statements:
                return False
            self._portals.add(portal)
            out.append(m.BIND_COMPLETE)
        elif kind == DESCRIBE:
            which, name = body[:1], body[1:].rstrip(b"\x00")
            if which == b"S" and name in self._statements:
                out.append(m.NO_PARAMETERS + m.NO_DATA)
            elif which == b"P" and name in self._portals:
                out.append(m.NO_DATA)
            else:
                return False
        elif kind == EXECUTE:
            portal = body.split(b"\x00", 1)[0]
            if portal not in self._portals:
                return False
            self.ended = True
            out.append(_ROLLBACK_DONE)
        elif kind == CLOSE:
            out.append(m.CLOSE_COMPLETE)
        else:
            return False
        return True


def _aborted() -> bytes:
    return m.error_response(IN_FAILED_SQL_TRANSACTION, _ABORTED)
