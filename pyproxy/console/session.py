"""The console as the client listener sees it: who may log in, the greeting, and each console
client's messages (simple query protocol) answered in order."""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from pyproxy import __version__
from pyproxy.config import Config
from pyproxy.console import show as V
from pyproxy.console.commands import HINT, USAGE, Actions, Answer, Commands
from pyproxy.console.periods import Periods
from pyproxy.errors import FEATURE_NOT_SUPPORTED, INTERNAL_ERROR, PgError, ProtocolError
from pyproxy.pool.registry import PoolRegistry
from pyproxy.proto import messages as m
from pyproxy.proto.codes import (
    BIND,
    CLOSE,
    DESCRIBE,
    EXECUTE,
    FLUSH,
    PARSE,
    QUERY,
    SYNC,
    TERMINATE,
)
from pyproxy.proto.framing import MessageFramer

log = logging.getLogger("pyproxy.console")
DATABASES = frozenset({"pgbouncer", "pyproxy"})
EXTENDED = frozenset({PARSE, BIND, DESCRIBE, EXECUTE, CLOSE, FLUSH})
_CONSOLE_PARAMS = {
    "server_version": f"{__version__}/pyproxy",
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "DateStyle": "ISO",
    "TimeZone": "UTC",
    "IntervalStyle": "postgres",
    "standard_conforming_strings": "on",
    "integer_datetimes": "on",
    "is_superuser": "off",
}


class _Session:
    """One console client: its role, its framer, the messages not answered yet, a command
    running."""

    def __init__(self, role: str, max_packet: int) -> None:
        self.role = role
        self.framer = MessageFramer(max_packet)
        self.queue: deque[tuple[int, bytes]] = deque()
        self.busy = False
        self.extended_error = False  # an extended-protocol message seen since the last Sync


class Console:
    """The admin console: databases ``pgbouncer`` and ``pyproxy`` on the client listener."""

    databases = DATABASES

    def __init__(
        self,
        registry: PoolRegistry,
        config: Callable[[], Config],
        clients: Callable[[], list[Any]],
        actions: Actions,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
    ) -> None:
        self.config = config
        self.clients = clients
        self.spawn = spawn
        self.periods = Periods()
        self.commands = Commands(registry, config, self._view, clients, actions)
        self.registry = registry
        self._sessions: weakref.WeakKeyDictionary[Any, _Session] = weakref.WeakKeyDictionary()

    def _view(self) -> V.View:
        return V.View(self.registry, self.clients(), self.config(), self.periods)

    def role(self, user: str) -> str | None:
        """ "admin", "stats" or None (not a console user)."""
        proxy = self.config().proxy
        if user in proxy.admin_users:
            return "admin"
        if user in proxy.stats_users:
            return "stats"
        return None

    def greeting(self, application_name: str) -> bytes:
        """AuthenticationOk and the ParameterStatus set a console client starts with."""
        params = {**_CONSOLE_PARAMS, "application_name": application_name}
        return m.AUTH_OK_MSG + b"".join(m.parameter_status(k, v) for k, v in params.items())

    # ---- messages ---------------------------------------------------------------------------

    def attach(self, client: Any, role: str) -> None:
        """A logged-in console client of ``role``: its connection's bytes come here from now
        on (its transport's protocol is swapped; the client object stays the connection's
        owner for SHOW CLIENTS, KILL_CLIENT, flow control and its end)."""
        self._sessions[client] = _Session(role, self.config().proxy.max_packet_size)
        client.transport.set_protocol(_ConsoleProtocol(self, client))

    def feed(self, client: Any, data: bytes) -> None:
        session = self._sessions.get(client)
        if session is None:
            client.close_quietly()
            return
        try:
            session.queue.extend(session.framer.feed(data))
        except PgError as err:
            client.fatal(err)
            return
        self._drain(client, session)

    def _drain(self, client: Any, session: _Session) -> None:
        """Answer queued messages in order; a command that waits (PAUSE) holds the rest."""
        while session.queue and not session.busy and not client.closing():
            kind, body = session.queue.popleft()
            if kind == QUERY:
                self._query(client, session, bytes(body[:-1]).decode("utf-8", "replace"))
            elif kind == SYNC:
                out = b""
                if session.extended_error:
                    session.extended_error = False
                    out = m.error_response(
                        FEATURE_NOT_SUPPORTED,
                        "extended query protocol not supported by the admin console",
                        hint="use the simple query protocol (psql, or psycopg's ClientCursor)",
                    )
                client.transport.write(out + m.READY_IDLE)
            elif kind in EXTENDED:
                session.extended_error = True
            elif kind == TERMINATE:
                client.transport.close()
                return
            else:
                client.fatal(ProtocolError(f"invalid frontend message type {kind}"))
                return

    def _query(self, client: Any, session: _Session, text: str) -> None:
        statements = [s for s in text.split(";") if s.strip()]
        if not statements:
            client.transport.write(m.EMPTY_QUERY_RESPONSE + m.READY_IDLE)
            return
        session.busy = True
        self.spawn(self._run(client, session, statements))

    async def _run(self, client: Any, session: _Session, statements: list[str]) -> None:
        out: list[bytes] = []
        try:
            for text in statements:
                answer = self.commands.run(text, session.role, client.user)
                if inspect.isawaitable(answer):
                    answer = await answer
                if answer is None:  # SHUTDOWN: the connection ends with the proxy
                    return
                out.append(_encode(answer))
        except PgError as err:
            out.append(m.error_response(err.sqlstate, err.message, detail=err.detail,
                                        hint=err.hint))  # fmt: skip
        except Exception as exc:  # a bug: this client gets an error, the proxy goes on
            log.exception("[c%d] console command failed", client.id)
            out.append(m.error_response(INTERNAL_ERROR, f"internal error: {exc!r}"))
        finally:
            session.busy = False
        if client.closing():
            return
        client.transport.write(b"".join(out) + m.READY_IDLE)
        self._drain(client, session)


class _ConsoleProtocol(asyncio.Protocol):
    """A console client's connection after login: bytes to the console, the rest to the client
    object."""

    def __init__(self, console: Console, client: Any) -> None:
        self.console = console
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.console.feed(self.client, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.connection_lost(exc)

    def pause_writing(self) -> None:
        self.client.pause_writing()

    def resume_writing(self) -> None:
        self.client.resume_writing()


def _encode(answer: Answer) -> bytes:
    if isinstance(answer, str):
        if answer == "HELP":
            return m.notice_response("Console usage", detail="\n\t".join(("", *USAGE))) + (
                m.command_complete("SHOW")
            )
        return m.command_complete(answer)
    assert answer is not None
    columns, rows = answer
    parts = [columns.description, *(m.data_row(r) for r in rows), m.command_complete("SHOW")]
    return b"".join(parts)


__all__ = ["HINT", "Console"]
