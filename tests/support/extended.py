"""Extended-query protocol messages and a raw client that runs message sequences (pipelines)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from tests.support.wire import WireClient, error_fields, typed


def parse(name: str, sql: str, types: Sequence[int] = ()) -> bytes:
    body = name.encode() + b"\0" + sql.encode() + b"\0"
    body += struct.pack(f"!H{len(types)}I", len(types), *types)
    return typed("P", body)


def bind(portal: str, stmt: str, params: Sequence[str | None] = ()) -> bytes:
    """Bind with text parameters and text results."""
    body = portal.encode() + b"\0" + stmt.encode() + b"\0" + struct.pack("!H", 0)
    body += struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            raw = p.encode()
            body += struct.pack("!i", len(raw)) + raw
    return typed("B", body + struct.pack("!H", 0))


def describe(kind: str, name: str) -> bytes:
    return typed("D", kind.encode() + name.encode() + b"\0")


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return typed("E", portal.encode() + b"\0" + struct.pack("!I", max_rows))


def close(kind: str, name: str) -> bytes:
    return typed("C", kind.encode() + name.encode() + b"\0")


def sync() -> bytes:
    return typed("S", b"")


def flush() -> bytes:
    return typed("H", b"")


def run_statement(name: str, params: Sequence[str | None] = (), portal: str = "") -> bytes:
    """Bind + Execute of a prepared statement (no Sync)."""
    return bind(portal, name, params) + execute(portal)


@dataclass(frozen=True)
class Reply:
    """One backend message, reduced to what is comparable between two servers."""

    kind: str
    detail: str = ""  # SQLSTATE for errors, the tag for CommandComplete, values for DataRow

    def __repr__(self) -> str:
        return f"{self.kind}:{self.detail}" if self.detail else self.kind


def _reduce(kind: str, body: bytes) -> Reply | None:
    if kind == "E":
        return Reply("E", error_fields(body).get("C", "?"))
    if kind == "C":
        return Reply("C", body.rstrip(b"\0").decode())
    if kind == "D":
        n = struct.unpack_from("!H", body)[0]
        off = 2
        values = []
        for _ in range(n):
            ln = struct.unpack_from("!i", body, off)[0]
            off += 4
            values.append("NULL" if ln < 0 else body[off : off + ln].decode())
            off += max(ln, 0)
        return Reply("D", ",".join(values))
    if kind == "Z":
        return Reply("Z", body.decode())
    if kind in ("N", "S"):  # notices and ParameterStatus differ between pooler and server
        return None
    return Reply(kind)


class ExtendedClient:
    """A logged-in raw connection: send any bytes, read replies until N ReadyForQuery."""

    def __init__(self, wire: WireClient) -> None:
        self.wire = wire
        self.errors: list[dict[str, str]] = []
        self.notices: list[dict[str, str]] = []

    @classmethod
    async def connect(cls, host: str, port: int, user: str, database: str) -> ExtendedClient:
        wire = await WireClient.open(host, port)
        replies = await wire.login(user, database)
        assert replies and replies[-1][0] == "Z", f"login failed: {replies}"
        return cls(wire)

    async def send(self, *messages: bytes) -> None:
        await self.wire.send(b"".join(messages))

    async def read(self, ready: int = 1, timeout: float = 5.0) -> list[Reply]:
        """Replies up to and including the ``ready``-th ReadyForQuery."""
        out: list[Reply] = []
        while ready:
            msg = await self.wire.read_message(timeout)
            assert msg is not None, f"connection closed after {out}"
            kind, body = msg
            if kind == "E":
                self.errors.append(error_fields(body))
            elif kind == "N":
                self.notices.append(error_fields(body))
            reply = _reduce(kind, body)
            if reply is not None:
                out.append(reply)
            if kind == "Z":
                ready -= 1
        return out

    async def run(self, *messages: bytes, ready: int = 1) -> list[Reply]:
        await self.send(*messages)
        return await self.read(ready)

    async def query(self, sql: str) -> list[Reply]:
        return await self.run(typed("Q", sql.encode() + b"\0"))

    async def close(self) -> None:
        await self.wire.send(typed("X", b""))
        await self.wire.close()


def kinds(replies: Sequence[Reply]) -> str:
    """The message types as one string, e.g. ``"12DCZ"``."""
    return "".join(r.kind for r in replies)
