"""Opening a server connection and logging in to PostgreSQL; sending a CancelRequest."""

from __future__ import annotations

import asyncio
import os
import ssl
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyproxy.auth.passthrough import ScramKeys
from pyproxy.auth.scram import AuthFailed
from pyproxy.auth.server_login import ServerLogin
from pyproxy.errors import (
    CONNECTION_FAILURE,
    INVALID_PASSWORD,
    PROTOCOL_VIOLATION,
    SQLCLIENT_UNABLE_TO_ESTABLISH,
    PgError,
)
from pyproxy.net.server import ServerConn
from pyproxy.net.tls_connect import ALLOW_NO_RETRY, Negotiation
from pyproxy.proto import messages as m
from pyproxy.proto.codes import (
    AUTHENTICATION,
    BACKEND_KEY_DATA,
    ERROR_RESPONSE,
    NEGOTIATE_PROTOCOL_VERSION,
    NOTICE_RESPONSE,
    PARAMETER_STATUS,
    READY_FOR_QUERY,
)
from pyproxy.proto.framing import MessageFramer

if TYPE_CHECKING:
    from pyproxy.pool.pool import Pool

_I = struct.Struct("!I")


class ServerLoginDriver:
    """A server connection's login: the startup packet, Authentication, ParameterStatus and
    BackendKeyData up to the first ReadyForQuery; ``done`` resolves to the server or the reason
    the login failed (PostgreSQL's own error where it sent one)."""

    def __init__(
        self,
        server: ServerConn,
        pool: Pool,
        max_packet: int,
        tls: Negotiation | None = None,
        keys: ScramKeys | None = None,
    ) -> None:
        self.server = server
        self.auth = ServerLogin(pool.login_user, pool.login_password, keys)
        self.framer = MessageFramer(max_packet)
        self.startup_message = m.startup_message({"user": pool.login_user, "database": pool.cfg.db})
        self.tls = tls
        # What goes first: an SSLRequest when TLS is to be tried (see pyproxy.net.tls_connect).
        self.startup = m.ssl_request() if tls is not None else self.startup_message
        self.done: asyncio.Future[ServerConn] = asyncio.get_running_loop().create_future()

    def feed(self, data: bytes) -> bool:
        """Take the server's bytes; True once logged in (the rest belongs to the link)."""
        try:
            if self.tls is not None and self.tls.waiting:
                self.tls.answer(self, data)
                return False
            for kind, body in self.framer.feed(data):
                if self._message(kind, body):
                    return True
        except PgError as exc:
            self.fail(exc)
        return False

    def _message(self, kind: int, body: bytes) -> bool:
        server = self.server
        if kind == AUTHENTICATION:
            try:
                reply = self.auth.answer(_I.unpack_from(body, 0)[0], body[4:])
            except AuthFailed as exc:
                self.fail(PgError(INVALID_PASSWORD, f"server login failed: {exc}", fatal=True))
                return False
            if reply and server.transport is not None:
                server.transport.write(reply)
        elif kind == PARAMETER_STATUS:
            server.set_param(*m.parse_parameter_status(body))
        elif kind == BACKEND_KEY_DATA:
            server.pid, server.secret = struct.unpack("!II", body[:8])
        elif kind == READY_FOR_QUERY:
            if not self.done.done():
                self.done.set_result(server)
            return True
        elif kind == ERROR_RESPONSE:
            fields = m.parse_fields(body)
            self.fail(
                PgError(
                    fields.get("C", CONNECTION_FAILURE),
                    fields.get("M", "?"),
                    fatal=True,
                    detail=fields.get("D"),
                    hint=fields.get("H"),
                )
            )
        elif kind not in (NOTICE_RESPONSE, NEGOTIATE_PROTOCOL_VERSION):
            self.fail(
                PgError(
                    PROTOCOL_VIOLATION,
                    f"unexpected message {chr(kind)!r} during server login",
                    fatal=True,
                )
            )
        return False

    def fail(self, err: PgError) -> None:
        if not self.done.done():
            self.done.set_exception(err)
        self.server.close_transport()

    def lost(self) -> None:
        """The connection ended during login."""
        if not self.done.done():
            self.done.set_exception(
                PgError(
                    SQLCLIENT_UNABLE_TO_ESTABLISH,
                    "server closed the connection during login",
                    fatal=True,
                )
            )


async def open_server(
    pool: Pool,
    *,
    max_packet: int,
    timeout: float,
    tracked: frozenset[str] = frozenset(),
    tls: ssl.SSLContext | None = None,
    sslmode: str = "disable",
    keys: ScramKeys | None = None,
) -> ServerConn:
    """Connect and log in to the pool's PostgreSQL (over TLS as ``sslmode`` asks, with
    ``tls``); raise PgError with the real reason. sslmode allow: plaintext first, TLS when
    that login fails for a reason TLS could change. ``keys``: SCRAM keys from a client's login
    as the pool's user, for pass-through."""
    if sslmode == "allow" and tls is not None:
        try:
            return await _open(pool, max_packet, timeout, tracked, None, keys=keys)
        except PgError as exc:
            if exc.sqlstate in ALLOW_NO_RETRY:
                raise
    return await _open(pool, max_packet, timeout, tracked, tls, sslmode, keys)


async def _open(
    pool: Pool,
    max_packet: int,
    timeout: float,
    tracked: frozenset[str],
    tls: ssl.SSLContext | None,
    sslmode: str = "disable",
    keys: ScramKeys | None = None,
) -> ServerConn:
    loop = asyncio.get_running_loop()
    cluster = pool.cluster

    def logging_in() -> ServerConn:
        server = ServerConn(pool, max_packet=max_packet, tracked=tracked)
        negotiation = None
        if tls is not None:
            negotiation = Negotiation(tls, sslmode, cluster.host, cluster.port)
        server.login = ServerLoginDriver(server, pool, max_packet, negotiation, keys)
        return server

    try:
        async with asyncio.timeout(timeout if timeout > 0 else None):
            _, proto = await loop.create_connection(logging_in, cluster.host, cluster.port)
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


async def send_cancel(
    host: str,
    port: int,
    pid: int,
    secret: int,
    wait: float = 0.0,
    still: Callable[[], bool] | None = None,
) -> bool:
    """Open a short connection to PostgreSQL carrying a CancelRequest; with ``wait``, wait up
    to that long for PostgreSQL to close it (it signals the backend first): True when it did,
    or when ``still()``, asked once connected, says the cancel is no longer wanted."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if still is not None and not still():
            return True
        writer.write(m.cancel_request(pid, secret))
        if not wait:
            return False
        try:
            async with asyncio.timeout(wait):
                await writer.drain()
                while await reader.read(256):
                    pass
        except (OSError, TimeoutError):
            return False  # sent, but PostgreSQL was not seen closing the connection
        return True
    finally:
        writer.close()


def peer_address(transport: Any) -> tuple[str, str]:
    """(address, "address:port") of a transport's peer; "unix" for a Unix socket."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple):
        return str(peer[0]), f"{peer[0]}:{peer[1]}"
    name = str(peer or "unix")
    return name, name
