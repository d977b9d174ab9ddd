"""A minimal asyncio PostgreSQL client for the state database, on pyproxy's own protocol code.

Login with auth.server_login (SCRAM-SHA-256, md5, cleartext, trust), the simple and the
extended query protocol with text parameters and text results, LISTEN/NOTIFY. A reader task
takes every message off the socket, so notifications arrive while no query runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from pyproxy.auth.scram import AuthFailed
from pyproxy.auth.server_login import ServerLogin
from pyproxy.errors import INTERNAL_ERROR
from pyproxy.proto import messages as m
from pyproxy.proto.codes import (
    AUTHENTICATION,
    DATA_ROW,
    ERROR_RESPONSE,
    NOTICE_RESPONSE,
    NOTIFICATION_RESPONSE,
    PARAMETER_STATUS,
    READY_FOR_QUERY,
    ROW_DESCRIPTION,
)

_I = struct.Struct("!I")
_H = struct.Struct("!H")
Rows = list[list[str | None]]
Notify = Callable[[str, str], None]


class PgClientError(Exception):
    """The state database refused a statement (``sqlstate`` says why)."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(f"{message} (SQLSTATE {sqlstate})")
        self.sqlstate = sqlstate


class PgConnectionLost(ConnectionError):
    """The connection to the state database is gone (or never came up)."""


@dataclass(frozen=True)
class Dsn:
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: str | None = None
    dbname: str = "postgres"
    connect_timeout: float = 5.0
    application_name: str = "pyproxy-state"


