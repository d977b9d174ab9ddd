"""The client Protocol shell: one application connection — its lifecycle, its requests to the
linked server (fast lane or general path), getting and letting go of servers, and failures."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from pyproxy.errors import PROGRAM_LIMIT_EXCEEDED, PgError, ProtocolError
from pyproxy.net import blocks, ids, lane, retry, sessions
from pyproxy.net.connect import peer_address
from pyproxy.net.login import Login
from pyproxy.net.relay import joined, pause_peer, resume_cut, resume_peer, stream_or_keep
from pyproxy.net.release import Releasing
from pyproxy.pool.figures import own_error
from pyproxy.proto import messages as m
from pyproxy.proto.codes import COPY_DATA, COPY_IN_TYPES, FRONTEND_TYPES, IDLE, TERMINATE
from pyproxy.proto.framing import count_ready
from pyproxy.proto.phases import ClientPhase, ServerPhase, client_moves
from pyproxy.session.aborted_block import AbortedBlock
from pyproxy.session.accounting import (
    BAD_LENGTH,
    BLOCK,
    FORWARDED,
    TERMINATED,
    VIOLATION,
    forward_request,
)
from pyproxy.session.analysis import (
    needs_analysis,
    needs_analysis_statement_mode,
    parse_needs_analysis,
    parse_needs_analysis_statement_mode,
)
from pyproxy.session.copyflow import drop_copy_leftovers, is_copy_leftover
from pyproxy.session.shapes import BindShape, ReplyShape, RequestShape

if TYPE_CHECKING:
    from pyproxy.net.server import ServerConn
    from pyproxy.net.state import ProxyState
    from pyproxy.pool.figures import Figures
    from pyproxy.pool.pool import Pool

log = logging.getLogger("pyproxy.client")
C = ClientPhase
WAITING, LINKED, READY = C.WAITING, C.LINKED, C.READY
WAIT_BUFFER = 256 * 1024  # bytes a queued client may send before pyproxy stops reading it
STREAMED = frozenset((COPY_DATA,))  # a cut CopyData is passed on as it arrives


class ClientConn(Releasing, asyncio.Protocol):
    """An application connection; linked to a server only while the pool mode requires."""

    figures: Figures | None = None  # its pool's, while [proxy] metrics is on

    def __init__(self, state: ProxyState) -> None:
        self.id = next(ids.clients)
        self.proxy = state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.phase = C.STARTUP
        self.login: Login | None = Login(self)
        self.user = ""
        self.database = ""
        self.peer = ""
        self.address = ""  # the peer's IP address: what the login throttle counts by
        self.params: dict[str, str] = {}  # tracked (reported) parameters
        self.pool: Pool | None = None
        self.mode = "transaction"  # the pool's mode
        self.session_mode = False
        self.statement_mode = False
        self.server: ServerConn | None = None
        self.pending_data: list[bytes] = []  # a request waiting for a server
        self.key = (0, 0)
        now = time.monotonic()
        self.connected_at = self.last_active = now
        self.wait_since = self.xact_start = self.query_start = 0.0
        self.session_xact_start = 0.0  # session mode: when the janitor first saw a transaction
        self.notified = False
        self.reading_paused = False
        self.paused_server: ServerConn | None = None
        # Requests (see pyproxy.session.accounting): an extended batch not yet closed by Sync,
        # Syncs since the last Execute, a message cut by a read (pyproxy.net.relay), leftovers
        # of a COPY the server ended, and the learnt request and reply shapes.
        self.open_ext = False
        self.copy_syncs = 0
        self.tail: bytes | bytearray = b""
        self.need = 0
        self.skip = 0
        self.discard = 0
        self.shape: RequestShape | None = None
        self.bind_shape: BindShape | None = None
        self.shape_misses = 0
        self.reply_shape: ReplyShape | None = None
        self.reply_misses = 0
        self.stmts: dict[bytes, Any] = {}  # client statement name -> shared Statement
        self.track = False  # rewrite named prepared statements (transaction/statement mode)
        self.inspect = False  # look at statements for session state
        self.needs = needs_analysis  # the pre-check of a query's text (statement mode's own)
        self.parse_needs = parse_needs_analysis
        # The session (see pyproxy.net.sessions): settings read back after its transactions,
        # startup settings not yet applied, custom names it may have set, whether to read them
        # back when the transaction ends, whether PostgreSQL has checked its startup values,
        # what pins it to its server.
        self.settings: dict[str, str] = {}
        self.options: dict[str, str] = {}
        self.custom: set[str] = set()
        self.check_state = False
        self.checked = False
        self.pinned: tuple[str, ...] = ()
        self.block: AbortedBlock | None = None  # statement mode: a refused transaction block
        self.deferred = b""  # statement mode: bytes from a BEGIN on, until earlier answers come
        # The bytes of a request sent on a server outside a transaction, kept until the first
        # byte of its answer: if the server dies first, they are sent again on a new server
        # (see pyproxy.net.retry). Session mode retries only the first request of a link.
        self.retry: bytes | None = None
        self.retries = 0
        self.retry_ok = True

    def move(self, to: ClientPhase) -> None:
        self.phase = client_moves(self.phase, to)

    def closing(self) -> bool:
        return self.phase is C.CLOSED

    # ---- connection lifecycle -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.address, self.peer = peer_address(transport)
        self.proxy.clients.add(self)
        self.proxy.watch_login(self)

    def join(self, pool: Pool) -> None:
        """Authenticated: a client of ``pool`` from now on."""
        self.pool = pool
        pool.clients.add(self)
        self.figures = pool.figures if self.proxy.config.proxy.metrics else None
        self.mode = pool.mode
        self.session_mode = self.mode == "session"
        self.statement_mode = self.mode == "statement"
        self.track = not self.session_mode and pool.settings.max_prepared_statements > 0
        self.inspect = not self.session_mode
        if self.statement_mode:
            self.needs = needs_analysis_statement_mode
            self.parse_needs = parse_needs_analysis_statement_mode

    def logged_in(self) -> None:
        self.login = None
        self.move(C.READY)
        self.last_active = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        prev = self.phase
        self.move(C.CLOSED)
        self.proxy.clients.discard(self)
        self.proxy.cancels.forget(self.key)
        self.proxy.login_done(self)
        pool = self.pool
        if pool is not None:
            pool.clients.discard(self)
            pool.pinned.discard(self)
            if prev is C.WAITING:
                pool.cancel_wait(self)
        resume_peer(self.paused_server)
        self.paused_server = None
        server = self.server
        self.server = None
        if server is not None and not server.closed:
            self._give_back(server)

    def close_quietly(self) -> None:
        self.move(C.CLOSED)
        self.transport.close()

    def fatal(self, err: PgError) -> None:
        """Send an error and close (FATAL)."""
        if self.phase is C.CLOSED or self.transport is None:
            return
        own_error(self.pool, err.sqlstate)
        self.transport.write(
            m.error_response(
                err.sqlstate, err.message, severity="FATAL", detail=err.detail, hint=err.hint
            )
        )
        self.close_quietly()

    def kick(self, err: PgError) -> None:
        """End this client from outside (pool deleted, shutdown, a timeout)."""
        server, self.server = self.server, None
        if server is not None and not server.closed:
            self._give_back(server)
        self.fatal(err)

    def violation(self, kind: int) -> None:
        """A message type no frontend may send now: FATAL 08P01 to this client; a server it
        holds is closed, since nothing may come back from it to anyone else."""
        log.info("[c%d] invalid frontend message type %d", self.id, kind)
        self._close_server("client protocol violation")
        self.fatal(ProtocolError(f"invalid frontend message type {kind}"))

    def _bad_length(self, kind: int, ln: int) -> None:
        self._close_server("client protocol violation")
        if ln > 4:
            limit = self.proxy.config.proxy.max_packet_size
            self.fatal(
                PgError(
                    PROGRAM_LIMIT_EXCEEDED,
                    f"message of type {chr(kind)!r} with {ln} bytes exceeds max_packet_size "
                    f"({limit})",
                    fatal=True,
                )
            )
        else:
            self.fatal(ProtocolError(f"invalid message length {ln} (type {chr(kind)!r})"))

    def _close_server(self, reason: str) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.unlink()
        if server.pending > 0 or self.open_ext:
            self.proxy.cancels.cancel_backend(server)
        if server.pool is not None:
            server.pool.close_server(server, reason)
        else:
            server.close(reason)

    def notice_unsafe(self, statement: str, why: str, hint: str) -> None:
        self.notice(f"{statement} is unsafe in {self.mode} pooling mode: {why}", hint=hint)

    def notice(self, text: str, hint: str | None = None) -> None:
        if self.phase is not C.CLOSED:
            self.transport.write(m.notice_response(text, hint=hint))

    def pin_description(self) -> str:
        """Who this pinned client is and what pins it, for NOTICEs and logs."""
        app = self.params.get("application_name")
        named = f", application_name {app!r}" if app else ""
        return f"client {self.id} ({self.user}@{self.peer}{named}: {', '.join(self.pinned)})"

    # ---- flow control: a slow client pauses its server, and the other way round ---------------

    def pause_writing(self) -> None:
        self.paused_server = pause_peer(self.server)

    def resume_writing(self) -> None:
        server, self.paused_server = self.paused_server, None
        resume_peer(server)

    # ---- incoming bytes -------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """The client's bytes: to the linked server by the fast lane or the general path
        (other phases: ``_unlinked_data``)."""
        figures = self.figures
        if figures is not None:
            figures.received += len(data)
        if self.phase is LINKED:
            if not lane.request(self, data):
                self.forward(data)
        else:
            self._unlinked_data(data)

    def forward(self, data: bytes) -> None:
        """The general path to the linked server (pyproxy.session.accounting)."""
        server = self.server
        assert server is not None
        st = server.transport
        if self.skip or self.tail:
            resumed = resume_cut(self, data, st)
            if not resumed:
                return
            data = resumed
        lane.begin(self, server, data)
        out, off, outcome, detail = forward_request(self, server, data)
        n = len(data)
        if outcome == VIOLATION:
            self.violation(detail)
            return
        if outcome == BAD_LENGTH:
            self._bad_length(data[off], detail)
            return
        if outcome == FORWARDED and off < n and stream_or_keep(self, data, off, STREAMED) > off:
            out.append(data[off:])
        if out:
            st.write(out[0] if len(out) == 1 else b"".join(out))
        if outcome == TERMINATED:
            self.transport.close()  # the server stays ours to give back
        elif outcome == BLOCK:
            blocks.defer(self, data[off:])

    def _unlinked_data(self, data: bytes) -> None:
        phase = self.phase
        try:
            if phase is C.READY:
                self._ready_data(data)
            elif phase is C.WAITING:
                # Queued: keep what arrives, but stop reading once it is a lot.
                self.pending_data.append(data)
                if not self.reading_paused and sum(map(len, self.pending_data)) > WAIT_BUFFER:
                    self.reading_paused = True
                    self.transport.pause_reading()
            elif phase is C.BLOCKED:
                blocks.feed(self, data)
            elif self.login is not None:
                self.login.feed(data)
        except PgError as err:
            log.info("[c%d] %s", self.id, err.message)
            if err.fatal:
                self.fatal(err)
            else:
                own_error(self.pool, err.sqlstate)
                self.transport.write(
                    m.error_response(err.sqlstate, err.message, detail=err.detail, hint=err.hint)
                    + m.READY_IDLE
                )

    def _ready_data(self, data: bytes) -> None:
        """A request while no server is linked."""
        pool = self.pool
        assert pool is not None
        if pool.waiters and not (
            self.discard or self.tail or self.statement_mode or data[0] in _NOT_PLAIN_FIRST
        ):
            # A busy pool and a plain request: wait behind the clients already queued.
            self.pending_data.append(data)
            self.move(WAITING)
            self.wait_since = time.monotonic()
            pool.acquire(self)
            return
        if self.discard or self.tail or data[0] in COPY_IN_TYPES:
            if is_copy_leftover(self.tail or data, self.discard):
                data, self.discard, self.tail = drop_copy_leftovers(
                    bytes(self.tail) + data, self.discard
                )
                if not data:
                    return
        elif data[0] not in FRONTEND_TYPES:
            self.violation(data[0])
            return
        elif self.statement_mode and blocks.opens_block_at(self, data):
            blocks.enter(self, data)
            return
        if self.tail:
            whole = joined(self, data)
            if whole is None:
                return
            data = whole
        if data[0] == TERMINATE:
            self.transport.close()
            return
        if not self.options and not pool.waiters:
            server = pool.take_idle()
            if server is not None:
                if sessions.needs_alignment(self, server):
                    self.pending_data.append(data)
                    self.move(C.WAITING)
                    self.wait_since = time.monotonic()
                    self.on_server(server)
                else:
                    self.server = server
                    server.pending = 0
                    server.link(self, None)
                    self.move(C.LINKED)
                    if not lane.request(self, data):
                        self.forward(data)
                return
        self.pending_data.append(data)
        self.move(C.WAITING)
        self.wait_since = time.monotonic()
        pool.acquire(self)

    # ---- getting a server ------------------------------------------------------------------------

    def wants_server(self) -> bool:
        """Is this client still waiting for the server the pool opens for it?"""
        return self.phase is C.WAITING

    def on_server(self, server: ServerConn) -> None:
        """The pool hands us a server (maybe synchronously from ``acquire``)."""
        if self.phase is not WAITING:
            # We went away while queued; hand the server straight back.
            server.unlink()
            if server.pool is not None:
                server.pool.release(server)
            return
        self.server = server
        server.pending = 0
        if (
            self.params == server.tracked_values
            and self.settings == server.settings
            and not self.options
        ):
            server.link(self, None)  # nothing to align: the usual case
            self.server_ready()
            return
        sql, wait = sessions.alignment(self, server)
        server.link(self, sql or None, wait)
        if not sql or not wait:
            self.server_ready()  # nothing to wait for: the request follows at once

    def aligned(self, rows: list[list[str | None]]) -> None:
        sessions.aligned(self, rows)

    def server_ready(self) -> None:
        """The server is ours: what waited goes to it."""
        self.move(LINKED)
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        queued = self.pending_data
        data = queued[0] if len(queued) == 1 else b"".join(queued)
        queued.clear()
        if data:
            if not lane.request(self, data):
                self.forward(data)
            self.query_start = self.wait_since  # query_timeout counts the time queued

    def reclaimable(self) -> bool:
        """Between transactions, keeping its server only because nobody else needed it (the
        pool may take it back; see Pool.reclaim_kept)."""
        server = self.server
        return (
            server is not None
            and self.phase is C.LINKED
            and not self.session_mode
            and not self.pinned
            and not self.check_state
            and not self.open_ext
            and not self.skip
            and not self.tail
            and server.pending <= 0
            and server.status == IDLE
            and server.phase is ServerPhase.LINKED
        )

    def in_flight(self) -> bool:
        """Has this client a query queued or running, or a transaction open?"""
        if self.phase is C.WAITING:
            return True
        server = self.server
        if server is None or self.phase is C.CLOSED:
            return False
        return server.pending > 0 or server.status != IDLE or self.open_ext

    def give_up_server(self) -> None:
        """The pool takes back the server this client kept between transactions."""
        server, self.server = self.server, None
        self.move(C.READY)
        if server is not None:
            server.unlink()

    def drop_server(self) -> None:
        """Give back a server held with nothing pending (kept between transactions, or just
        linked); a pinned client keeps its server."""
        server = self.server
        if server is None or self.pinned:
            return
        self.server = None
        server.unlink()
        if server.pool is not None:
            server.pool.release(server)
        else:
            server.close("pool gone")

    # ---- failures -------------------------------------------------------------------------------

    def answered(self) -> None:
        retry.answered(self)

    def server_failed(self, err: PgError, mid_message: bool = False) -> None:
        retry.server_failed(self, err, mid_message)

    def on_wait_error(self, err: PgError) -> None:
        """The pool could not give us a server (timeout, server down, cancel, pool deleted)."""
        if self.phase is C.CLOSED:
            return
        if err.fatal:
            self.fatal(err)
            return
        own_error(self.pool, err.sqlstate)
        data = b"".join(self.pending_data)
        self.pending_data.clear()
        units = max(count_ready(data), 1)
        out = [m.error_response(err.sqlstate, err.message)]
        out.extend([m.READY_IDLE] * units)
        self.transport.write(b"".join(out))
        self.move(C.READY)
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()


# A first byte that needs more than queueing: COPY leftovers, a type no frontend may send now,
# a Terminate.
_NOT_PLAIN_FIRST = frozenset(range(256)) - FRONTEND_TYPES | COPY_IN_TYPES | {TERMINATE}
