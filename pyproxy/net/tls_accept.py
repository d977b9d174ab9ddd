"""TLS towards clients: an SSLRequest answered ``S`` and the connection upgraded in place,
PostgreSQL 17's direct TLS (a ClientHello first, ALPN "postgresql"), plaintext refused under
client_tls_sslmode require and up, and client certificates checked for verify-full."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from pyproxy.errors import INVALID_AUTHORIZATION, PgError, ProtocolError
from pyproxy.proto.codes import ENCRYPTION_ACCEPTED, ENCRYPTION_REFUSED
from pyproxy.proto.phases import ClientPhase
from pyproxy.tls.modes import ALPN, REQUIRING

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn
    from pyproxy.net.login import Login
    from pyproxy.tls.contexts import ServingContext

log = logging.getLogger("pyproxy.tls")
PLAINTEXT_AFTER_SSLREQUEST = "received unencrypted data after SSL request"


def ssl_request(login: Login, rest: bytes) -> None:
    """An SSLRequest: ``S`` and the upgrade when client TLS is on, else ``N``. Bytes sent
    behind it in the clear are refused either way (CVE-2021-23214)."""
    client = login.client
    if rest:
        raise ProtocolError(PLAINTEXT_AFTER_SSLREQUEST)
    if login.tls is not None:
        raise ProtocolError("SSL request received on a connection already using TLS")
    serving = client.proxy.tls.client
    if serving is None:
        client.transport.write(ENCRYPTION_REFUSED)
        return
    # Nothing may be read in the clear from here: reading stops before ``S`` goes out, and
    # start_tls resumes it under TLS.
    client.transport.pause_reading()
    client.transport.write(ENCRYPTION_ACCEPTED)
    _start(login, serving, b"")


def direct_tls(login: Login, data: bytes) -> bool:
    """A connection opening with a TLS ClientHello (PostgreSQL 17's sslnegotiation=direct):
    True when it is taken over here."""
    serving = login.client.proxy.tls.client
    if serving is None or data[:1] != b"\x16" or login.tls is not None:
        return False
    login.client.transport.pause_reading()
    _start(login, serving, data, direct=True)
    return True


def check_startup(login: Login) -> None:
    """A StartupMessage: refused without TLS under require and up (28000)."""
    client = login.client
    mode = client.proxy.config.proxy.client_tls.mode
    if login.tls is None and mode in REQUIRING and client.address != "unix":
        raise PgError(
            INVALID_AUTHORIZATION,
            "SSL required: this pooler accepts only TLS connections",
            hint="connect with sslmode=require (or verify-ca / verify-full)",
            fatal=True,
        )


def check_certificate(login: Login, user: str) -> None:
    """client_tls_sslmode verify-full: the client certificate's common name is the user."""
    client = login.client
    if client.proxy.config.proxy.client_tls.mode != "verify-full" or login.tls is None:
        return
    cert = login.tls.getpeercert() or {}
    names = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"]
    if user not in names:
        raise PgError(
            INVALID_AUTHORIZATION,
            f'certificate authentication failed for user "{user}"',
            detail="the client certificate's common name is not the user name",
            fatal=True,
        )


def _start(login: Login, serving: ServingContext, first: bytes, direct: bool = False) -> None:
    login.upgrading = []
    task = login.client.proxy.spawn(_upgrade(login, serving, first, direct))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())


async def _upgrade(login: Login, serving: ServingContext, first: bytes, direct: bool) -> None:
    client = login.client
    raw = client.transport
    loop = asyncio.get_running_loop()
    timeout = client.proxy.config.proxy.client_login_timeout or None
    handshake = loop.create_task(
        loop.start_tls(raw, client, serving.context, server_side=True,
                       ssl_handshake_timeout=timeout)
    )  # fmt: skip
    if first:
        # The ClientHello has been read already: once start_tls has put its TLS protocol on
        # the transport (its first step, run during this sleep), hand it those bytes, before
        # the transport reads anything more.
        await asyncio.sleep(0)
        loop.call_soon(_replay, raw, first)
    try:
        transport = await handshake
    except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
        log.info("[c%d] TLS handshake with %s failed: %s", client.id, client.peer, exc)
        _lost(client, raw, exc)
        return
    if transport is None or transport.is_closing() or client.phase is ClientPhase.CLOSED:
        _lost(client, raw, None)  # closed during the handshake (client_login_timeout)
        return
    client.transport = transport  # type: ignore[assignment]
    login.tls = transport.get_extra_info("ssl_object")
    login.channel_binding = serving.end_point  # of the certificate this handshake presented
    held, login.upgrading = login.upgrading or [], None
    if direct and (login.tls is None or login.tls.selected_alpn_protocol() != ALPN):
        client.fatal(
            ProtocolError(
                "received direct SSL connection request without ALPN protocol negotiation extension"
            )
        )
        return
    log.debug("[c%d] TLS %s with %s", client.id, login.tls and login.tls.version(), client.peer)
    for data in held:
        if client.phase is ClientPhase.CLOSED:
            break
        client.data_received(data)


def _lost(client: ClientConn, raw: asyncio.Transport, exc: Exception | None) -> None:
    """Asyncio's TLS protocol does not tell the client protocol of a connection lost during
    the handshake: end it here."""
    raw.abort()
    if client in client.proxy.clients:
        client.connection_lost(exc)


def _replay(raw: asyncio.Transport, data: bytes) -> None:
    """Give bytes already read to the TLS protocol start_tls put on ``raw``."""
    proto = raw.get_protocol()
    view = memoryview(data)
    while view:
        if hasattr(proto, "buffer_updated"):  # asyncio's and uvloop's TLS protocols
            buf = proto.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            proto.buffer_updated(n)
        else:
            n = len(view)
            proto.data_received(bytes(view))
        view = view[n:]
