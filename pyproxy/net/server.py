"""The server Protocol shell: one PostgreSQL backend connection, relaying replies to the client
linked to it, running pyproxy's own queries (alignment, read-back, rollback, reset, check)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from pyproxy.errors import (
    CONNECTION_FAILURE,
    INVALID_PARAMETER_VALUE,
    PROTOCOL_VIOLATION,
    PgError,
)
from pyproxy.net import ids, lane
from pyproxy.net.relay import pause_peer, resume_cut, resume_peer, stream_or_keep
from pyproxy.pool.pool import Place
from pyproxy.proto import messages as m
from pyproxy.proto.codes import (
    BIND_COMPLETE,
    COMMAND_COMPLETE,
    COPY_DATA,
    DATA_ROW,
    EMPTY_QUERY_RESPONSE,
    ERROR_RESPONSE,
    FATAL_SEVERITIES,
    IDLE,
    NO_DATA,
    NOTICE_RESPONSE,
    PARAMETER_DESCRIPTION,
    PARAMETER_STATUS,
    PARSE_COMPLETE,
    PORTAL_SUSPENDED,
    QUERY,
    READY_FOR_QUERY,
    ROW_DESCRIPTION,
)
from pyproxy.proto.framing import length_at, walk
from pyproxy.proto.phases import ServerPhase, server_moves
from pyproxy.session.accounting import FATAL_WHILE_KEPT, LINK_ENDS, relay_reply
from pyproxy.session.prepared import ServerStatements

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn
    from pyproxy.pool.pool import Pool

log = logging.getLogger("pyproxy.server")
S = ServerPhase
LINKED = S.LINKED
STREAMED = frozenset((DATA_ROW, COPY_DATA))  # cut messages passed on as they arrive
# While a reply holds only these, a FATAL after them means the statement did not complete
# (ParseComplete, BindComplete, ParameterDescription, RowDescription, NoData, DataRow) ...
NO_ANSWER_YET = frozenset(
    (PARSE_COMPLETE, BIND_COMPLETE, PARAMETER_DESCRIPTION, ROW_DESCRIPTION, NO_DATA, DATA_ROW)
)
# ... and for an extended-protocol request, whose implicit transaction commits at its Sync, after
# CommandComplete, PortalSuspended or EmptyQueryResponse too: a FATAL before its ReadyForQuery
# means it was rolled back.
NOT_COMMITTED_YET = NO_ANSWER_YET | {COMMAND_COMPLETE, PORTAL_SUSPENDED, EMPTY_QUERY_RESPONSE}
HOLD_REPLY = 64 * 1024  # bytes of such a reply kept back at most


class ServerConn(asyncio.Protocol):
    """A logged-in server connection that relays to at most one linked client at a time."""

    __slots__ = (
        "after",
        "cancels",
        "checked",
        "client",
        "closed",
        "copy_in",
        "created",
        "fatal",
        "held_reply",
        "id",
        "idle_since",
        "link_gen",
        "login",
        "max_packet",
        "need",
        "param_names",
        "params",
        "paused_client",
        "pending",
        "phase",
        "pid",
        "place",
        "pool",
        "ready_at",
        "reset_sql",
        "secret",
        "settings",
        "skip",
        "stale",
        "status",
        "stmts",
        "swallow_error",
        "swallow_rows",
        "tail",
        "tracked_keys",
        "tracked_values",
        "transport",
    )

    def __init__(
        self, pool: Pool, *, max_packet: int, tracked: frozenset[str] = frozenset()
    ) -> None:
        self.id = next(ids.servers)
        self.pool: Pool | None = pool
        self.transport: asyncio.Transport | None = None
        self.client: ClientConn | None = None
        self.phase = S.LOGIN
        self.place = Place.NONE  # where it sits in its pool (the pool alone changes it)
        self.checked = False  # running the health check the pool asked for
        self.login: Any = None  # the login driver (pyproxy.net.connect) until logged in
        self.params: dict[str, str] = {}
        self.param_names: dict[str, str] = {}
        self.tracked_keys = tracked
        self.tracked_values: dict[str, str] = {}  # the tracked subset of params
        self.pid = 0
        self.secret = 0
        now = time.monotonic()
        self.created = now
        self.idle_since = now
        self.ready_at = now
        self.closed = False
        self.stale = False
        self.pending = 0  # ReadyForQuery messages the linked client still expects
        self.status = IDLE  # the last ReadyForQuery's transaction status
        self.link_gen = 0
        self.max_packet = max_packet
        self.stmts = ServerStatements(max(pool.settings.max_prepared_statements, 1))
        self.settings: dict[str, str] = {}  # session settings changed since login
        self.reset_sql = ""  # to run before another client may have it (see Pool.release)
        self.cancels = 0  # cancel requests forwarded for it, not yet closed by PostgreSQL
        # 1 + the ReadyForQuery count when it announced COPY IN (CopyInResponse), 0 when the
        # client ended it: only a CopyDone/CopyFail ending a COPY IN announced since the last
        # ReadyForQuery makes the Syncs the client sent during the COPY void.
        self.copy_in = 0
        self.tail: bytes | bytearray = b""  # see pyproxy.net.relay
        self.need = 0
        self.skip = 0
        self.fatal: dict[str, str] | None = None  # a FATAL it sent, held back until it closes
        self.held_reply = b""  # the start of a reply kept back while it may still be retried
        self.paused_client: Any = None
        self.after: Any = None  # called with (error, rows) when pyproxy's own query is answered
        self.swallow_error: dict[str, str] | None = None
        self.swallow_rows: list[list[str | None]] = []

    @property
    def held(self) -> bool:
        """Kept by its client between transactions, only because nobody else needs it."""
        client = self.client
        return client is not None and client.reclaimable()

    def set_param(self, name: str, value: str) -> str:
        key = name.lower()
        self.params[key] = value
        self.param_names[key] = name
        if key in self.tracked_keys:
            self.tracked_values[key] = value
        return key

    def move(self, to: ServerPhase) -> None:
        self.phase = server_moves(self.phase, to)

    def pool_login_user(self) -> str:
        return self.pool.login_user if self.pool is not None else ""

    # ---- login ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.login.startup)  # type: ignore[attr-defined]

    async def wait_login(self) -> ServerConn:
        if self.login is None:
            return self  # the whole login arrived before anyone waited for it
        return await self.login.done  # type: ignore[no-any-return]

    # ---- linking --------------------------------------------------------------------------------

    def link(self, client: ClientConn, sync_sql: str | None, wait: bool = True) -> None:
        """Attach ``client``; with ``sync_sql`` first align its session (responses unseen).

        ``wait``: the client's requests follow once the alignment is answered (its startup
        values are checked by PostgreSQL, an error ends its login); otherwise they are sent
        right behind it, and the relay starts after its ReadyForQuery.
        """
        self.client = client
        self.link_gen += 1
        if sync_sql:
            self.move(S.SYNC)
            self._swallow(sync_sql, self._sync_done if wait else self._aligned)
        elif self.phase is not LINKED:  # (handed from client to client, it stays linked)
            self.move(LINKED)

    def _sync_done(self, error: dict[str, str] | None, rows: list[list[str | None]]) -> None:
        client = self.client
        if error is not None:
            log.warning("[s%d] could not apply session parameters: %s", self.id, error.get("M"))
            if client is not None:
                client.server_failed(
                    PgError(error.get("C", INVALID_PARAMETER_VALUE), error.get("M", "?"))
                )
            self.close("parameter sync failed")
            return
        if client is None:  # the client left meanwhile
            self._back_to_pool()
            return
        self.move(S.LINKED)
        client.aligned(rows)
        client.server_ready()

    def _aligned(self, error: dict[str, str] | None, rows: list[list[str | None]]) -> None:
        """A pipelined alignment is answered: what follows answers the client."""
        if error is not None:
            log.warning("[s%d] could not align session settings: %s", self.id, error.get("M"))
        self.relink()

    def read_state(self, sql: str, then: Any) -> None:
        """Run ``sql`` for the linked client, unseen by it and before anything it sends next;
        ``then(error, rows)`` gets its answer and puts the link back (``relink``)."""
        self.move(S.READBACK)
        self._swallow(sql, then)

    def relink(self) -> None:
        """After pyproxy's own query: relay to the client again, or go back to the pool if the
        client left meanwhile. A connection lost meanwhile is already forgotten."""
        if self.phase is S.CLOSED:
            return
        if self.client is not None:
            self.move(S.LINKED)
        else:
            self._back_to_pool()

    def _back_to_pool(self) -> None:
        if self.phase is S.CLOSED:  # lost meanwhile: the pool has forgotten it
            return
        self.move(S.IDLE)
        if self.pool is not None:
            self.pool.release(self)

    def unlink(self) -> None:
        self.client = None
        if self.phase is not S.CLOSED:
            self.move(S.IDLE)

    # ---- pyproxy's own queries -----------------------------------------------------------------

    def _swallow(self, sql: str, then: Any) -> None:
        """Send a simple query whose responses the client must not see; call
        ``then(error, rows)`` with its first error and its rows."""
        self.after = then
        self.swallow_error = None
        self.swallow_rows = []
        assert self.transport is not None
        self.transport.write(m.query(sql))

    def clean(self, sql: str) -> None:
        """Run ``sql`` (ROLLBACK, a reset query) unseen by any client, then back to the pool's
        release path; a failure, or a transaction still open after it, closes the server."""
        self.client = None
        self.move(S.ROLLBACK if sql == "ROLLBACK" else S.RESET)
        self._swallow(sql, self._cleaned)

    def check(self) -> None:
        """Health check before reuse of a long-idle server: an empty query."""
        self.move(S.CHECK)
        self._swallow("", self._cleaned)

    def _cleaned(self, error: dict[str, str] | None, rows: list[list[str | None]]) -> None:
        was_reset = self.phase is S.RESET
        if error is not None or self.status != IDLE:
            self.close(f"{'rollback' if self.status != IDLE else 'reset'} failed")
            return
        if was_reset:  # e.g. DISCARD ALL: settings and prepared statements are gone
            self.settings = {}
            self.stmts.forget_all()
        self._back_to_pool()

    def _swallowed(self, data: bytes) -> None:
        """Responses to pyproxy's own query."""
        if self.tail:
            data = bytes(self.tail) + data
        found, stop = walk(data, 0, self.max_packet)
        self.tail = data[stop:]
        for kind, off, end in found:
            if kind == READY_FOR_QUERY:
                self.status = data[end - 1]
                self.tail = data[end:]
                then, self.after = self.after, None
                if then is not None:
                    then(self.swallow_error, self.swallow_rows)
                if self.tail and self.phase is S.LINKED:
                    rest, self.tail = self.tail, b""
                    self.data_received(rest)
                return
            body = data[off + 5 : end]
            if kind == DATA_ROW:
                self.swallow_rows.append(m.parse_data_row(body))
            elif kind == PARAMETER_STATUS:
                key = self.set_param(*m.parse_parameter_status(body))
                if self.client is not None and key in self.tracked_keys:
                    self.client.params[key] = self.params[key]
            elif kind == ERROR_RESPONSE and self.swallow_error is None:
                self.swallow_error = m.parse_fields(body)
            elif kind == NOTICE_RESPONSE:
                log.warning("[s%d] %s", self.id, m.parse_fields(body).get("M", "?"))

    # ---- data from PostgreSQL -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Replies for the linked client: the fast lane when it applies, else the general
        relay (other phases: ``_unlinked_data``)."""
        if self.phase is not LINKED:
            self._unlinked_data(data)
        elif not lane.reply(self, data):
            self._relay(data)

    def _unlinked_data(self, data: bytes) -> None:
        phase = self.phase
        if phase is S.LOGIN:
            if self.login.feed(data):
                self.login = None
                self.move(S.IDLE)
        elif phase is S.IDLE:
            self._idle_data(data)
        elif phase is not S.CLOSED:
            self._swallowed(data)

    def _idle_data(self, data: bytes) -> None:
        """An unlinked server spoke: usually a FATAL before PostgreSQL closes it."""
        if self.tail:
            data = bytes(self.tail) + data
        try:
            found, stop = walk(data, 0, self.max_packet)
        except PgError as err:  # not messages (e.g. the rest of one cut at a link's end)
            self.protocol_error(err.message)
            return
        self.tail = data[stop:]
        for kind, off, end in found:
            if kind != ERROR_RESPONSE:
                continue
            fields = m.parse_fields(data[off + 5 : end])
            log.info("[s%d] idle server said: %s %s", self.id, fields.get("C"), fields.get("M"))
            if fields.get("S") in ("FATAL", "PANIC"):
                # PostgreSQL is closing it (e.g. pg_terminate_backend): out of the pool now,
                # before the connection's end arrives and a client could be given it.
                self.close("server sent FATAL while idle")
                return

    def _relay(self, data: bytes) -> None:
        """The general relay: replies walked message by message (pyproxy.session.accounting)."""
        client = self.client
        assert client is not None
        figures = client.figures
        if figures is not None:
            figures.sent += len(data)
        if client.retry is not None:
            data = self._first_reply(client, data)
            if not data:
                return
        elif self.held_reply:  # held back, then the client sent more: no retry, it goes on
            data, self.held_reply = self.held_reply + data, b""
        ct = client.transport
        if self.skip or self.tail:
            resumed = resume_cut(self, data, ct)
            if not resumed:
                return
            data = resumed
        self.ready_at = time.monotonic()  # (what matters is the last ReadyForQuery's time)
        out, off, event = relay_reply(client, self, data)
        if event == LINK_ENDS:
            if off < len(data):
                log.debug("[s%d] %d bytes after a final ReadyForQuery", self.id, len(data) - off)
            client.release_server(b"".join(out))
            return
        if event == FATAL_WHILE_KEPT:
            # Dying while kept between transactions: the client's next statement gets another
            # server, as if this one had been idle.
            client.give_up_server()
            if self.pool is not None:
                self.pool.close_server(self, "server sent FATAL while kept between transactions")
            return
        if self.closed:
            return
        if off < len(data) and stream_or_keep(self, data, off, STREAMED) > off:
            out.append(data[off:])
        if out:
            ct.write(out[0] if len(out) == 1 else b"".join(out))

    def _first_reply(self, client: ClientConn, data: bytes) -> bytes:
        """The first bytes answering a request the client may send again elsewhere (see
        ``ClientConn.retry``); returns what to relay now.

        Until the reply holds more than statement descriptions and rows (a command's
        completion, an error, a notice, a parameter change, COPY; for an extended-protocol
        request, up to its ReadyForQuery, since its Sync commits), the server may still die
        with nothing done: a FATAL then means the statement did not complete, so its bytes
        are dropped, the connection is closed and ``connection_lost`` lets the client send the
        request again. Such a reply is kept back (up to ``HOLD_REPLY`` bytes) until it goes
        further; a read that ends with ReadyForQuery cannot hold a FATAL and goes at once.
        """
        held = self.held_reply
        if held:
            data = held + data
            self.held_reply = b""
        n = len(data)
        if n >= 6 and data[n - 6] == READY_FOR_QUERY and data[n - 5 : n - 1] == m.READY_LENGTH:
            client.answered()
            return data
        retry = client.retry
        pending = NO_ANSWER_YET if retry is None or retry[0] == QUERY else NOT_COMMITTED_YET
        off = 0
        while n - off >= 5:
            kind = data[off]
            if kind in pending:
                off += 1 + length_at(data, off)[0]
                continue
            if kind == ERROR_RESPONSE and data[off + 6 : off + 11] in FATAL_SEVERITIES:
                end = off + 1 + length_at(data, off)[0]
                self.fatal = m.parse_fields(data[off + 5 : end]) if end <= n else None
                self.close_transport()
                return b""
            break
        else:
            # Descriptions and rows so far (maybe cut): wait for more, unless the client has
            # not ended its request with Sync (it may wait for these before sending more).
            if n <= HOLD_REPLY and not client.open_ext:
                self.held_reply = data
                return b""
        client.answered()
        return data

    def protocol_error(self, text: str) -> None:
        log.error("[s%d] protocol error from server: %s", self.id, text)
        self.fatal = {"C": PROTOCOL_VIOLATION, "M": f"server protocol error: {text}"}
        self.close_transport()

    # ---- closing --------------------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        resume_peer(self.paused_client)
        self.paused_client = None
        was_login = self.phase is S.LOGIN
        self.phase = S.CLOSED
        self.closed = True
        if was_login and self.login is not None:
            self.login.lost()
        client = self.client
        self.client = None
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.forget(self)
        if client is not None:
            fatal = self.fatal or {}
            err = PgError(
                fatal.get("C", CONNECTION_FAILURE),
                fatal.get("M", "server connection closed unexpectedly"),
                detail="pyproxy dropped the server connection; the next statement gets a new one",
            )
            client.server_failed(err, mid_message=self.skip > 0)
        if pool is not None:
            pool.grow()  # after the client, which may have taken the dead server's place
        then, self.after = self.after, None
        if then is not None and not was_login:
            then({"C": CONNECTION_FAILURE, "M": "server connection lost"}, [])

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        log.debug("[s%d] closing server connection: %s", self.id, reason)
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(m.TERMINATE)
        self.close_transport()
        pool = self.pool
        if pool is not None:
            pool.discard(self)

    def close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused_client = pause_peer(self.client)

    def resume_writing(self) -> None:
        client, self.paused_client = self.paused_client, None
        resume_peer(client)
