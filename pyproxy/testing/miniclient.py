"""A tiny PostgreSQL client (simple query protocol only) built on pyproxy's own codecs.

Enough for the demo and smoke checks where no driver is installed: SCRAM/md5/cleartext/trust
login, simple queries returning text rows, errors raised as PgError with their SQLSTATE.
"""

from __future__ import annotations

import asyncio
import struct

from pyproxy.auth.scram import AuthFailed
from pyproxy.auth.server_login import ServerLogin
from pyproxy.errors import INTERNAL_ERROR, INVALID_PASSWORD, PgError
from pyproxy.proto import messages as m
from pyproxy.proto.codes import (
    AUTH_OK,
    AUTHENTICATION,
    DATA_ROW,
    ERROR_RESPONSE,
    PARAMETER_STATUS,
    READY_FOR_QUERY,
    ROW_DESCRIPTION,
)


class MiniClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.params: dict[str, str] = {}

    @classmethod
    async def connect(
        cls, host: str, port: int, user: str, password: str | None, database: str
    ) -> MiniClient:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        writer.write(m.startup_message({"user": user, "database": database}))
        await client._login(user, password)
        return client

    async def _read(self) -> tuple[int, bytes]:
        head = await self.reader.readexactly(5)
        (length,) = struct.unpack("!I", head[1:])
        return head[0], await self.reader.readexactly(length - 4)

    async def _login(self, user: str, password: str | None) -> None:
        auth = ServerLogin(user, password)  # the answers pyproxy itself gives PostgreSQL
        while True:
            t, body = await self._read()
            if t == ERROR_RESPONSE:
                self._raise(body)
            if t == PARAMETER_STATUS:
                name, value = m.parse_parameter_status(body)
                self.params[name] = value
            elif t == READY_FOR_QUERY:
                return
            elif t == AUTHENTICATION:
                (code,) = struct.unpack("!I", body[:4])
                if code == AUTH_OK:
                    continue
                if password is None:
                    raise PgError(INVALID_PASSWORD, "the server asked for a password; none given")
                try:
                    reply = auth.answer(code, body[4:])
                except AuthFailed as exc:
                    raise PgError(INVALID_PASSWORD, str(exc)) from None
                if reply:
                    self.writer.write(reply)

    @staticmethod
    def _raise(body: bytes) -> None:
        fields = m.parse_fields(body)
        raise PgError(
            fields.get("C", INTERNAL_ERROR), fields.get("M", "?"), fatal=fields.get("S") == "FATAL"
        )

    async def query(self, sql: str) -> list[tuple[str | None, ...]]:
        """Run one simple query; return the rows of its last result as text."""
        self.writer.write(m.query(sql))
        rows: list[tuple[str | None, ...]] = []
        error: bytes | None = None
        while True:
            t, body = await self._read()
            if t == DATA_ROW:
                (count,) = struct.unpack("!H", body[:2])
                pos = 2
                row: list[str | None] = []
                for _ in range(count):
                    (n,) = struct.unpack("!i", body[pos : pos + 4])
                    pos += 4
                    if n < 0:
                        row.append(None)
                    else:
                        row.append(body[pos : pos + n].decode())
                        pos += n
                rows.append(tuple(row))
            elif t == ROW_DESCRIPTION:  # a new result starts
                rows = []
            elif t == ERROR_RESPONSE:
                error = body
            elif t == READY_FOR_QUERY:
                if error is not None:
                    self._raise(error)
                return rows

    async def close(self) -> None:
        try:
            self.writer.write(m.TERMINATE)
            self.writer.close()
            await self.writer.wait_closed()
        except OSError:
            pass
