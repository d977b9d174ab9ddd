"""Servers that answer as PostgreSQL would, message by message, for the fake world
(``tests.support.fakes``): transaction status, errors that skip to Sync, named statements, the
messages PostgreSQL ignores outside COPY, FATAL for a type it does not know; and client
transports that keep what they are sent. Nothing is delivered until a test says so."""

from __future__ import annotations

from tests.support import fakes
from tests.support.fakes import message


def _error(code: str, text: str, severity: str = "ERROR") -> bytes:
    return message(b"E", f"S{severity}\0C{code}\0M{text}\0\0".encode())


ROW = fakes.ROW_DESCRIPTION + fakes.ROWS
FATAL_KIND = _error("08P01", "invalid frontend message type", "FATAL")
KILLED = _error("57P01", "terminating connection due to administrator command", "FATAL")


class Pg(fakes.Transport):
    """Reads whole messages from what pyproxy writes and keeps PostgreSQL's answers in ``out``
    until the test delivers them; ``closed`` once it ends the connection."""

    def __init__(self) -> None:
        self.inbuf = b""
        self.out = b""
        self.status = b"I"
        self.skipping = False  # an extended-protocol error: skip until Sync
        self.stmts: set[bytes] = {b""}
        self.closed = False
        self.lost = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        self.inbuf += data
        while not self.closed and len(self.inbuf) >= 5:
            n = int.from_bytes(self.inbuf[1:5], "big")
            if n < 4:
                self.die(FATAL_KIND)
                return
            if len(self.inbuf) < 1 + n:
                return
            kind, body = self.inbuf[0], self.inbuf[5 : 1 + n]
            self.inbuf = self.inbuf[1 + n :]
            if self.skipping and kind != ord("S"):
                continue
            self.out += self.answer(chr(kind), body)

    def die(self, fatal: bytes) -> None:
        self.out += fatal
        self.closed = True

    def fail(self, code: str) -> bytes:
        self.skipping = True
        if self.status == b"T":
            self.status = b"E"
        return _error(code, "failed")

    def answer(self, kind: str, body: bytes) -> bytes:
        if kind == "Q":
            return self.simple(body.rstrip(b"\0").decode(errors="replace")) + self.ready()
        if kind in "SF":  # a Sync with a body, a FunctionCall: an error, then ReadyForQuery
            self.skipping = False
            if kind == "S" and not body:
                return self.ready()
            if self.status == b"T":
                self.status = b"E"
            return _error("08P01", "failed") + self.ready()
        if kind in "dcf":  # CopyData, CopyDone, CopyFail outside COPY: ignored
            return b""
        if kind == "X":
            self.closed = True
            return b""
        if kind == "H":
            return self.fail("08P01") if body else b""
        if self.status == b"E" and kind in "PBE":
            return self.fail("25P02")
        if kind == "P":
            name, _, rest = body.partition(b"\0")
            if name and name in self.stmts:
                return self.fail("42P05")
            if b"not sql" in rest or b"COPY" in rest:
                return self.fail("42601")
            self.stmts.add(name)
            return message(b"1", b"")
        if kind == "B":
            stmt = body.split(b"\0")[1:2]
            return message(b"2", b"") if stmt and stmt[0] in self.stmts else self.fail("26000")
        if kind == "D" and body[:1] in (b"S", b"P"):
            return fakes.ROW_DESCRIPTION
        if kind == "E":
            return fakes.ROWS
        if kind == "C" and body[:1] in (b"S", b"P"):
            if body[:1] == b"S":
                self.stmts.discard(body[1:].rstrip(b"\0"))
            return message(b"3", b"")
        if kind in "DC":
            return self.fail("08P01")
        self.die(FATAL_KIND)
        return b""

    def simple(self, sql: str) -> bytes:
        out = b""
        parts = [p.strip().lower() for p in sql.split(";")]
        if not any(parts):
            return message(b"I", b"")
        for part in filter(None, parts):
            if self.status == b"E" and not part.startswith(("commit", "rollback")):
                return out + _error("25P02", "aborted")
            if part.startswith("begin"):
                self.status = b"T"
                out += message(b"C", b"BEGIN\0")
            elif part.startswith(("commit", "rollback")):
                self.status = b"I"
                out += message(b"C", b"COMMIT\0")
            elif "1/0" in part or "not sql" in part or "copy" in part:
                if self.status == b"T":
                    self.status = b"E"
                return out + _error("22012", "failed")
            elif part.startswith(("set", "discard", "reset", "deallocate")):
                out += message(b"C", b"SET\0")
            else:
                out += ROW
        return out

    def ready(self) -> bytes:
        return message(b"Z", self.status)


class Client(fakes.Transport):
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed
