"""Server side: one asyncio Protocol per PostgreSQL backend connection (login, relay, reset)."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from itertools import islice
from typing import TYPE_CHECKING, Any

from pyproxy.auth.md5 import md5_response
from pyproxy.auth.scram import AuthFailed, ScramClient
from pyproxy.errors import (
    CONNECTION_FAILURE,
    INVALID_PASSWORD,
    PROTOCOL_VIOLATION,
    SQLCLIENT_UNABLE_TO_ESTABLISH,
    PgError,
)
from pyproxy.pool.prepared import AS_PARSE, PARSE_COMPLETE, ServerStatements
from pyproxy.proto import messages as m
from pyproxy.proto.framing import MessageFramer, length_at

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn
    from pyproxy.pool.pool import Pool

log = logging.getLogger("pyproxy.server")
_unpack_len = struct.Struct("!I").unpack_from

# States
LOGIN, IDLE, LINKED, SYNC, RESET, CHECK, ROLLBACK, CLOSED, READBACK = range(9)
_PASSTHROUGH = frozenset(b"Dd")  # types whose partial bodies may be forwarded as they arrive
_DYING = (b"FATAL", b"PANIC")
# Reply messages that complete nothing: while a reply holds only these, a FATAL after them
# means the statement did not complete (ParseComplete, BindComplete, ParameterDescription,
# RowDescription, NoData, DataRow).
_NO_ANSWER_YET = frozenset(b"12tTnD")
_RFQ_LENGTH = b"\x00\x00\x00\x05"
HOLD_REPLY = 64 * 1024  # bytes of such a reply kept back at most

# What the relay does per message type (0: just forward).
_RFQ, _PARAM, _PARSE_CLOSE, _ERROR, _COPY_IN = 1, 2, 3, 4, 5
_KIND = bytes(
    {90: _RFQ, 83: _PARAM, 49: _PARSE_CLOSE, 51: _PARSE_CLOSE, 69: _ERROR, 71: _COPY_IN}.get(t, 0)
    for t in range(256)
)

_ids = iter(range(1, 1 << 62))


def _learn_reply(client: ClientConn, data: bytes) -> None:
    """Remember the shape of a whole reply ending in its only ReadyForQuery (the relay has
    walked it: the last six bytes are that message), if it holds nothing but plain messages,
    ParseComplete/CloseComplete and DataRows: the bytes before its first run of DataRows,
    the bytes after that run and their lengths, the ParseCompletes and CloseCompletes (each
    pops the client's own statement-queue entry) and the final status.

    A reply that starts and ends with the same bytes and has only DataRows in between (how a
    repeated statement is answered) then needs no walk. Called for one walked reply in eight,
    so that replies that never repeat cost little.
    """
    n = len(data)
    off = 0
    pops = 0
    rows_at = rows_end = n - 6  # no rows: an empty run just before the ReadyForQuery
    while off < n - 6:
        kind = data[off]
        end = off + 1 + length_at(data, off)[0]
        if kind == 68:
            if rows_at == n - 6:
                rows_at = off
                rows_end = end
            elif rows_end == off:  # the first run goes on; later rows are in the tail
                rows_end = end
        elif kind == 49 or kind == 51:
            pops += 1
        elif _KIND[kind]:
            return  # a ReadyForQuery before the last, a ParameterStatus or an error
        off = end
    client.reply_shape = (
        data[:rows_at],
        data[rows_end:],
        rows_at,
        n - rows_end,
        pops,
        data[n - 1],
    )


class ServerConn(asyncio.Protocol):
    """A logged-in server connection that relays to at most one linked client at a time."""

    __slots__ = (
        "_after_swallow",
        "_fatal",
        "_framer",
        "_held",
        "_login",
        "_paused_client",
        "_scram",
        "_skip",
        "_swallow_error",
        "_swallow_rows",
        "_tail",
        "cancels",
        "client",
        "closed",
        "copy_in",
        "created",
        "held",
        "id",
        "idle_since",
        "link_gen",
        "max_packet",
        "param_names",
        "params",
        "pending",
        "pid",
        "pool",
        "ready_at",
        "reset_sql",
        "secret",
        "settings",
        "stale",
        "state",
        "status",
        "stmts",
        "tracked_keys",
        "tracked_values",
        "transport",
    )

    def __init__(
        self, pool: Pool, *, max_packet: int, tracked: frozenset[str] = frozenset()
    ) -> None:
        self.id = next(_ids)
        self.pool: Pool | None = pool
        self.transport: asyncio.Transport | None = None
        self.client: ClientConn | None = None
        self.state = LOGIN
        self.params: dict[str, str] = {}
        self.param_names: dict[str, str] = {}
        self.pid = 0
        self.secret = 0
        now = time.monotonic()
        self.created = now
        self.idle_since = now
        self.closed = False
        self.stale = False
        self.held = False  # kept linked to its client between transactions (no one waits)
        self.pending = 0  # ReadyForQuery messages the linked client still expects
        self.status = 73  # b"I"
        self.link_gen = 0
        self.ready_at = now
        self.max_packet = max_packet
        self.stmts = ServerStatements(max(pool.settings.max_prepared_statements, 1))
        self.settings: dict[str, str] = {}  # session settings changed since login (see settings)
        self.reset_sql = ""  # to run before another client may have it (see Pool.release)
        self.cancels = 0  # cancel requests forwarded for it, not yet closed by PostgreSQL
        # 1 + the ReadyForQuery count when it announced COPY IN (CopyInResponse), 0 when
        # the client has ended it: only a CopyDone/CopyFail ending a COPY IN announced since
        # the last ReadyForQuery makes the Syncs the client sent during the COPY void.
        self.copy_in = 0
        self.tracked_keys = tracked
        self.tracked_values: dict[str, str] = {}  # the tracked subset of params
        self._framer: MessageFramer | None = MessageFramer(max_packet)
        self._login: asyncio.Future[ServerConn] = asyncio.get_running_loop().create_future()
        self._scram: ScramClient | None = None
        self._tail = b""
        self._skip = 0
        self._fatal: dict[str, str] | None = None
        self._held = b""  # the start of a reply kept back while it may still be retried
        self._paused_client: ClientConn | None = None
        self._after_swallow: Any = None
        self._swallow_error: dict[str, str] | None = None
        self._swallow_rows: list[list[str | None]] = []

    def _set_param(self, name: str, value: str) -> str:
        key = name.lower()
        self.params[key] = value
        self.param_names[key] = name
        if key in self.tracked_keys:
            self.tracked_values[key] = value
        return key

    # ---- login ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        pool = self.pool
        assert pool is not None
        params = {"user": pool.login_user, "database": pool.cfg.db}
        transport.write(m.startup_message(params))

    async def wait_login(self) -> ServerConn:
        return await self._login

    def _login_message(self, t: int, body: bytes) -> None:
        if t == 82:  # 'R'
            self._auth(body)
        elif t == 83:  # 'S'
            name, value = m.parse_parameter_status(body)
            self._set_param(name, value)
        elif t == 75:  # 'K'
            self.pid, self.secret = struct.unpack("!II", body[:8])
        elif t == 90:  # 'Z'
            self.state = IDLE
            self._framer = None
            if not self._login.done():
                self._login.set_result(self)
        elif t == 69:  # 'E'
            fields = m.parse_fields(body)
            self._fail_login(
                PgError(
                    fields.get("C", CONNECTION_FAILURE),
                    fields.get("M", "?"),
                    fatal=True,
                    detail=fields.get("D"),
                    hint=fields.get("H"),
                )
            )
        elif t in (78, 118):  # NoticeResponse, NegotiateProtocolVersion
            pass
        else:
            self._fail_login(
                PgError(
                    PROTOCOL_VIOLATION,
                    f"unexpected message {chr(t)!r} during server login",
                    fatal=True,
                )
            )

    def _auth(self, body: bytes) -> None:
        pool = self.pool
        assert pool is not None and self.transport is not None
        code = _unpack_len(body, 0)[0]
        password = pool.login_password
        if code == m.AUTH_OK:
            return
        if password is None:
            self._fail_login(
                PgError(
                    INVALID_PASSWORD,
                    "server asked for a password but pyproxy "
                    f'has none for user "{pool.login_user}"',
                    fatal=True,
                )
            )
            return
        try:
            if code == m.AUTH_CLEARTEXT:
                self.transport.write(m.password_message(m.cstr(password)))
            elif code == m.AUTH_MD5:
                resp = md5_response(pool.login_user, password, body[4:8])
                self.transport.write(m.password_message(resp + b"\x00"))
            elif code == m.AUTH_SASL:
                mechs = m.parse_cstrings(body[4:])
                if "SCRAM-SHA-256" not in mechs:
                    raise AuthFailed(f"server offers no supported SASL mechanism: {mechs}")
                self._scram = ScramClient(password)
                first = self._scram.client_first()
                self.transport.write(m.sasl_initial_response("SCRAM-SHA-256", first))
            elif code == m.AUTH_SASL_CONTINUE and self._scram is not None:
                self.transport.write(m.password_message(self._scram.handle_server_first(body[4:])))
            elif code == m.AUTH_SASL_FINAL and self._scram is not None:
                self._scram.verify_server_final(body[4:])
            else:
                raise AuthFailed(f"unsupported authentication request {code} from server")
        except AuthFailed as exc:
            self._fail_login(PgError(INVALID_PASSWORD, f"server login failed: {exc}", fatal=True))

    def _fail_login(self, err: PgError) -> None:
        if not self._login.done():
            self._login.set_exception(err)
        self._close_transport()

    # ---- linking ----------------------------------------------------------------------------

    def link(self, client: ClientConn, sync_sql: str | None, wait: bool = True) -> None:
        """Attach ``client``; with ``sync_sql`` first align its session (responses unseen).

        ``wait``: the client's requests follow once the alignment is answered (its startup
        values are checked by PostgreSQL, an error ends its login); otherwise they are sent
        right behind it, and the relay starts after its ReadyForQuery.
        """
        self.client = client
        self.link_gen += 1
        if sync_sql:
            self.state = SYNC
            self._swallow(sync_sql, self._sync_done if wait else self._aligned)
        else:
            self.state = LINKED

    def _sync_done(self, error: dict[str, str] | None, rows: list[list[str | None]]) -> None:
        client = self.client
        if error is not None:
            log.warning("[s%d] could not apply session parameters: %s", self.id, error.get("M"))
            if client is not None:
                client.server_failed(PgError(error.get("C", "22023"), error.get("M", "?")))
            self.close("parameter sync failed")
            return
        if client is None:  # the client left meanwhile
            self.state = IDLE
            if self.pool is not None:
                self.pool.release(self)
            return
        self.state = LINKED
        client.aligned(rows)
        client.server_ready()

    def _aligned(self, error: dict[str, str] | None, rows: list[list[str | None]]) -> None:
        """A pipelined alignment is answered: what follows answers the client."""
        if error is not None:
            log.warning("[s%d] could not align session settings: %s", self.id, error.get("M"))
        if self.client is None:  # the client left meanwhile (with nothing sent)
            self.state = IDLE
            if self.pool is not None:
                self.pool.release(self)
            return
        self.state = LINKED

    def read_state(self, sql: str, then: Any) -> None:
        """Run ``sql`` for the linked client, unseen by it and before anything it sends next;
        ``then(error, rows)`` gets its answer and puts the link back (``relink``)."""
        self.state = READBACK
        self._swallow(sql, then)

    def relink(self) -> None:
        """After ``read_state``: relay to the client again, or go back to the pool if it left."""
        if self.client is not None:
            self.state = LINKED
        else:
            self.state = IDLE
            if self.pool is not None:
                self.pool.release(self)

    def unlink(self) -> None:
        self.client = None
        self.state = IDLE

    def pool_login_user(self) -> str:
        return self.pool.login_user if self.pool is not None else ""

    def _swallow(self, sql: str, then: Any) -> None:
        """Send a simple query whose responses the client must not see; call
        ``then(error, rows)`` with its first error and its rows."""
        self._after_swallow = then
        self._swallow_error = None
        self._swallow_rows = []
        assert self.transport is not None
        self.transport.write(m.query(sql))

    def clean(self, sql: str) -> None:
        """Run ``sql`` (ROLLBACK, a reset query) unseen by any client, then back to the pool's
        release path; a failure, or a transaction still open after it, closes the server."""
        self.client = None
        self.state = ROLLBACK if sql == "ROLLBACK" else RESET
        self._swallow(sql, self._cleaned)

    def _cleaned(self, error: dict[str, str] | None, rows: list[list[str | None]]) -> None:
        was_reset = self.state == RESET
        self.state = IDLE
        if error is not None or self.status != 73:
            self.close(f"{'rollback' if self.status != 73 else 'reset'} failed")
            return
        if was_reset:  # e.g. DISCARD ALL: settings and prepared statements are gone
            self.settings = {}
            self.stmts.forget_all()
        if self.pool is not None:
            self.pool.release(self)

    def check(self) -> None:
        """Health check before reuse of a long-idle server: an empty query."""
        self.state = CHECK
        self._swallow("", self._cleaned)

    # ---- data from PostgreSQL ---------------------------------------------------------------

    def _unlinked_data(self, data: bytes) -> None:
        state = self.state
        if state == LOGIN:
            assert self._framer is not None
            try:
                for t, body in self._framer.feed(data):
                    self._login_message(t, body)
                    if self.state != LOGIN:
                        break
            except PgError as exc:
                self._fail_login(exc)
        elif state in (SYNC, RESET, CHECK, ROLLBACK, READBACK):
            self._swallowed(data)
        elif state == IDLE:
            self._idle_data(data)

    def _messages(self, data: bytes) -> tuple[bytes, list[tuple[int, int, int]]]:
        """Whole messages of the kept tail + ``data`` as (type, start, end); the rest is kept."""
        if self._tail:
            data = self._tail + data
        found = []
        off = 0
        n = len(data)
        while n - off >= 5:
            end = off + 1 + _unpack_len(data, off + 1)[0]
            if end > n:
                break
            found.append((data[off], off, end))
            off = end
        self._tail = data[off:]
        return data, found

    def _idle_data(self, data: bytes) -> None:
        """An unlinked server spoke: usually a FATAL before PostgreSQL closes it."""
        data, found = self._messages(data)
        for t, off, end in found:
            if t != 69:
                continue
            fields = m.parse_fields(data[off + 5 : end])
            log.info("[s%d] idle server said: %s %s", self.id, fields.get("C"), fields.get("M"))
            if fields.get("S") in ("FATAL", "PANIC"):
                # PostgreSQL is closing it (e.g. pg_terminate_backend): out of the pool now,
                # before the connection's end arrives and a client could be given it.
                self.close("server sent FATAL while idle")
                return

    def _swallowed(self, data: bytes) -> None:
        """Responses to pyproxy's own query (parameter sync, reset, check, rollback)."""
        data, found = self._messages(data)
        for t, off, end in found:
            if t == 90:
                self.status = data[end - 1]
                self._tail = data[end:]
                then, self._after_swallow = self._after_swallow, None
                if then is not None:
                    then(self._swallow_error, self._swallow_rows)
                if self._tail and self.state == LINKED:
                    rest, self._tail = self._tail, b""
                    self.data_received(rest)
                return
            if t == 68:
                self._swallow_rows.append(m.parse_data_row(data[off + 5 : end]))
            elif t == 83:
                name, value = m.parse_parameter_status(data[off + 5 : end])
                key = self._set_param(name, value)
                if self.client is not None and key in self.tracked_keys:
                    self.client.params[key] = value
            elif t == 69 and self._swallow_error is None:
                self._swallow_error = m.parse_fields(data[off + 5 : end])
            elif t == 78:
                fields = m.parse_fields(data[off + 5 : end])
                log.warning("[s%d] %s", self.id, fields.get("M", "?"))

    def data_received(self, data: bytes) -> None:
        """Hot path: forward to the client, watching ReadyForQuery, ParameterStatus, errors
        (other states: ``_unlinked_data``)."""
        if self.state != LINKED:
            self._unlinked_data(data)
            return
        client = self.client
        assert client is not None
        if client.retry is not None:
            data = self._first_reply(client, data)
            if not data:
                return
        ct = client.transport
        if self._skip or self._tail:
            data = self._continue(data, ct)
            if not data:
                return
        n = len(data)
        unpack = length_at
        shape = client.reply_shape
        if shape is not None and data.startswith(shape[0]) and data.endswith(shape[1]):
            # The client's last reply again but for its rows (see _learn_reply): check that
            # only DataRows lie between the known bytes and that the statement queue holds
            # the client's own entries for the ParseCompletes, then end it as the walk would.
            off = shape[2]
            stop = n - shape[3]
            while off < stop and data[off] == 68:
                off += 1 + unpack(data, off)[0]
            queue = self.stmts.queue
            pops = shape[4]
            if off == stop and (
                not pops or (len(queue) >= pops and not any(e[0] for e in islice(queue, pops)))
            ):
                for _ in range(pops):
                    queue.popleft()
                status = shape[5]
                if self._ready(client, status):
                    client.release_server(data if status == 73 else data[: n - 6])
                else:
                    ct.write(data)
                return
        off = 0
        start = 0
        kinds = _KIND
        last = n - 5
        while off <= last:
            end = off + 1 + unpack(data, off)[0]
            if end > n:
                ln = end - off - 1
                if ln < 4 or ln > self.max_packet:
                    self._protocol_error(f"bad message length {ln}")
                    return
                break
            kind = kinds[data[off]]
            if not kind:
                off = end
            elif kind == _RFQ:
                status = data[end - 1]
                off = end
                if off == n:
                    # A whole reply: its shape may repeat.
                    misses = client.reply_misses
                    client.reply_misses = misses + 1
                    if not misses & 7:
                        _learn_reply(client, data)
                if self._ready(client, status):
                    # The transaction is over: the server goes back to the pool.
                    upto = off if status == 73 else off - 6  # statement mode: Z(T) replaced
                    if off < n:
                        log.debug("[s%d] %d bytes after a final ReadyForQuery", self.id, n - off)
                    client.release_server(data if start == 0 and upto == n else data[start:upto])
                    return
            elif kind == _PARAM:
                name, value = m.parse_parameter_status(data[off + 5 : end])
                key = self._set_param(name, value)
                if key in self.tracked_keys:
                    client.params[key] = value
                off = end
            elif kind == _PARSE_CLOSE:  # ours or the client's?
                queue = self.stmts.queue
                if queue:
                    action = queue.popleft()[0]
                    if action:
                        if off > start:
                            ct.write(data[start:off])
                        if action == AS_PARSE:
                            ct.write(PARSE_COMPLETE)
                        start = end
                off = end
            elif kind == _COPY_IN:
                self.copy_in = self.stmts.recv_seg + 1
                off = end
            else:  # ErrorResponse: a FATAL is held back until the connection drops
                self.stmts.error(data, off + 5, end, self.link_gen)
                if data[off + 6 : off + 11] in (b"FATAL", b"PANIC"):
                    self._fatal = m.parse_fields(data[off + 5 : end])
                    if off > start:
                        ct.write(data[start:off])
                    start = end
                    if self.held and self.pool is not None:
                        # Dying while kept between transactions: the client's next
                        # statement gets another server, as if this one had been idle.
                        self.pool.take_back(self)
                        self.close("server sent FATAL while kept between transactions")
                        return
                off = end
        if off < n:
            rest = data[off:]
            if len(rest) >= 5 and data[off] in _PASSTHROUGH:
                # Forward a large row or copy chunk as it arrives instead of buffering it.
                self._skip = off + 1 + unpack(data, off)[0] - n
                off = n
            else:
                self._tail = rest
        if start < off:
            ct.write(data if start == 0 and off == n else data[start:off])

    def _first_reply(self, client: ClientConn, data: bytes) -> bytes:
        """The first bytes answering a request the client may send again elsewhere (see
        ``ClientConn.retry``); returns what to relay now.

        Until the reply holds more than statement descriptions and rows (a command's
        completion, an error, a notice, a parameter change, COPY), the server may still die
        with nothing done: a FATAL then means the statement did not complete, so its bytes
        are dropped, the connection is closed and ``connection_lost`` lets the client send
        the request again. Such a reply is kept back (up to ``HOLD_REPLY`` bytes) until it
        goes further; a read that ends with ReadyForQuery cannot hold a FATAL and goes at once.
        """
        held = self._held
        if held:
            data = held + data
            self._held = b""
        n = len(data)
        if n >= 6 and data[n - 6] == 90 and data[n - 5 : n - 1] == _RFQ_LENGTH:
            client.answered()
            return data
        off = 0
        while n - off >= 5:
            kind = data[off]
            if kind in _NO_ANSWER_YET:
                off += 1 + length_at(data, off)[0]
                continue
            if kind == 69 and n - off >= 11 and data[off + 6 : off + 11] in _DYING:
                end = off + 1 + length_at(data, off)[0]
                self._fatal = m.parse_fields(data[off + 5 : end]) if end <= n else None
                self._close_transport()
                return b""
            break
        else:
            # Descriptions and rows so far (maybe cut): wait for more, unless the client has
            # not ended its request with Sync (it may wait for these before sending more).
            if n <= HOLD_REPLY and not client.open_ext:
                self._held = data
                return b""
        client.answered()
        return data

    def _ready(self, client: ClientConn, status: int) -> bool:
        """Note a ReadyForQuery with ``status``; is the transaction over, so that the server
        goes back to the pool (every request answered, the pool mode releases here)?"""
        self.status = status
        self.ready_at = time.monotonic()
        pending = self.pending - 1
        self.pending = pending
        self.stmts.recv_seg += 1
        return (
            pending <= 0
            and (status == 73 or client.statement_mode)
            and not client.session_mode
            and not client.open_ext
        )

    def _continue(self, data: bytes, ct: asyncio.Transport) -> bytes:
        """Finish a message cut by the previous read: stream the rest of a large one, or join
        the kept partial header; return what is left to relay."""
        skip = self._skip
        if skip:
            if skip >= len(data):
                self._skip = skip - len(data)
                ct.write(data)
                return b""
            ct.write(data[:skip])
            self._skip = 0
            return data[skip:]
        data = self._tail + data
        self._tail = b""
        return data

    def _protocol_error(self, text: str) -> None:
        log.error("[s%d] protocol error from server: %s", self.id, text)
        self._fatal = {"C": PROTOCOL_VIOLATION, "M": f"server protocol error: {text}"}
        self._close_transport()

    # ---- closing ----------------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()
        was_login = self.state == LOGIN
        self.state = CLOSED
        self.closed = True
        if was_login and not self._login.done():
            self._login.set_exception(
                PgError(
                    SQLCLIENT_UNABLE_TO_ESTABLISH,
                    "server closed the connection during login",
                    fatal=True,
                )
            )
        client = self.client
        self.client = None
        pool, self.pool = self.pool, None
        if self.held:
            self.held = False
            if pool is not None:
                pool.held.discard(self)
        if pool is not None:
            pool.forget(self)
        if client is not None:
            fatal = self._fatal or {}
            err = PgError(
                fatal.get("C", CONNECTION_FAILURE),
                fatal.get("M", "server connection closed unexpectedly"),
                detail="pyproxy dropped the server connection; the next statement gets a new one",
            )
            client.server_failed(err, mid_message=self._skip > 0)
        if pool is not None:
            pool.grow()  # after the client, which may have taken the dead server's place
        then, self._after_swallow = self._after_swallow, None
        if then is not None and not was_login:
            then({"C": CONNECTION_FAILURE, "M": "server connection lost"}, [])

    def close(self, reason: str = "") -> None:
        if self.closed:
            return
        log.debug("[s%d] closing server connection: %s", self.id, reason)
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(m.TERMINATE)
        self._close_transport()
        pool = self.pool
        if pool is not None:
            pool.discard(self)

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def pause_writing(self) -> None:
        client = self.client
        if client is not None and client.transport is not None and not client.reading_paused:
            client.transport.pause_reading()
            self._paused_client = client

    def resume_writing(self) -> None:
        client, self._paused_client = self._paused_client, None
        if client is not None and client.transport is not None and not client.reading_paused:
            client.transport.resume_reading()


