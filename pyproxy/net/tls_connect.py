"""TLS towards PostgreSQL, as libpq does it: an SSLRequest first; ``S`` and the handshake (SNI
sent, the certificate checked as the sslmode asks), ``N`` and plaintext only for allow/prefer.
A byte behind the one-byte answer fails the connection (CVE-2021-23222); a failed check fails
the login with 08001 and the reason, which the waiting client gets."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from pyproxy.errors import (
    CANNOT_CONNECT_NOW,
    INVALID_CATALOG_NAME,
    INVALID_PASSWORD,
    PROTOCOL_VIOLATION,
    SQLCLIENT_UNABLE_TO_ESTABLISH,
    TOO_MANY_CONNECTIONS,
    PgError,
)
from pyproxy.proto.codes import ENCRYPTION_ACCEPTED, ENCRYPTION_REFUSED
from pyproxy.tls.modes import REQUIRING

if TYPE_CHECKING:
    from pyproxy.net.connect import ServerLoginDriver

# A login without TLS failed for one of these reasons: trying again with TLS (sslmode allow)
# would not help (Odyssey's list, after libpq).
ALLOW_NO_RETRY = frozenset(
    (INVALID_PASSWORD, INVALID_CATALOG_NAME, TOO_MANY_CONNECTIONS, CANNOT_CONNECT_NOW)
)


class Negotiation:
    """The SSLRequest exchange of one server connection, for ``mode`` with ``context``."""

    def __init__(self, context: ssl.SSLContext, mode: str, host: str, port: int) -> None:
        self.context = context
        self.mode = mode
        self.host = host
        self.port = port
        self.waiting = True  # for the one-byte answer
        self.task: asyncio.Task[None] | None = None

    def answer(self, driver: ServerLoginDriver, data: bytes) -> None:
        """PostgreSQL's answer to the SSLRequest (raises PgError when the login cannot go on)."""
        self.waiting = False
        server = driver.server
        reply = data[:1]
        if reply not in (ENCRYPTION_ACCEPTED, ENCRYPTION_REFUSED):
            raise PgError(
                PROTOCOL_VIOLATION,
                f"received invalid response to SSL negotiation: {reply!r}",
                fatal=True,
            )
        if len(data) > 1:
            raise PgError(
                PROTOCOL_VIOLATION, "received unencrypted data after SSL response", fatal=True
            )
        assert server.transport is not None
        if reply == ENCRYPTION_REFUSED:
            if self.mode in REQUIRING:
                raise PgError(
                    SQLCLIENT_UNABLE_TO_ESTABLISH,
                    f"server {self.host}:{self.port} does not support SSL, but SSL was required "
                    f"(server_tls_sslmode {self.mode})",
                    fatal=True,
                )
            server.transport.write(driver.startup_message)
            return
        server.transport.pause_reading()  # nothing more is read in the clear
        self.task = asyncio.get_running_loop().create_task(self._upgrade(driver))

    async def _upgrade(self, driver: ServerLoginDriver) -> None:
        server = driver.server
        raw = server.transport
        assert raw is not None
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(raw, server, self.context, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            driver.fail(self._failed(f"certificate verify failed: {exc.verify_message}"))
            return
        except (ssl.SSLError, OSError, ConnectionError, TimeoutError) as exc:
            driver.fail(self._failed(str(exc) or type(exc).__name__))
            return
        if transport is None or transport.is_closing() or server.closed:
            # asyncio reports a connection closed mid-handshake as a handshake that ended.
            driver.fail(self._failed("the server closed the connection during the handshake"))
            return
        server.transport = transport  # type: ignore[assignment]
        transport.write(driver.startup_message)

    def _failed(self, reason: str) -> PgError:
        return PgError(
            SQLCLIENT_UNABLE_TO_ESTABLISH,
            f"TLS connection to server {self.host}:{self.port} failed: {reason}",
            hint=f"check server_tls_ca_file and server_tls_sslmode ({self.mode}) for this cluster",
            fatal=True,
        )
