"""A lib/pq-style client of the admin console: simple protocol only, the startup parameters
lib/pq sends (extra_float_digits, datestyle, client_encoding), result columns with type OIDs."""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

from pyproxy.errors import INTERNAL_ERROR, PgError
from pyproxy.proto import messages as m
from pyproxy.proto.codes import (
    COMMAND_COMPLETE,
    DATA_ROW,
    ERROR_RESPONSE,
    NOTICE_RESPONSE,
    READY_FOR_QUERY,
    ROW_DESCRIPTION,
)
from pyproxy.testing.miniclient import MiniClient

# What lib/pq puts in its startup packet besides user and database (conn.go, defaults).
LIBPQ_STARTUP = {"extra_float_digits": "2", "datestyle": "ISO, MDY", "client_encoding": "UTF8"}


@dataclass
class Result:
    columns: list[tuple[str, int]] = field(default_factory=list)  # (name, type OID)
    rows: list[list[str | None]] = field(default_factory=list)
    tag: str = ""
    notices: list[dict[str, str]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.columns]

    def dicts(self) -> list[dict[str, str | None]]:
        return [dict(zip(self.names, r, strict=True)) for r in self.rows]


class ConsoleClient(MiniClient):
    @classmethod
    async def open(
        cls, host: str, port: int, user: str, password: str, database: str = "pgbouncer"
    ) -> ConsoleClient:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        writer.write(m.startup_message({"user": user, "database": database, **LIBPQ_STARTUP}))
        await client._login(user, password)
        return client

    async def run(self, sql: str) -> Result:
        """One simple query; the last result set (or tag), its columns; PgError on ERROR."""
        self.writer.write(m.query(sql))
        result = Result()
        error: bytes | None = None
        while True:
            t, body = await self._read()
            if t == ROW_DESCRIPTION:
                result = Result(notices=result.notices)
                (count,) = struct.unpack("!H", body[:2])
                pos = 2
                for _ in range(count):
                    end = body.index(b"\x00", pos)
                    name = body[pos:end].decode()
                    oid = struct.unpack("!I", body[end + 7 : end + 11])[0]
                    result.columns.append((name, oid))
                    pos = end + 19
            elif t == DATA_ROW:
                result.rows.append(m.parse_data_row(body))
            elif t == COMMAND_COMPLETE:
                result.tag = body[:-1].decode()
            elif t == NOTICE_RESPONSE:
                result.notices.append(m.parse_fields(body))
            elif t == ERROR_RESPONSE:
                error = body
            elif t == READY_FOR_QUERY:
                if error is not None:
                    fields = m.parse_fields(error)
                    raise PgError(
                        fields.get("C", INTERNAL_ERROR),
                        fields.get("M", "?"),
                        hint=fields.get("H"),
                        fatal=fields.get("S") == "FATAL",
                    )
                return result