def parse_dsn(dsn: str) -> Dsn:
    """A ``postgresql://user:password@host:port/dbname?connect_timeout=N`` URL; the password
    may come from PGPASSWORD. Raises ValueError with what is wrong."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("must be a postgresql:// URL")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"connect_timeout", "application_name", "sslmode"}
    if unknown:
        raise ValueError(f"unsupported parameter(s): {', '.join(sorted(unknown))}")
    if query.get("sslmode", "disable") not in ("disable", "allow", "prefer"):
        raise ValueError("TLS to the state database is not supported; use sslmode=disable")
    try:
        port = parts.port or 5432
        timeout = float(query.get("connect_timeout", "5"))
    except ValueError as exc:
        raise ValueError(f"bad port or connect_timeout: {exc}") from None
    user = unquote(parts.username) if parts.username else os.environ.get("PGUSER", "postgres")
    password = unquote(parts.password) if parts.password is not None else None
    return Dsn(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=user,
        password=password if password is not None else os.environ.get("PGPASSWORD"),
        dbname=unquote(parts.path.lstrip("/")) or user,
        connect_timeout=timeout if timeout > 0 else 5.0,
        application_name=query.get("application_name", "pyproxy-state"),
    )


def _message(kind: bytes, body: bytes) -> bytes:
    return m.message(kind, body)


def extended_query(sql: str, params: tuple[object, ...]) -> bytes:
    """Parse, Bind (text parameters, None as NULL), Execute and Sync of the unnamed statement."""
    bind = b"\x00\x00" + _H.pack(0) + _H.pack(len(params))
    for value in params:
        if value is None:
            bind += b"\xff\xff\xff\xff"
        else:
            data = str(value).encode()
            bind += _I.pack(len(data)) + data
    bind += _H.pack(0)
    return (
        _message(b"P", b"\x00" + m.cstr(sql) + _H.pack(0))
        + _message(b"B", bind)
        + _message(b"E", b"\x00" + _I.pack(0))
        + m.SYNC
    )


class PgClient:
    """One connection. Statements run one at a time (a lock); ``on_notify(channel, payload)``
    is called for every NotificationResponse."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_notify: Notify
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._on_notify = on_notify
        self._inbox: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._lock = asyncio.Lock()  # one statement at a time
        self._tx = asyncio.Lock()  # one transaction at a time
        self._task: asyncio.Task[None] | None = None
        self.closed = False
        self.params: dict[str, str] = {}

    @classmethod
    async def connect(cls, dsn: Dsn, on_notify: Notify = lambda c, p: None) -> PgClient:
        try:
            async with asyncio.timeout(dsn.connect_timeout):
                reader, writer = await asyncio.open_connection(dsn.host, dsn.port)
                client = cls(reader, writer, on_notify)
                try:
                    await client._login(dsn)
                except BaseException:
                    client.close()
                    raise
        except TimeoutError:
            raise PgConnectionLost(
                f"no answer from {dsn.host}:{dsn.port} within {dsn.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise PgConnectionLost(f"cannot connect to {dsn.host}:{dsn.port}: {exc}") from None
        client._task = asyncio.get_running_loop().create_task(client._read_loop())
        return client

    async def _read(self) -> tuple[int, bytes]:
        head = await self._reader.readexactly(5)
        (length,) = _I.unpack(head[1:])
        return head[0], await self._reader.readexactly(length - 4)

    async def _login(self, dsn: Dsn) -> None:
        self._writer.write(
            m.startup_message(
                {"user": dsn.user, "database": dsn.dbname, "application_name": dsn.application_name}
            )
        )
        login = ServerLogin(dsn.user, dsn.password)
        while True:
            try:
                kind, body = await self._read()
            except asyncio.IncompleteReadError:
                raise PgConnectionLost("the state database closed the login") from None
            if kind == ERROR_RESPONSE:
                raise _error(body)
            if kind == AUTHENTICATION:
                try:
                    answer = login.answer(_I.unpack(body[:4])[0], body[4:])
                except AuthFailed as exc:
                    raise PgClientError(INTERNAL_ERROR, f"state database login: {exc}") from None
                if answer:
                    self._writer.write(answer)
            elif kind == PARAMETER_STATUS:
                name, value = m.parse_parameter_status(body)
                self.params[name] = value
            elif kind == READY_FOR_QUERY:
                return

    async def _read_loop(self) -> None:
        try:
            while True:
                kind, body = await self._read()
                if kind == NOTIFICATION_RESPONSE:
                    channel, end = m.split_name(body, 4)
                    payload, _ = m.split_name(body, end)
                    self._on_notify(channel.decode(), payload.decode())
                elif kind == PARAMETER_STATUS:
                    name, value = m.parse_parameter_status(body)
                    self.params[name] = value
                elif kind != NOTICE_RESPONSE:
                    self._inbox.put_nowait((kind, body))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed = True
            self._inbox.put_nowait(None)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """BEGIN ... COMMIT, with no statement of another task in between; ROLLBACK when the
        body raises. The COMMIT's answer is awaited: leaving the block means committed."""
        async with self._tx:
            await self.simple("BEGIN")
            try:
                yield
            except BaseException:
                if not self.closed:
                    try:
                        await self.simple("ROLLBACK")
                    except Exception:
                        self.close()
                raise
            await self.simple("COMMIT")

    async def simple(self, sql: str) -> Rows:
        """Run ``sql`` (one or more statements) by the simple protocol; the last result's rows."""
        return await self._exchange(m.query(sql))

    async def execute(self, sql: str, *params: object) -> Rows:
        """Run one statement by the extended protocol with text ``params``; its rows."""
        return await self._exchange(extended_query(sql, params))

    async def _exchange(self, data: bytes) -> Rows:
        async with self._lock:
            if self.closed:
                raise PgConnectionLost("the connection to the state database is closed")
            self._writer.write(data)
            try:
                return await self._collect()
            except asyncio.CancelledError:
                self.close()  # the replies still due would be taken for the next statement's
                raise

    async def _collect(self) -> Rows:
        rows: Rows = []
        error: PgClientError | None = None
        while True:
            item = await self._inbox.get()
            if item is None:
                raise PgConnectionLost("the state database closed the connection")
            kind, body = item
            if kind == DATA_ROW:
                rows.append(m.parse_data_row(body))
            elif kind == ROW_DESCRIPTION:
                rows = []
            elif kind == ERROR_RESPONSE:
                error = _error(body)
            elif kind == READY_FOR_QUERY:
                if error is not None:
                    raise error
                return rows

    def close(self) -> None:
        """Say goodbye and drop the socket (no wait)."""
        self.closed = True
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(Exception):
            if not self._writer.is_closing():
                self._writer.write(m.TERMINATE)
            self._writer.close()


def _error(body: bytes) -> PgClientError:
    fields = m.parse_fields(body)
    return PgClientError(fields.get("C", INTERNAL_ERROR), fields.get("M", "?"))
