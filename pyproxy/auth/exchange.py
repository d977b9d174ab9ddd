"""A client's login exchange with pyproxy (trust, md5, SCRAM-SHA-256) as a step machine: a
message in, the bytes to answer and whether the client is authenticated (sans-IO).

A wrong password and an unknown user fail the same way (AuthFailed), with the same timing
shape: an unknown user gets a fake SCRAM secret and runs the whole exchange.

The user's stored secret may be a plaintext password, a SCRAM verifier or an md5 hash. As in
PostgreSQL, ``md5`` clients of a user stored as a SCRAM verifier are asked for SCRAM instead,
and a user stored as an md5 hash cannot log in with SCRAM (it fails like a wrong password).
"""

from __future__ import annotations

import secrets

from pyproxy.auth.md5 import md5_verify
from pyproxy.auth.passthrough import ScramKeys, keys_from
from pyproxy.auth.scram import AuthFailed, ScramServer
from pyproxy.auth.verifiers import MD5, PLAIN, SCRAM, md5_verify_hash, secret_kind
from pyproxy.errors import PROTOCOL_VIOLATION, PgError
from pyproxy.proto import messages as m
from pyproxy.proto.codes import AUTH_SASL_CONTINUE, AUTH_SASL_FINAL, PASSWORD_MESSAGE


class ClientExchange:
    """One login attempt of ``user`` (whose stored secret is ``password``, None when unknown)
    by ``method``; ``scram_secret`` is its SCRAM verifier (fake when it has none)."""

    def __init__(
        self,
        method: str,
        user: str,
        password: str | None,
        scram_secret: str,
        channel_binding: bytes | None = None,
    ) -> None:
        """``channel_binding``: tls-server-end-point data of a TLS connection (offers PLUS)."""
        self.channel_binding = channel_binding
        self.kind = None if password is None else secret_kind(password)
        if method == "md5" and self.kind == SCRAM:
            method = "scram-sha-256"  # PostgreSQL does the same for md5 in pg_hba.conf
        self.method = method
        self.user = user
        self.password = password
        self.scram_secret = scram_secret
        self.salt = b""
        self.scram: ScramServer | None = None
        self.step = 0

    @property
    def keys(self) -> ScramKeys | None:
        """After a SCRAM login against a stored verifier: the keys for pass-through."""
        if self.kind != SCRAM or self.scram is None:
            return None
        return keys_from(self.scram)

    def start(self) -> tuple[bytes, bool]:
        """The first authentication request, and whether the client is already in (trust)."""
        if self.method == "trust":
            if self.password is None:
                raise AuthFailed("unknown user")
            return b"", True
        if self.method == "md5":
            self.salt = secrets.token_bytes(4)
            return m.auth_md5(self.salt), False
        self.scram = ScramServer(secret=self.scram_secret, channel_binding=self.channel_binding)
        return m.auth_sasl(self.scram.mechanisms), False

    def message(self, kind: int, body: bytes) -> tuple[bytes, bool]:
        """The answer to one client message and whether the client is now authenticated."""
        if kind != PASSWORD_MESSAGE:
            raise PgError(
                PROTOCOL_VIOLATION, f"expected a password message, got {chr(kind)!r}", fatal=True
            )
        if self.method == "md5":
            if not self._md5_ok(body):
                raise AuthFailed("wrong password")
            return b"", True
        assert self.scram is not None
        try:
            if self.step == 0:
                mech, data = m.parse_sasl_initial(body)
                if mech not in self.scram.mechanisms:
                    raise PgError(
                        PROTOCOL_VIOLATION, f"unsupported SASL mechanism {mech!r}", fatal=True
                    )
                reply = self.scram.handle_client_first(data, mech)
                self.step = 1
                return m.auth_request(AUTH_SASL_CONTINUE, reply), False
            final = self.scram.handle_client_final(body)
        except ValueError as exc:
            raise AuthFailed(str(exc)) from None
        if self.password is None or self.kind == MD5:
            raise AuthFailed("unknown user")
        return m.auth_request(AUTH_SASL_FINAL, final), True

    def _md5_ok(self, body: bytes) -> bool:
        password = self.password
        if password is None:
            return False
        if self.kind == MD5:
            return md5_verify_hash(password, self.salt, body)
        return self.kind == PLAIN and md5_verify(self.user, password, self.salt, body)