async def open_server(
    pool: Pool, *, max_packet: int, timeout: float, tracked: frozenset[str] = frozenset()
) -> ServerConn:
    """Connect and log in to the pool's PostgreSQL; raise PgError with the real reason."""
    loop = asyncio.get_running_loop()
    cluster = pool.cluster
    try:
        async with asyncio.timeout(timeout if timeout > 0 else None):
            _, proto = await loop.create_connection(
                lambda: ServerConn(pool, max_packet=max_packet, tracked=tracked),
                cluster.host,
                cluster.port,
            )
            try:
                return await proto.wait_login()
            except BaseException:
                proto.close("login abandoned")  # timed out or cancelled: no half-open backend
                raise
    except TimeoutError:
        raise PgError(
            SQLCLIENT_UNABLE_TO_ESTABLISH,
            f"server_connect_timeout: could not connect to {cluster.host}:{cluster.port}"
            f" within {timeout:g} s",
            fatal=True,
        ) from None
    except OSError as exc:
        raise PgError(
            SQLCLIENT_UNABLE_TO_ESTABLISH,
            f"could not connect to server {cluster.host}:{cluster.port}: "
            f"{os.strerror(exc.errno) if exc.errno else exc}",
            fatal=True,
        ) from None


async def send_cancel(host: str, port: int, pid: int, secret: int) -> None:
    """Open a short connection to PostgreSQL carrying a CancelRequest."""
    _, writer = await asyncio.open_connection(host, port)
    writer.write(m.cancel_request(pid, secret))
    await writer.drain()
    writer.close()
