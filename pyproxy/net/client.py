"""Client side: one asyncio Protocol per application connection (startup, auth, relay, release)."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from pyproxy.errors import (
    ACTIVE_SQL_TRANSACTION,
    INVALID_CATALOG_NAME,
    PROTOCOL_VIOLATION,
    TOO_MANY_CONNECTIONS,
    PgError,
    ProtocolError,
)
from pyproxy.net.auth import AuthDeferred, ClientAuth
from pyproxy.net.copyflow import (
    COPY_IN_CODES,
    complete_cut_copy_data,
    drop_copy_leftovers,
    is_copy_leftover,
)
from pyproxy.net.requests import STATEMENT_BLOCK as _STATEMENT_BLOCK
from pyproxy.net.requests import STATEMENT_HINT as _STATEMENT_HINT
from pyproxy.net.requests import forward_slow
from pyproxy.net.server import READBACK as SERVER_READBACK
from pyproxy.net.server import SYNC as SERVER_SYNC
from pyproxy.pool import params as P
from pyproxy.pool import settings as S
from pyproxy.pool.aborted_block import AbortedBlock, message_end, opens_block
from pyproxy.pool.session_state import (
    needs_analysis,
    needs_analysis_statement_mode,
    parse_needs_analysis,
    parse_needs_analysis_statement_mode,
)
from pyproxy.proto import messages as m
from pyproxy.proto.framing import MessageFramer, StartupFramer, length_at

if TYPE_CHECKING:
    from pyproxy.net.server import ServerConn
    from pyproxy.net.state import ProxyState
    from pyproxy.pool.pool import Pool

log = logging.getLogger("pyproxy.client")
_unpack_len = struct.Struct("!I").unpack_from

STARTUP, AUTH, LOGIN, READY, WAITING, LINKED, CLOSED, BLOCKED = range(8)
_ids = iter(range(1, 1 << 62))
LARGE_MESSAGE = 64 * 1024  # incomplete messages above this size are collected without copies
WAIT_BUFFER = 256 * 1024  # bytes a queued client may send before pyproxy stops reading it
_TERMINATE_MSG = b"X\x00\x00\x00\x04"
READY_ABORTED = b"Z\x00\x00\x00\x05E"
MAX_GREETINGS = 64
# A request whose server died without answering is sent again only if it was this recent:
# a long-running statement whose backend was terminated may have been ended on purpose.
RETRY_WINDOW = 1.0
MAX_RETRIES = 3  # login greetings remembered per pool (one per set of startup parameters)

# What the forward path does per client message type (0: just forward, e.g. CopyData).
(
    _QUERY,
    _SYNC,
    _PARSE,
    _BIND,
    _EXECUTE,
    _DESCRIBE,
    _CLOSE,
    _FUNCTION_CALL,
    _COPY_END,
    _TERMINATE,
    _INVALID,
    _FLUSH,
) = range(1, 13)
# Message types a frontend may send once logged in (PasswordMessage only during login).
FRONTEND_TYPES = frozenset(b"BCDEFHPQSXcdf")
_KIND = bytes(
    {
        81: _QUERY,
        83: _SYNC,
        80: _PARSE,
        66: _BIND,
        69: _EXECUTE,
        68: _DESCRIBE,
        67: _CLOSE,
        70: _FUNCTION_CALL,
        99: _COPY_END,  # CopyDone
        102: _COPY_END,  # CopyFail
        88: _TERMINATE,
        72: _FLUSH,
    }.get(t, 0 if t in FRONTEND_TYPES else _INVALID)
    for t in range(256)
)


class ClientConn(asyncio.Protocol):
    """An application connection; linked to a server only while the pool mode requires."""

    __slots__ = (
        "_copy_syncs",
        "_discard",
        "_need",
        "_paused_server",
        "_shape",
        "_shape_misses",
        "_skip",
        "_tail",
        "address",
        "auth",
        "block",
        "check_state",
        "checked",
        "connected_at",
        "custom",
        "database",
        "deferred",
        "framer",
        "id",
        "inspect",
        "key",
        "last_active",
        "mode",
        "needs",
        "notified",
        "open_ext",
        "options",
        "params",
        "parse_needs",
        "peer",
        "pending_data",
        "pinned",
        "pool",
        "proxy",
        "query_start",
        "reading_paused",
        "reply_misses",
        "reply_shape",
        "retries",
        "retry",
        "retry_ok",
        "server",
        "session_mode",
        "session_xact_start",
        "settings",
        "startup",
        "state",
        "statement_mode",
        "stmts",
        "track",
        "transport",
        "user",
        "wait_since",
        "xact_start",
    )

    def __init__(self, state: ProxyState) -> None:
        self.id = next(_ids)
        self.proxy = state
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.state = STARTUP
        self.startup: StartupFramer | None = StartupFramer()
        self.framer: MessageFramer | None = None
        self.auth: ClientAuth | None = None
        self.user = ""
        self.database = ""
        self.params: dict[str, str] = {}
        self.pool: Pool | None = None
        self.mode = "transaction"
        self.session_mode = False
        self.statement_mode = False
        self.server: ServerConn | None = None
        self.pending_data: list[bytes] = []
        self.open_ext = False
        self.key = (0, 0)
        self.wait_since = 0.0
        self.notified = False
        self.connected_at = time.monotonic()
        self.last_active = self.connected_at
        self.xact_start = 0.0
        self.session_xact_start = 0.0  # session mode: when the janitor first saw a transaction
        self.query_start = 0.0
        self.reading_paused = False
        self._paused_server: ServerConn | None = None
        self.peer = ""
        self.address = ""  # the peer's IP address: what the login throttle counts by
        self._tail: bytes | bytearray = b""
        self._need = 0
        self._skip = 0
        self._discard = 0  # bytes of a cut CopyData to drop (see pyproxy.net.copyflow)
        self._copy_syncs = 0  # Syncs since the last Execute: ignored if it started a COPY IN
        # The shape of the last extended request with one unnamed Bind (see _learn_shape):
        # a repeat differing only in the Bind is forwarded without walking its messages.
        self._shape: tuple[bytes, int, bytes, int, int, tuple[int, ...], int] | None = None
        self._shape_misses = 0  # requests walked since (one in eight may replace the shape)
        # The shape of this client's last reply (see pyproxy.net.server._learn_reply) and the
        # replies that did not match it since.
        self.reply_shape: tuple[bytes, bytes, int, int, int, int] | None = None
        self.reply_misses = 0
        self.stmts: dict[bytes, Any] = {}  # client statement name -> shared Statement
        # Session settings (see pyproxy.pool.settings): those read back after its transactions,
        # those from its startup packet not yet applied, custom names it may have set, whether
        # to read them back when the transaction ends, and whether PostgreSQL has checked its
        # startup values (until then its first alignment is a round trip).
        self.settings: dict[str, str] = {}
        self.options: dict[str, str] = {}
        self.custom: set[str] = set()
        self.check_state = False
        self.checked = False
        # What keeps this client on its server (session_state = "pin"), e.g. ("LISTEN",).
        self.pinned: tuple[str, ...] = ()
        self.block: AbortedBlock | None = None  # statement mode: a refused transaction block
        self.deferred = b""  # statement mode: bytes from a BEGIN on, until earlier answers come
        # The bytes of a request sent on a server outside a transaction, kept until the first
        # byte of its answer: if the server dies first, they are sent again on a new server
        # (``retries`` times at most). Session mode retries only the first request of a link.
        self.retry: bytes | None = None
        self.retries = 0
        self.retry_ok = True
        self.track = False  # rewrite named prepared statements (transaction/statement mode)
        self.inspect = False  # look at queries for session-state statements
        self.needs = needs_analysis  # the pre-check for a query's text (statement mode: its own)
        self.parse_needs = parse_needs_analysis

    # ---- connection lifecycle ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
        else:
            self.address = self.peer = str(peer or "unix")
        self.proxy.clients.add(self)
        self.proxy.watch_login(self)

    def connection_lost(self, exc: Exception | None) -> None:
        prev = self.state
        self.state = CLOSED
        self.proxy.clients.discard(self)
        self.proxy.cancel_keys.pop(self.key, None)
        self.proxy.login_done(self)
        pool = self.pool
        if pool is not None:
            pool.clients.discard(self)
            if prev == WAITING:
                pool.cancel_wait(self)
        self.resume_writing()
        server = self.server
        self.server = None
        if server is not None and not server.closed:
            self._give_back(server)

    def _give_back(self, server: ServerConn) -> None:
        """This client lets go of ``server`` (it left, or is being ended): a server with a
        query running is cancelled and closed; otherwise it goes through the pool's release
        path, which rolls back, resets and waits for cancels as needed."""
        pool = server.pool
        if server.held:
            server.held = False
            if pool is not None:
                pool.held.discard(server)
        if pool is None:
            server.unlink()
            server.close("no pool")
            return
        if server.pending > 0 or self.open_ext or self._skip:
            # A query is still running: cancel it so the backend does not linger, then close.
            server.unlink()
            self.proxy.cancel_backend(server)
            server.close("client disconnected with a query in progress")
            return
        if self.session_mode:
            server.reset_sql = pool.settings.server_reset_query
        elif self.pinned:
            # What pinned it (LISTEN, temporary tables, ...) must not reach the next client.
            server.reset_sql = "DISCARD ALL"
            self.pinned = ()
            pool.unpin(self)
        if server.state in (SERVER_SYNC, SERVER_READBACK):
            server.client = None  # running pyproxy's own query for us: released after it
            return
        server.unlink()
        pool.release(server)

    def fatal(self, err: PgError) -> None:
        """Send an error and close (FATAL), or an error and ReadyForQuery (ERROR)."""
        if self.state == CLOSED or self.transport is None:
            return
        self.transport.write(
            m.error_response(
                err.sqlstate, err.message, severity="FATAL", detail=err.detail, hint=err.hint
            )
        )
        self.state = CLOSED
        self.transport.close()

    def kick(self, err: PgError) -> None:
        """End this client from outside (pool deleted, shutdown)."""
        if self.server is not None and not self.server.closed:
            server, self.server = self.server, None
            self._give_back(server)
        self.fatal(err)

    def violation(self, kind: int) -> None:
        """A message type no frontend may send now: FATAL 08P01 to this client; a server it
        holds is closed, since nothing may come back from it to anyone else."""
        server = self.server
        if server is not None:
            self.server = None
            if server.held and server.pool is not None:
                server.held = False
                server.pool.held.discard(server)
            server.unlink()
            if server.pending > 0 or self.open_ext:
                self.proxy.cancel_backend(server)
            server.close("client protocol violation")
        log.info("[c%d] invalid frontend message type %d", self.id, kind)
        self.fatal(ProtocolError(f"invalid frontend message type {kind}"))

    def notice_unsafe(self, statement: str, why: str, hint: str) -> None:
        self.notice(f"{statement} is unsafe in {self.mode} pooling mode: {why}", hint=hint)

    def notice(self, text: str, hint: str | None = None) -> None:
        if self.state != CLOSED:
            self.transport.write(m.notice_response(text, hint=hint))

    # ---- flow control: a slow client pauses its server, and the other way round ------------

    def pause_writing(self) -> None:
        server = self.server
        if server is not None and server.transport is not None:
            server.transport.pause_reading()
            self._paused_server = server

    def resume_writing(self) -> None:
        # Resume the server we paused even if it was released meanwhile.
        server, self._paused_server = self._paused_server, None
        if server is not None and server.transport is not None and not server.closed:
            server.transport.resume_reading()

    # ---- incoming bytes ---------------------------------------------------------------------

    def _unlinked_data(self, data: bytes) -> None:
        state = self.state
        if state == READY:
            if self._discard or self._tail or data[0] in COPY_IN_CODES:
                if is_copy_leftover(self._tail or data, self._discard):
                    data, self._discard, self._tail = drop_copy_leftovers(
                        bytes(self._tail) + data, self._discard
                    )
                    if not data:
                        return
            else:
                if data[0] not in FRONTEND_TYPES:
                    self.violation(data[0])
                    return
                pool = self.pool
                if (
                    self.statement_mode
                    and data[0] in (80, 81)
                    and self.needs(data, 5, len(data))
                    and opens_block(data, 0)
                ):
                    self._enter_aborted_block(data)
                    return
                if pool is not None:
                    if pool.waiters:
                        if pool.last_error is None and not pool.deleted and data[0] != 88:
                            # A busy pool: wait behind the clients already queued.
                            self.pending_data.append(data)
                            self.state = WAITING
                            self.wait_since = time.monotonic()
                            pool.enqueue(self)
                            return
                    elif pool.idle and self._link_idle(data):
                        return
        try:
            if state == READY:
                self._request(data)
            elif state == BLOCKED:
                self._in_block(data)
            elif state == WAITING:
                # Queued: keep what arrives, but stop reading once it is a lot.
                self.pending_data.append(data)
                if not self.reading_paused and sum(map(len, self.pending_data)) > WAIT_BUFFER:
                    self.reading_paused = True
                    self.transport.pause_reading()
            elif state == STARTUP:
                self._startup_data(data)
            elif state in (AUTH, LOGIN):
                self._auth_data(data)
        except AuthDeferred:
            pass  # a failed login, answered after the throttle's delay
        except PgError as err:
            log.info("[c%d] %s", self.id, err.message)
            if err.fatal:
                self.fatal(err)
            else:
                self._error_ready(err)

    def _startup_data(self, data: bytes) -> None:
        assert self.startup is not None
        got = self.startup.feed(data)
        if got is None:
            return
        code, payload, rest = got
        if code in (m.SSL_REQUEST_CODE, m.GSSENC_REQUEST_CODE):
            if rest:
                raise ProtocolError("received unencrypted data after SSL request")
            self.transport.write(b"N")
            return
        if code == m.CANCEL_REQUEST_CODE:
            if len(payload) == 8:
                pid, secret = struct.unpack("!II", payload)
                self.proxy.handle_cancel(pid, secret)
            self.state = CLOSED
            self.transport.close()
            return
        major, minor = code >> 16, code & 0xFFFF
        if major != 3:
            raise PgError(
                PROTOCOL_VIOLATION,
                f"unsupported frontend protocol {major}.{minor}: pyproxy supports 3.0",
                fatal=True,
            )
        try:
            params = m.parse_startup_params(payload)
        except ValueError as exc:
            raise ProtocolError(f"invalid startup packet: {exc}") from None
        self.startup = None
        self._begin_login(params, minor)
        if rest:
            self._auth_data(rest)

    def _begin_login(self, params: dict[str, str], minor: int) -> None:
        proxy = self.proxy
        if len(proxy.clients) > proxy.config.proxy.max_client_conn:
            raise PgError(
                TOO_MANY_CONNECTIONS, "no more connections allowed (max_client_conn)", fatal=True
            )
        self.user = params.get("user", "")
        if not self.user:
            raise PgError(
                "28000", "no PostgreSQL user name specified in startup packet", fatal=True
            )
        self.database = params.get("database") or self.user
        unsupported = [k for k in params if k.startswith("_pq_.")]
        if minor > 0 or unsupported:
            self.transport.write(m.negotiate_protocol_version(0, unsupported))
        self.params = self._startup_params(params)
        found = proxy.manager.find_pool(self.database)
        if found is None:
            raise PgError(
                INVALID_CATALOG_NAME,
                f'database "{self.database}" does not exist',
                detail="pyproxy has no pool with this name; the database name selects the pool",
                fatal=True,
            )
        cluster_id, _cfg = found
        cluster = proxy.manager.cluster(cluster_id)
        assert cluster is not None
        self.state = AUTH
        self.framer = MessageFramer(proxy.config.proxy.max_packet_size)
        self.auth = ClientAuth(self, proxy, cluster, self.user)
        self.auth.start()

    def _startup_params(self, params: dict[str, str]) -> dict[str, str]:
        """The startup packet's session parameters, as PostgreSQL takes them: keys and
        ``options=-c name=value`` items. Tracked (reported) parameters are returned; the others
        go to ``options``, applied on the client's first server (a value PostgreSQL refuses ends
        the login there); those in ``ignore_startup_parameters`` are dropped."""
        cfg = self.proxy.config.proxy
        tracked = self.proxy.tracked
        ignored = {k.lower() for k in cfg.ignore_startup_parameters}
        out: dict[str, str] = {}
        items: list[tuple[str, str]] = []
        for key, value in params.items():
            low = key.lower()
            if low in ("user", "database") or low.startswith("_pq_."):
                continue
            if low == "replication":
                raise PgError(
                    PROTOCOL_VIOLATION,
                    "replication connections are not supported by pyproxy",
                    hint="connect to PostgreSQL directly for replication",
                    fatal=True,
                )
            if low == "options":
                if "options" not in ignored:
                    items.extend(P.parse_options(value).items())
            else:
                items.append((low, value))
        for name, value in items:
            if name in ignored:
                continue
            if name in tracked:
                out[name] = value
            else:
                self.options[name] = value
        return out

    def _auth_data(self, data: bytes) -> None:
        assert self.framer is not None
        for t, body in self.framer.feed(data):
            if self.state == AUTH and self.auth is not None:
                self.auth.message(t, body)
            elif t == 88:  # Terminate during login
                self.transport.close()
                return
            else:
                raise ProtocolError(f"unexpected message {chr(t)!r} during login")

    def attach(self) -> bool:
        """Authenticated: join the pool; True when the client is greeted at once (the pool
        knows its server's parameters), False when ``finish_login`` must wait for them."""
        proxy = self.proxy
        pool = proxy.manager.get_pool(self.database, self.user)
        if pool is None:
            raise PgError(
                INVALID_CATALOG_NAME, f'database "{self.database}" does not exist', fatal=True
            )
        limit = pool.settings.max_client_conn
        if limit and len(pool.clients) >= limit:
            raise PgError(
                TOO_MANY_CONNECTIONS,
                f'no more connections allowed for pool "{pool.name}" (max_client_conn {limit})',
                fatal=True,
            )
        self.state = LOGIN
        self.pool = pool
        pool.clients.add(self)
        self.mode = pool.mode
        self.session_mode = self.mode == "session"
        self.statement_mode = self.mode == "statement"
        self.track = not self.session_mode and pool.settings.max_prepared_statements > 0
        self.inspect = not self.session_mode
        if self.statement_mode:
            self.needs = needs_analysis_statement_mode
            self.parse_needs = parse_needs_analysis_statement_mode
        if pool.welcome is None:
            return False
        self._greet(pool)
        return True

    async def finish_login(self) -> None:
        """Greet the client once the pool has learnt its server's parameters."""
        pool = self.pool
        assert pool is not None
        await pool.wait_welcome()
        if self.state == CLOSED:
            return
        self._greet(pool)

    def _greet(self, pool: Pool) -> None:
        """AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery: the client is in."""
        proxy = self.proxy
        # Clients of a pool mostly log in with the same parameters: build each greeting once.
        greeting_key = (tuple(self.params.items()), proxy.tracked)
        greeting = pool.greetings.get(greeting_key)
        if greeting is None:
            greeting = self._greeting(pool)
            if len(pool.greetings) >= MAX_GREETINGS:
                pool.greetings.clear()
            pool.greetings[greeting_key] = greeting
        hello, params = greeting
        self.params = dict(params)
        self.key = proxy.new_cancel_key(self)
        self.transport.write(hello + m.backend_key_data(*self.key) + m.READY_IDLE)
        rest = self.framer.take_rest() if self.framer is not None else b""
        self.framer = None
        self.auth = None
        self.state = READY
        self.last_active = time.monotonic()
        log.debug("[c%d] %s logged in as %s to pool %s", self.id, self.peer, self.user, pool.name)
        if rest:
            self.data_received(rest)

    def _greeting(self, pool: Pool) -> tuple[bytes, dict[str, str]]:
        """AuthenticationOk and the ParameterStatus set for this client's startup parameters
        over the pool's server parameters, and the tracked parameters it starts with."""
        assert pool.welcome is not None
        welcome = dict(pool.welcome)
        for key, value in self.params.items():
            welcome[key] = value
        if "client_encoding" in self.params:
            welcome["client_encoding"] = _encoding_name(self.params["client_encoding"])
        tracked = self.proxy.tracked
        params = {k: v for k, v in welcome.items() if k in tracked}
        names = pool.welcome_names
        out = [m.AUTH_OK_MSG]
        out.extend(m.parameter_status(names.get(k, k), v) for k, v in welcome.items())
        return b"".join(out), params

    # ---- requests ---------------------------------------------------------------------------

    def _link_idle(self, data: bytes) -> bool:
        """Fast path of ``_request``: an idle server that needs nothing before it is used."""
        pool = self.pool
        if (
            pool is None
            or not pool.idle
            or pool.waiters
            or pool.paused
            or self._tail
            or self.options
        ):
            return False
        server = pool.idle[-1]
        now = time.monotonic()
        if (
            server.closed
            or self.settings != server.settings
            or self.params != server.tracked_values
            or 0 < pool.cfg.settings.server_check_delay < now - server.idle_since
        ):
            return False
        pool.idle.pop()
        pool.active.add(server)
        self.server = server
        server.pending = 0
        server.link(self, None)
        self.state = LINKED
        self.xact_start = now
        self.data_received(data)
        return True

    def _request(self, data: bytes) -> None:
        """A request while no server is linked: queue it and ask the pool for a server."""
        if self._tail:
            joined = self._joined(data)
            if joined is None:
                return
            data = joined
        if data[:1] == b"X":
            self.transport.close()
            return
        self.pending_data.append(data)
        self.state = WAITING
        self.wait_since = time.monotonic()
        assert self.pool is not None
        self.pool.acquire(self)

    def on_server(self, server: ServerConn) -> None:
        """The pool hands us a server (maybe synchronously from ``acquire``)."""
        if self.state != WAITING:
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
        sql, wait = self._alignment(server)
        server.link(self, sql or None, wait)
        if not sql or not wait:
            self.server_ready()  # nothing to wait for: the request follows at once

    def _alignment(self, server: ServerConn) -> tuple[str, bool]:
        """What makes ``server``'s session this client's: SETs of tracked parameters, then its
        other settings; and whether to wait for the answer before sending the client's
        request (values PostgreSQL has not checked yet: an error ends the client's login)."""
        parts = []
        wait = False
        if self.params != server.tracked_values:
            diff = P.differences(self.params, server.params, self.proxy.tracked)
            if diff:
                parts.append(P.set_statements(diff))
                wait = not self.checked
            else:  # equal but spelled differently: adopt the server's spelling
                self.params.update(server.tracked_values)
        if self.options:
            parts.append(S.apply_sql({}, server.settings))
            parts.append(S.startup_sql(self.options))
            parts.append(self._state_sql(server))
            wait = True
        elif self.settings != server.settings:
            parts.append(S.apply_sql(self.settings, server.settings))
            server.settings = dict(self.settings)
        return ";".join(p for p in parts if p), wait

    def _state_sql(self, server: ServerConn) -> str:
        custom = self.custom | {name for name in self.options if "." in name}
        return S.state_query(custom, self.proxy.excluded, server.pool_login_user())

    def aligned(self, rows: list[list[str | None]]) -> None:
        """PostgreSQL took this client's values; ``rows`` read back its settings if its startup
        options were applied."""
        self.checked = True
        if self.options:
            self.options = {}
            self._adopt(S.parse_state(rows, self.proxy.tracked))

    def _adopt(self, state: S.SessionState) -> None:
        """The session state read back from the linked server: its settings are the client's,
        and under session_state = "pin" what cannot be replayed keeps the server."""
        server = self.server
        assert server is not None
        self.settings = state.settings
        server.settings = dict(state.settings)
        self.custom &= set(state.settings)
        pool = self.pool
        if pool is None:
            return
        if state.kept and pool.session_policy == "pin":
            if not self.pinned:
                pool.pin(self)
                log.info("[c%d] pinned to s%d: %s", self.id, server.id, ", ".join(state.kept))
            self.pinned = state.kept
        elif self.pinned and not state.kept:
            self.pinned = ()
            pool.unpin(self)
            log.info("[c%d] no longer pinned", self.id)

    def server_ready(self) -> None:
        self.state = LINKED
        self.xact_start = time.monotonic()
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        queued = self.pending_data
        data = queued[0] if len(queued) == 1 else b"".join(queued)
        queued.clear()
        if data:
            self.data_received(data)
            self.query_start = self.wait_since  # query_timeout counts the time queued

    def data_received(self, data: bytes) -> None:
        """Hot path: pass client bytes to the linked server, counting requests (other states:
        ``_unlinked_data``)."""
        if self.state != LINKED:
            self._unlinked_data(data)
            return
        server = self.server
        assert server is not None
        if server.held:  # a new transaction on the server kept for us
            server.held = False
            self.pool.held.discard(server)  # type: ignore[union-attr]
            self.xact_start = self.query_start = time.monotonic()
            self.retry = None if self._tail else data
        elif not server.pending:  # a new request, the previous ones answered
            self.query_start = time.monotonic()
            self.retry = (
                data
                if server.status == 73 and self.retry_ok and not self._tail and not self.open_ext
                else None
            )
        elif self.retry is not None:  # more of the request before any reply: not retried
            self.retry = None
        st = server.transport
        if self._skip or self._tail:
            data = self._continue(data, st)  # type: ignore[arg-type]
            if not data:
                return
        n = len(data)
        if (
            data[0] == 81
            and n > 5
            and _unpack_len(data, 1)[0] == n - 1
            and n - 1 <= server.max_packet
            and not (self.inspect and self.needs(data, 5, n))
        ):
            # The commonest request: exactly one simple Query that needs no closer look.
            server.pending += 1
            server.stmts.sent_seg += 1
            self._copy_syncs = 0
            st.write(data)
            return
        if data == _TERMINATE_MSG:  # the client leaves; the server goes back when it is gone
            self.transport.close()
            return
        if data[0] == 66 and n > 6 and self.track and not data[5] and data[6]:
            # Bind of a named statement to the unnamed portal (how prepared-statement drivers
            # start a request): the slow path renames it, so it takes the whole request.
            forward_slow(self, server, data, 0)
            return
        shape = self._shape
        if shape is not None and data.startswith(shape[0]):
            # The same request as before but for the Bind's parameters (how drivers repeat
            # an unnamed statement): check the Bind, apply the effects the walk found.
            b = shape[1]
            if (
                n - shape[3] - b > 6
                and data[b] == 66
                and not data[b + 5]
                and not data[b + 6]
                and b + 1 + length_at(data, b)[0] + shape[3] == n
                and n <= server.max_packet
                and data.endswith(shape[2])
            ):
                syncs = shape[4]
                server.pending += syncs
                sts = server.stmts
                seg = sts.sent_seg
                for k in shape[5]:
                    sts.queue.append((0, seg + k, None))
                sts.sent_seg = seg + syncs
                self.open_ext = False
                self._copy_syncs = shape[6]
                st.write(data)
                return
        off = 0
        last = n - 5
        pending = server.pending
        open_ext = self.open_ext
        copy_syncs = self._copy_syncs
        limit = server.max_packet
        track = self.track
        inspect = self.inspect
        sts = server.stmts
        seg = sts.sent_seg
        kinds = _KIND
        unpack = length_at
        kind = 0
        bind_at = -1  # where the request's only Bind starts (-2: more than one)
        executes = False
        odd = False  # a message whose effect depends on earlier state: no shape learnt
        queued = len(sts.queue)
        while off <= last:
            ln = unpack(data, off)[0]
            end = off + 1 + ln
            if ln < 4 or ln > limit:
                self._bad_length(data[off], ln)
                return
            if end > n:
                break
            kind = kinds[data[off]]
            if kind == _BIND:
                open_ext = True
                bind_at = off if bind_at == -1 else -2
                # Unnamed portal and statement (two NULs) pass at once; otherwise find out
                # whether the statement is named (or the Bind malformed): the slow path decides.
                if track and (end < off + 7 or data[off + 5] or data[off + 6]):
                    portal_end = data.find(0, off + 5, end)
                    if portal_end < 0 or portal_end + 1 >= end or data[portal_end + 1] != 0:
                        break
            elif kind == _EXECUTE:
                open_ext = True
                copy_syncs = 0
                executes = True
            elif kind == _SYNC:
                pending += 1
                seg += 1
                open_ext = False
                copy_syncs += 1
            elif kind == _PARSE:
                if inspect and (
                    (name_end := data.find(0, off + 5, end)) < 0
                    or self.parse_needs(data, name_end + 1, end)
                ):
                    break  # a Parse that may touch session state (or is malformed): inspect it
                open_ext = True
                if track:
                    if data[off + 5] != 0:
                        break  # a named statement: rewrite
                    sts.queue.append((0, seg, None))
            elif kind == _DESCRIBE:
                open_ext = True
                if track and data[off + 5] == 83 and data[off + 6] != 0:
                    break
            elif kind == _QUERY:
                if inspect and self.needs(data, off + 5, end):
                    break
                odd = True
                pending += 1
                seg += 1
                copy_syncs = 0
            elif kind == _CLOSE:
                open_ext = True
                if track:
                    if data[off + 5] == 83:
                        break  # closing a statement: answered by the slow path
                    sts.queue.append((0, seg, None))
            elif kind == _FUNCTION_CALL:
                odd = True
                pending += 1
                seg += 1
            elif kind == _COPY_END:
                # PostgreSQL ignored the Syncs sent after the Execute that started the COPY
                # IN it announced; without one, it ignores this CopyDone/CopyFail instead.
                odd = True
                if server.copy_in == server.stmts.recv_seg + 1:
                    pending -= copy_syncs
                    seg -= copy_syncs
                server.copy_in = 0
                copy_syncs = 0
            elif kind == _TERMINATE:  # the server stays ours to reuse
                break
            elif kind == _FLUSH and ln != 4:
                # PostgreSQL refuses a Flush with a body, then skips messages up to a Sync.
                open_ext = True
            elif kind == _INVALID:
                self.violation(data[off])
                return
            off = end
        if off == n and bind_at >= 0 and kind == _SYNC and executes and not odd:
            misses = self._shape_misses
            self._shape_misses = misses + 1
            if not misses & 7:  # one miss in eight: requests that never repeat cost little
                self._learn_shape(data, bind_at, sts, queued, seg, copy_syncs)
        server.pending = pending
        sts.sent_seg = seg
        self.open_ext = open_ext
        self._copy_syncs = copy_syncs
        if off < n:
            if n - off >= 5 and off + 1 + unpack(data, off)[0] <= n:
                forward_slow(self, server, data, off)  # a whole message needs more than counting
                return
            if data[off] == 100 and n - off >= 5:  # CopyData: stream it
                self._skip = off + 1 + unpack(data, off)[0] - n
                off = n
            else:
                self._keep(data, off)
        if off:
            st.write(data if off == n else data[:off])

    def _learn_shape(
        self, data: bytes, bind_at: int, sts: Any, queued: int, seg: int, copy_syncs: int
    ) -> None:
        """Remember a request of whole messages with one Bind, ending in a Sync, whose
        effects the forward path just worked out (``sts.queue`` had ``queued`` entries
        before it, ``seg`` is the Sync count after it): a repeat that differs only in the
        Bind's parameters has the same effects, which depend on the other messages' bytes.

        Kept: the bytes before the Bind, the Bind's offset, the bytes after it and their
        length, the Syncs, the statement-queue entries added (as Sync counts from the
        request's start) and the Syncs after the last Execute.
        """
        bind_end = bind_at + 1 + length_at(data, bind_at)[0]
        if bind_end - bind_at < 7 or data[bind_at + 5] or data[bind_at + 6]:
            return  # a named portal or statement: only unnamed ones are matched
        start = sts.sent_seg
        queue = sts.queue
        self._shape = (
            data[:bind_at],
            bind_at,
            data[bind_end:],
            len(data) - bind_end,
            seg - start,
            tuple(queue[i][1] - start for i in range(queued, len(queue))),
            copy_syncs,
        )

    def _continue(self, data: bytes, st: asyncio.Transport) -> bytes | None:
        """Finish what the previous read cut: stream the rest of a CopyData, or join a kept
        incomplete message; return what is left to forward (None: nothing yet)."""
        skip = self._skip
        if skip:
            if skip >= len(data):
                self._skip = skip - len(data)
                st.write(data)
                return None
            st.write(data[:skip])
            self._skip = 0
            return data[skip:]
        return self._joined(data)

    def _keep(self, data: bytes, off: int) -> None:
        """Keep an incomplete message; a large one grows in place until it is whole."""
        rest = data[off:]
        if len(rest) >= 5:
            need = 1 + _unpack_len(rest, 1)[0]
            if need > LARGE_MESSAGE:
                self._tail = bytearray(rest)
                self._need = need
                return
        self._tail = rest

    def _joined(self, data: bytes) -> bytes | None:
        """The kept incomplete message followed by ``data``; None while a large one is short."""
        tail = self._tail
        if type(tail) is bytearray:
            tail += data
            if len(tail) < self._need:
                return None
            self._tail = b""
            return bytes(tail)
        self._tail = b""
        return tail + data

    def _bad_length(self, t: int, ln: int) -> None:
        err = PgError(
            PROTOCOL_VIOLATION, f"invalid message length {ln} (type {chr(t)!r})", fatal=True
        )
        if ln > 4:
            err = PgError(
                "54000",
                f"message of type {chr(t)!r} with {ln} bytes exceeds "
                f"max_packet_size ({self.server.max_packet if self.server else 0})",
                fatal=True,
            )
        self.kick(err)

    def release_server(self, reply: bytes) -> None:
        """The transaction is over: ``reply`` (its last bytes, up to ReadyForQuery) goes to the
        client, and the server is kept, passed on or returned."""
        server = self.server
        if server is None:
            if reply:
                self.transport.write(reply)
            return
        pool = self.pool
        if pool is not None:
            pool.xact_count += 1
            if self.check_state or self.pinned or self.deferred:
                self._state_first(server, reply)
                return
        self._let_go(server, pool, reply)

    def _let_go(self, server: ServerConn, pool: Pool | None, reply: bytes) -> None:
        """``release_server`` once the transaction is counted: keep the server while nobody
        waits, pass it to the next queued client, or return it."""
        now = server.ready_at
        self.last_active = now
        if pool is None:
            if reply:
                self.transport.write(reply)
        elif server.status == 73 and not self._skip and not server.stale:
            if pool.waiters:
                # Under load: straight to the next queued client, whose request is sent
                # before this client's reply so that PostgreSQL gets to work sooner.
                self.server = None
                self.state = READY
                server.unlink()
                pool.hand_over(server, now)
                if reply:
                    self.transport.write(reply)
                self._refuse_deferred()
                return
            if reply:
                self.transport.write(reply)
            if not self.deferred and pool.may_hold(server):
                # Nobody waits: keep the server until this client's next transaction,
                # unless another client needs it first (the pool takes it back) or it
                # idles too long.
                server.held = True
                pool.held.add(server)
                return
        elif reply:
            self.transport.write(reply)
        self.server = None
        self.state = READY
        if self._skip:  # released inside a CopyData the server no longer wants
            self._discard, self._skip = self._skip, 0
            server.stale |= not complete_cut_copy_data(server, self._discard)
        if server.status != 73:
            # Statement mode: a transaction block opened where pyproxy could not see it
            # coming. The release path rolls it back; the client is in an aborted block.
            self._enter_aborted_block()
        server.unlink()
        if pool is None:
            server.close("pool gone")
        else:
            pool.release(server, now=now)
        self._refuse_deferred()

    def _refuse_deferred(self) -> None:
        if self.deferred:
            rest, self.deferred = self.deferred, b""
            self._enter_aborted_block(rest)

    def _state_first(self, server: ServerConn, reply: bytes) -> None:
        """The transaction is over, but more than the pool mode decides what happens to the
        server: its session state must be read back first (settings may have changed, a pin
        may hold or end), the client is pinned to it, or a deferred BEGIN waits."""
        if reply:
            self.transport.write(reply)
        self.last_active = server.ready_at
        if self.check_state and server.status == 73:
            self.check_state = False
            server.read_state(self._state_sql(server), partial(self._state_read, server))
        elif self.pinned:
            self._refuse_deferred()  # the client keeps its server through the block
        else:
            self._let_go(server, self.pool, b"")

    def _state_read(
        self, server: ServerConn, error: dict[str, str] | None, rows: list[list[str | None]]
    ) -> None:
        """``read_state`` answered: adopt the state, then let the server go if the client is
        not pinned and has sent nothing meanwhile."""
        if self.server is not server or self.state == CLOSED:
            server.relink()  # the client left or lost the server meanwhile
            return
        if error is None:
            self._adopt(S.parse_state(rows, self.proxy.tracked))
        else:
            log.warning("[c%d] could not read the session state: %s", self.id, error.get("M"))
        server.relink()
        if server.pending > 0 or self.open_ext or self.check_state:
            return  # the client sent more meanwhile: its end decides
        if self.pinned:
            self._refuse_deferred()
        else:
            self._let_go(server, self.pool, b"")

    def defer(self, rest: bytes, server: ServerConn) -> None:
        """Statement mode: ``rest`` opens a transaction block after requests already sent; it
        is refused once their answers are in (``_let_go``), or now if none are pending."""
        self.deferred = rest
        if server.pending <= 0 and not self.open_ext:
            self.deferred = b""
            self._enter_aborted_block(rest)

    def _enter_aborted_block(self, rest: bytes = b"") -> None:
        """Statement mode refuses a transaction block (``rest`` starts with the Query or Parse
        that opens it) and leaves the client in an aborted block, answered by pyproxy until
        COMMIT or ROLLBACK (see pyproxy.pool.aborted_block)."""
        self._drop_server()
        block = self.block = AbortedBlock()
        self.state = BLOCKED
        refusal = m.error_response(ACTIVE_SQL_TRANSACTION, _STATEMENT_BLOCK, hint=_STATEMENT_HINT)
        if rest[:1] == b"P":  # extended protocol: the rest up to Sync is skipped
            block.skipping = True
            self.transport.write(refusal)
        else:
            self.transport.write(refusal + READY_ABORTED)
        if rest:
            rest = rest[message_end(rest) :]
            if rest:
                self._in_block(rest)

    def _in_block(self, data: bytes) -> None:
        """Client messages while its refused transaction block lasts."""
        if self._tail:
            data = bytes(self._tail) + data
            self._tail = b""
        block = self.block
        assert block is not None
        reply, used = block.feed(data)
        if reply:
            self.transport.write(reply)
        rest = data[used:]
        if block.ended:
            self.block = None
            self.state = LINKED if self.server is not None else READY
            if rest:
                self.data_received(rest)
        elif rest[:1] == b"X":
            self.transport.close()
        elif rest:
            self._keep(rest, 0)

    def _drop_server(self) -> None:
        """Give back a server this client holds with nothing pending (kept between
        transactions, or linked); a pinned client keeps its server."""
        server = self.server
        if server is None or self.pinned:
            return
        pool = server.pool
        self.server = None
        if server.held:
            server.held = False
            if pool is not None:
                pool.held.discard(server)
        server.unlink()
        if pool is not None:
            pool.release(server)
        else:
            server.close("pool gone")

    def pin_description(self) -> str:
        """Who this pinned client is and what pins it, for NOTICEs and logs."""
        app = self.params.get("application_name")
        named = f", application_name {app!r}" if app else ""
        return f"client {self.id} ({self.user}@{self.peer}{named}: {', '.join(self.pinned)})"

    def detach_held(self) -> None:
        """The pool takes back the server this client kept between transactions."""
        self.server = None
        self.state = READY

    # ---- failures ---------------------------------------------------------------------------

    def answered(self) -> None:
        """The first reply byte of the request kept in ``retry`` has come."""
        self.retry = None
        self.retries = 0
        if self.session_mode:
            self.retry_ok = False

    def server_failed(self, err: PgError, mid_message: bool = False) -> None:
        """The linked server died or could not be prepared for us (``mid_message``: while
        part of one of its messages had been relayed, so the client's stream is cut)."""
        server = self.server
        self.server = None
        if self.state == CLOSED:
            return
        if self._send_elsewhere(server):
            return
        if self.state == WAITING or server is None:
            self.fatal(PgError(err.sqlstate, err.message, fatal=True, detail=err.detail))
            return
        pending = server.pending
        if (pending <= 0 and server.status != 73) or self.open_ext or self._tail or mid_message:
            # The client believes it is inside a transaction that no longer exists, waits
            # for replies to an extended-protocol batch not yet closed by Sync, or got part of
            # a message whose rest will never come.
            self.fatal(PgError(err.sqlstate, err.message, fatal=True, detail=err.detail))
            return
        self.state = READY
        self.open_ext = False
        self._tail = b""
        self._discard, self._skip = self._skip, 0
        if pending > 0:
            out = [m.error_response(err.sqlstate, err.message, detail=err.detail)]
            out.extend([m.READY_IDLE] * pending)
            self.transport.write(b"".join(out))

    def _send_elsewhere(self, server: ServerConn | None) -> bool:
        """The server died before answering a request that started outside a transaction
        (see ``retry``), or while it was being prepared for a queued request: send the
        request on a new server (an idle one may have died with it), at most ``MAX_RETRIES``
        times and only within ``RETRY_WINDOW`` of its arrival (a long-running statement whose
        backend was terminated may have been ended on purpose)."""
        pool = self.pool
        if self.retries >= MAX_RETRIES or pool is None:
            return False
        if self.state == WAITING:
            if server is not None and not server.closed:
                return False  # the server refused to be prepared: no use trying another
            # The server died while being prepared for us: nothing was sent yet.
            self.retries += 1
            pool.acquire(self)
            return True
        data = self.retry
        if data is None or time.monotonic() - self.query_start > RETRY_WINDOW:
            return False
        self.retry = None
        self.retries += 1
        if server is not None:
            server.stmts.undo_all()  # the client's statement names as before the request
        self.open_ext = False
        self._tail = b""
        self._skip = 0
        self._copy_syncs = 0
        self.state = READY
        log.info("[c%d] server died before answering; request sent again", self.id)
        if data[:1] == b"X" or not pool.open_for(self):
            self._request(data)
            return True
        self.pending_data.append(data)
        self.state = WAITING
        self.wait_since = self.query_start
        return True

    def wants_server(self) -> bool:
        """Is this client still waiting for the server the pool opens for it?"""
        return self.state == WAITING

    def on_wait_error(self, err: PgError) -> None:
        """The pool could not give us a server (timeout, server down, cancel, pool deleted)."""
        if self.state == CLOSED:
            return
        if err.fatal:
            self.fatal(err)
            return
        data = b"".join(self.pending_data)
        self.pending_data.clear()
        units = max(_count_requests(data), 1)
        out = [m.error_response(err.sqlstate, err.message)]
        out.extend([m.READY_IDLE] * units)
        self.transport.write(b"".join(out))
        self.state = READY
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def _error_ready(self, err: PgError) -> None:
        self.transport.write(
            m.error_response(err.sqlstate, err.message, detail=err.detail, hint=err.hint)
            + m.READY_IDLE
        )


def _join_sql(a: str, b: str) -> str:
    return f"{a};{b}" if a and b else a or b


def _count_requests(data: bytes) -> int:
    """How many ReadyForQuery a run of client messages would produce (Query, Sync, FunctionCall)."""
    n = len(data)
    off = 0
    count = 0
    while n - off >= 5:
        t = data[off]
        if t in (81, 83, 70):
            count += 1
        off += 1 + _unpack_len(data, off + 1)[0]
    return count


def _encoding_name(value: str) -> str:
    return "UTF8" if P.canonical("client_encoding", value) == "utf8" else value
