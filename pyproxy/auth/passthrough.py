"""SCRAM pass-through: logging in to PostgreSQL with the ClientKey recovered from a client's
SCRAM proof, so pyproxy needs only the role's verifier, never its password (sans-IO).

A client proves it knows ClientKey; pyproxy, holding StoredKey = H(ClientKey), recovers it as
ClientProof XOR HMAC(StoredKey, AuthMessage). PostgreSQL then accepts a proof built from the same
ClientKey only for the same salt and iteration count: the verifier pyproxy checked the client
against must be PostgreSQL's own for that role (as auth_query guarantees).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from pyproxy.auth.scram import AuthFailed, ScramServer

MAX_KEYS = 10000  # (cluster, user) pairs whose keys are remembered, least recently used dropped


@dataclass(frozen=True)
class ScramKeys:
    """What a SCRAM login needs besides the password: the verifier's salt and iterations, the
    ClientKey recovered from a client's proof and the ServerKey to check PostgreSQL's answer."""

    iterations: int
    salt: bytes
    client_key: bytes
    server_key: bytes


def keys_from(server: ScramServer) -> ScramKeys | None:
    """The keys a successful exchange recovered (None before success)."""
    if server.client_key is None:
        return None
    s = server.secret
    return ScramKeys(s.iterations, s.salt, server.client_key, s.server_key)


class KeyStore:
    """Keys recovered from clients, by (cluster id, user), bounded in number."""

    def __init__(self, limit: int = MAX_KEYS) -> None:
        self.limit = limit
        self._keys: OrderedDict[tuple[str, str], ScramKeys] = OrderedDict()

    def put(self, cluster_id: str, user: str, keys: ScramKeys) -> bool:
        """Remember ``keys``; True when they are new for this user."""
        key = (cluster_id, user)
        new = self._keys.get(key) != keys
        self._keys[key] = keys
        self._keys.move_to_end(key)
        while len(self._keys) > self.limit:
            self._keys.popitem(last=False)
        return new

    def get(self, cluster_id: str, user: str) -> ScramKeys | None:
        return self._keys.get((cluster_id, user))


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class PassThroughClient:
    """The client side of a SCRAM-SHA-256 exchange with PostgreSQL, from ScramKeys instead of
    a password; the same steps as ``ScramClient``."""

    def __init__(self, keys: ScramKeys, user: str, *, nonce: str | None = None) -> None:
        self.keys = keys
        self.user = user
        self._client_nonce = nonce or _b64(secrets.token_bytes(18))
        self._client_first_bare = f"n=,r={self._client_nonce}"
        self._server_signature: bytes | None = None

    def client_first(self) -> bytes:
        return f"n,,{self._client_first_bare}".encode()

    def handle_server_first(self, data: bytes) -> bytes:
        """Take PostgreSQL's server-first-message; return the client-final-message."""
        try:
            server_first = bytes(data).decode("ascii")
            attrs = dict(part.split("=", 1) for part in server_first.split(","))
            nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        except (ValueError, KeyError, UnicodeDecodeError):
            raise AuthFailed("malformed SCRAM message from the server") from None
        if not nonce.startswith(self._client_nonce) or len(nonce) == len(self._client_nonce):
            raise AuthFailed("SCRAM nonce mismatch")
        keys = self.keys
        if salt != keys.salt or iterations != keys.iterations:
            raise AuthFailed(
                f'SCRAM pass-through for user "{self.user}" is not possible: PostgreSQL\'s '
                "verifier for this role has another salt or iteration count than the one "
                "pyproxy checked the client against (use PostgreSQL's own verifier from "
                "pg_authid.rolpassword, or auth_query, or a plaintext password)"
            )
        without_proof = f"c=biws,r={nonce}"
        auth = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        signature = _hmac(hashlib.sha256(keys.client_key).digest(), auth)
        proof = bytes(a ^ b for a, b in zip(keys.client_key, signature, strict=True))
        self._server_signature = _hmac(keys.server_key, auth)
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def verify_server_final(self, data: bytes) -> None:
        text = bytes(data).decode("ascii", "replace")
        if text.startswith("e="):
            raise AuthFailed(f"server refused SCRAM authentication: {text[2:]}")
        try:
            signature = base64.b64decode(text[2:], validate=True) if text[:2] == "v=" else b""
        except ValueError:
            signature = b""
        expected = self._server_signature or b"-"
        if not hmac.compare_digest(signature, expected):
            raise AuthFailed("SCRAM server signature mismatch")
