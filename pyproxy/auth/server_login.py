"""pyproxy logging in to PostgreSQL: the answer to each Authentication request (sans-IO)."""

from __future__ import annotations

from pyproxy.auth.md5 import md5_response
from pyproxy.auth.scram import AuthFailed, ScramClient
from pyproxy.proto import messages as m
from pyproxy.proto.codes import (
    AUTH_CLEARTEXT,
    AUTH_MD5,
    AUTH_OK,
    AUTH_SASL,
    AUTH_SASL_CONTINUE,
    AUTH_SASL_FINAL,
)


class ServerLogin:
    """Answers a server's Authentication requests for ``user`` with ``password``."""

    def __init__(self, user: str, password: str | None) -> None:
        self.user = user
        self.password = password
        self.scram: ScramClient | None = None

    def answer(self, code: int, data: bytes) -> bytes:
        """The bytes answering Authentication request ``code`` (with its ``data``); empty when
        nothing is to be sent. Raises AuthFailed when the login cannot go on."""
        if code == AUTH_OK:
            return b""
        password = self.password
        if password is None:
            raise AuthFailed(f'the server asks for a password; pyproxy has none for "{self.user}"')
        if code == AUTH_CLEARTEXT:
            return m.password_message(m.cstr(password))
        if code == AUTH_MD5:
            return m.password_message(md5_response(self.user, password, data[:4]) + b"\x00")
        if code == AUTH_SASL:
            mechs = m.parse_cstrings(data)
            if "SCRAM-SHA-256" not in mechs:
                raise AuthFailed(f"server offers no supported SASL mechanism: {mechs}")
            self.scram = ScramClient(password)
            return m.sasl_initial_response("SCRAM-SHA-256", self.scram.client_first())
        if code == AUTH_SASL_CONTINUE and self.scram is not None:
            return m.password_message(self.scram.handle_server_first(data))
        if code == AUTH_SASL_FINAL and self.scram is not None:
            self.scram.verify_server_final(data)
            return b""
        raise AuthFailed(f"unsupported authentication request {code} from server")
