"""pyproxy logging in to PostgreSQL: the answer to each Authentication request (sans-IO).

The configured secret may be a plaintext password, an md5 hash (enough for md5 logins) or a
SCRAM verifier (enough only with the keys a client's SCRAM login gave: pass-through)."""

from __future__ import annotations

from pyproxy.auth.md5 import md5_response
from pyproxy.auth.passthrough import PassThroughClient, ScramKeys
from pyproxy.auth.scram import AuthFailed, ScramClient
from pyproxy.auth.verifiers import MD5, PLAIN, SCRAM, md5_response_from_hash, secret_kind
from pyproxy.proto import messages as m
from pyproxy.proto.codes import (
    AUTH_CLEARTEXT,
    AUTH_MD5,
    AUTH_OK,
    AUTH_SASL,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
)

_HOLDS = {MD5: "an md5 hash", SCRAM: "a SCRAM verifier", None: "no password"}


class ServerLogin:
    """Answers a server's Authentication requests for ``user`` with ``password`` (plaintext,
    md5 hash or SCRAM verifier) or, for SCRAM, with ``keys`` from a client's login."""

    def __init__(self, user: str, password: str | None, keys: ScramKeys | None = None) -> None:
        self.user = user
        self.password = password
        self.kind = None if password is None else _kind(password)
        self.keys = keys
        self.scram: ScramClient | PassThroughClient | None = None

    def answer(self, code: int, data: bytes) -> bytes:
        """The bytes answering Authentication request ``code`` (with its ``data``); empty when
        nothing is to be sent. Raises AuthFailed when the login cannot go on."""
        if code == AUTH_OK:
            return b""
        password, kind = self.password, self.kind
        if code == AUTH_CLEARTEXT and kind == PLAIN and password is not None:
            return m.password_message(m.cstr(password))
        if code == AUTH_MD5 and password is not None and kind in (PLAIN, MD5):
            if kind == MD5:
                return m.password_message(md5_response_from_hash(password, data[:4]) + b"\x00")
            return m.password_message(md5_response(self.user, password, data[:4]) + b"\x00")
        if code == AUTH_SASL:
            mechs = m.parse_cstrings(data)
            if "SCRAM-SHA-256" not in mechs:
                raise AuthFailed(f"server offers no supported SASL mechanism: {mechs}")
            if kind == PLAIN and password is not None:
                self.scram = ScramClient(password)
            elif self.keys is not None:
                self.scram = PassThroughClient(self.keys, self.user)
            else:
                raise AuthFailed(self._cannot("SCRAM-SHA-256"))
            return m.sasl_initial_response("SCRAM-SHA-256", self.scram.client_first())
        if code == AUTH_SASL_CONTINUE and self.scram is not None:
            return m.password_message(self.scram.handle_server_first(data))
        if code == AUTH_SASL_FINAL and self.scram is not None:
            self.scram.verify_server_final(data)
            return b""
        if code == AUTH_CLEARTEXT:
            raise AuthFailed(self._cannot("a cleartext password"))
        if code == AUTH_MD5:
            raise AuthFailed(self._cannot("md5"))
        raise AuthFailed(f"unsupported authentication request {code} from server")

    def _cannot(self, method: str) -> str:
        holds = _HOLDS.get(self.kind, "no password")
        why = f'the server asks for {method}; pyproxy holds {holds} for "{self.user}"'
        if method == "SCRAM-SHA-256" and self.kind in (SCRAM, None):
            why += (
                " and no client has logged in as this user with SCRAM yet (pass-through needs "
                "a client's SCRAM proof; configure the plaintext password, e.g. with "
                "password_env, for a pool with a fixed user)"
            )
        return why


def _kind(password: str) -> str:
    try:
        return secret_kind(password)
    except ValueError:
        return PLAIN
