"""Client authentication exchange (trust, md5, SCRAM-SHA-256) driven by the client protocol."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from typing import TYPE_CHECKING

from pyproxy.auth.md5 import md5_verify
from pyproxy.auth.scram import AuthFailed, ScramServer
from pyproxy.config import ClusterConfig
from pyproxy.errors import INVALID_AUTHORIZATION, INVALID_PASSWORD, PROTOCOL_VIOLATION, PgError
from pyproxy.proto import messages as m

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn
    from pyproxy.net.state import ProxyState

log = logging.getLogger("pyproxy.auth")
_FAILED = -1  # ``step`` of a login whose failure is being delayed


class AuthDeferred(PgError):
    """A failed login whose FATAL is sent later (see ``ClientAuth.fail_later``): the caller
    must not answer or close now."""

    def __init__(self) -> None:
        super().__init__(INVALID_PASSWORD, "authentication failure answered later", fatal=True)


class ClientAuth:
    """One login attempt. A wrong password and an unknown user fail the same way (28P01)."""

    def __init__(
        self, client: ClientConn, proxy: ProxyState, cluster: ClusterConfig, user: str
    ) -> None:
        self.client = client
        self.proxy = proxy
        self.cluster = cluster
        self.user = user
        self.known = cluster.user(user)
        self.method = proxy.config.proxy.auth_type
        self.salt = b""
        self.scram: ScramServer | None = None
        self.step = 0

    def _failed(self) -> PgError:
        """A wrong password or an unknown user: counted by the login throttle, which may ask
        for the answer to wait (``fail_later``)."""
        err = PgError(
            INVALID_PASSWORD, f'password authentication failed for user "{self.user}"', fatal=True
        )
        delay = self.proxy.throttle.failed(self.client.address, self.user, time.monotonic())
        if delay > 0:
            self.fail_later(err, delay)
            return AuthDeferred()
        return err

    def fail_later(self, err: PgError, delay: float) -> None:
        """Answer a failed login after ``delay`` seconds; ignore the client meanwhile."""
        self.step = _FAILED
        client = self.client
        asyncio.get_running_loop().call_later(delay, client.fatal, err)

    def start(self) -> None:
        t = self.client.transport
        wait = self.proxy.throttle.check(self.client.address, self.user, time.monotonic())
        if wait is not None:
            raise PgError(
                INVALID_AUTHORIZATION,
                "too many failed login attempts from this address",
                hint=f"try again in {max(1, math.ceil(wait))} s",
                fatal=True,
            )
        if self.method == "trust":
            if self.known is None:
                raise self._failed()
            self._done()
        elif self.method == "md5":
            self.salt = secrets.token_bytes(4)
            t.write(m.auth_md5(self.salt))
        else:
            secret = self.proxy.scram_secret(self.cluster, self.user)
            self.scram = ScramServer(secret=secret)
            t.write(m.auth_sasl(self.scram.mechanisms))

    def message(self, t: int, body: bytes) -> None:
        if self.step == _FAILED:
            return  # the failure is answered after the throttle's delay
        if t != 112:  # 'p'
            raise PgError(
                PROTOCOL_VIOLATION, f"expected a password message, got {chr(t)!r}", fatal=True
            )
        if self.method == "md5":
            ok = self.known is not None and md5_verify(
                self.user, self.known.password, self.salt, body
            )
            if not ok:
                raise self._failed()
            self._done()
            return
        assert self.scram is not None
        try:
            if self.step == 0:
                mech, data = m.parse_sasl_initial(body)
                if mech != "SCRAM-SHA-256":
                    raise PgError(
                        PROTOCOL_VIOLATION, f"unsupported SASL mechanism {mech!r}", fatal=True
                    )
                reply = self.scram.handle_client_first(data)
                self.step = 1
                self.client.transport.write(m.auth_request(m.AUTH_SASL_CONTINUE, reply))
            else:
                final = self.scram.handle_client_final(body)
                if self.known is None:
                    raise self._failed()
                self.client.transport.write(m.auth_request(m.AUTH_SASL_FINAL, final))
                self._done()
        except (AuthFailed, ValueError):
            raise self._failed() from None

    def _done(self) -> None:
        """Authenticated: the client joins its pool, and is greeted at once unless the pool
        still has to learn its server's parameters (then a task waits for them)."""
        from pyproxy.net.client import LOGIN

        self.proxy.throttle.succeeded(self.client.address, self.user)
        self.client.state = LOGIN
        try:
            if self.client.attach():
                self.proxy.login_done(self.client)
                return
        except Exception as exc:
            self._login_ended(exc)
            return
        task = self.proxy.spawn(self.client.finish_login())

        def finished(t: asyncio.Task[None]) -> None:
            if t.cancelled():
                self.proxy.login_done(self.client)
                return
            self._login_ended(t.exception())

        task.add_done_callback(finished)

    def _login_ended(self, exc: BaseException | None) -> None:
        """The end of a login: the deadline stops; an error ends the client."""
        self.proxy.login_done(self.client)
        if isinstance(exc, PgError):
            self.client.fatal(
                PgError(exc.sqlstate, exc.message, fatal=True, detail=exc.detail, hint=exc.hint)
            )
        elif exc is not None:
            log.error("[c%d] login failed: %r", self.client.id, exc)
            self.client.fatal(PgError("XX000", f"internal error during login: {exc}", fatal=True))
