"""A minimal raw PostgreSQL v3 client on a socket, for what drivers hide (startup, keys, limits)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import struct
from collections.abc import Mapping

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
READ_TIMEOUT = 5.0

Message = tuple[str, bytes]


def packet(code: int, payload: bytes = b"") -> bytes:
    """An untyped startup-phase packet: int32 length, int32 code, payload."""
    return struct.pack("!II", 8 + len(payload), code) + payload


def startup_message(params: Mapping[str, str], major: int = 3, minor: int = 0) -> bytes:
    body = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return packet((major << 16) | minor, body)


def cancel_request(pid: int, secret: int) -> bytes:
    return packet(CANCEL_REQUEST_CODE, struct.pack("!II", pid, secret))


def typed(kind: str, body: bytes) -> bytes:
    return kind.encode() + struct.pack("!I", 4 + len(body)) + body


def query(sql: str) -> bytes:
    return typed("Q", sql.encode() + b"\0")


def error_fields(body: bytes) -> dict[str, str]:
    """ErrorResponse / NoticeResponse fields by their one-letter code."""
    out: dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode()
    return out


def parameter_status(body: bytes) -> tuple[str, str]:
    name, value, _ = body.split(b"\0", 2)
    return name.decode(), value.decode()


class WireClient:
    """One TCP connection speaking raw protocol messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.key: tuple[int, int] | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> WireClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_byte(self, timeout: float = READ_TIMEOUT) -> bytes:
        return await asyncio.wait_for(self.reader.read(1), timeout)

    async def read_message(self, timeout: float = READ_TIMEOUT) -> Message | None:
        """The next typed message, or None when the peer closed the connection."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(5), timeout)
            kind, length = head[:1].decode(), struct.unpack("!I", head[1:])[0]
            body = await asyncio.wait_for(self.reader.readexactly(length - 4), timeout)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        return kind, body

    async def read_until(self, kinds: str, timeout: float = READ_TIMEOUT) -> list[Message]:
        """Messages up to and including the first of ``kinds`` (or up to EOF)."""
        out: list[Message] = []
        while True:
            msg = await self.read_message(timeout)
            if msg is None:
                return out
            out.append(msg)
            if msg[0] in kinds:
                return out

    async def at_eof(self, timeout: float = READ_TIMEOUT) -> bool:
        """Drain what is left; True once the peer has closed the connection, False if it has
        not within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    continue
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    async def login(
        self, user: str, database: str, password: str = "", **params: str
    ) -> list[Message]:
        """Startup (trust, cleartext or md5 auth); messages through ReadyForQuery or an error."""
        await self.send(startup_message({"user": user, "database": database, **params}))
        out: list[Message] = []
        while True:
            msg = await self.read_message()
            if msg is None:
                return out
            out.append(msg)
            kind, body = msg
            if kind == "R":
                code = struct.unpack("!I", body[:4])[0]
                if code == 3:
                    await self.send(typed("p", password.encode() + b"\0"))
                elif code == 5:
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                    await self.send(typed("p", b"md5" + outer.encode() + b"\0"))
            elif kind == "K":
                self.key = struct.unpack("!II", body[:8])
            elif kind in "ZE":
                return out

    async def simple_query(self, sql: str) -> list[Message]:
        await self.send(query(sql))
        return await self.read_until("Z")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def send_cancel(host: str, port: int, pid: int, secret: int) -> None:
    """A CancelRequest on its own connection; wait until the peer closes it."""
    client = await WireClient.open(host, port)
    await client.send(cancel_request(pid, secret))
    if not await client.at_eof():
        raise TimeoutError("the cancel request connection was not closed by its peer")
    await client.close()
