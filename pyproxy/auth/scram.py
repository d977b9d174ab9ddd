"""SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, both roles; as server also
SCRAM-SHA-256-PLUS with tls-server-end-point channel binding (RFC 5929), given the binding data."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
MECHANISM_PLUS = "SCRAM-SHA-256-PLUS"
CBIND_TYPE = "tls-server-end-point"
DEFAULT_ITERATIONS = 4096
_NONCE_BYTES = 18
_SALT_BYTES = 16
_KEY_LEN = 32
_FAILED = "password authentication failed"


class AuthFailed(Exception):
    """The SCRAM exchange failed: a malformed message, a refused option or a wrong password."""


@dataclass(frozen=True)
class ScramSecret:
    """The parts of a stored SCRAM secret: what a server needs to verify a client."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes


# --- primitives -------------------------------------------------------------------------------


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise AuthFailed("malformed SCRAM message: invalid base64") from exc


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    normalized = saslprep(password).encode("utf-8")
    return hashlib.pbkdf2_hmac("sha256", normalized, salt, iterations)


def _new_nonce() -> str:
    # base64 output never contains ',' and is printable ASCII, as RFC 5802 requires of a nonce.
    return _b64(secrets.token_bytes(_NONCE_BYTES))


def _is_printable_nonce(nonce: str) -> bool:
    return bool(nonce) and all(0x21 <= ord(ch) <= 0x7E and ch != "," for ch in nonce)


# --- SASLprep (RFC 4013) ------------------------------------------------------------------------

_PROHIBITED = (
    stringprep.in_table_c12,
    stringprep.in_table_c21,
    stringprep.in_table_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
    stringprep.in_table_a1,
)


def saslprep(password: str) -> str:
    """Normalise a password as PostgreSQL does: SASLprep, or the raw password when that fails.

    Pure-ASCII passwords are returned unchanged, like PostgreSQL's ``pg_saslprep``.
    """
    if password.isascii():
        return password
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    normalized = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    if not normalized or any(check(ch) for ch in normalized for check in _PROHIBITED):
        return password
    if any(stringprep.in_table_d1(ch) for ch in normalized):
        if any(stringprep.in_table_d2(ch) for ch in normalized):
            return password
        if not (stringprep.in_table_d1(normalized[0]) and stringprep.in_table_d1(normalized[-1])):
            return password
    return normalized


# --- stored secrets ------------------------------------------------------------------------------


def _derive_secret(password: str, salt: bytes, iterations: int) -> ScramSecret:
    salted = _salted_password(password, salt, iterations)
    stored_key = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
    server_key = _hmac(salted, b"Server Key")
    return ScramSecret(iterations, salt, stored_key, server_key)


def make_scram_secret(
    password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> str:
    """Return PostgreSQL's stored form:
    ``SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>``."""
    if iterations < 1:
        raise ValueError("iterations must be positive")
    if salt is None:
        salt = secrets.token_bytes(_SALT_BYTES)
    s = _derive_secret(password, salt, iterations)
    return f"{MECHANISM}${s.iterations}:{_b64(s.salt)}${_b64(s.stored_key)}:{_b64(s.server_key)}"


def parse_scram_secret(secret: str) -> ScramSecret:
    """Parse a stored SCRAM secret; raise ValueError if it is not in PostgreSQL's format."""
    try:
        mechanism, params, keys = secret.split("$")
        iter_text, salt_text = params.split(":")
        stored_text, server_text = keys.split(":")
        iterations = int(iter_text)
        salt = base64.b64decode(salt_text, validate=True)
        stored_key = base64.b64decode(stored_text, validate=True)
        server_key = base64.b64decode(server_text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ValueError("not a SCRAM-SHA-256 secret") from exc
    if mechanism != MECHANISM or iterations < 1 or not salt:
        raise ValueError("not a SCRAM-SHA-256 secret")
    if len(stored_key) != _KEY_LEN or len(server_key) != _KEY_LEN:
        raise ValueError("not a SCRAM-SHA-256 secret: wrong key length")
    return ScramSecret(iterations, salt, stored_key, server_key)


# --- message parsing -----------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AuthFailed("malformed SCRAM message: not valid UTF-8") from exc


def _attributes(text: str) -> list[tuple[str, str]]:
    """Split ``a=1,b=2`` into pairs; every attribute is one letter, '=', then a value."""
    pairs = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not part[0].isascii() or not part[0].isalpha():
            raise AuthFailed("malformed SCRAM message: bad attribute")
        pairs.append((part[0], part[2:]))
    return pairs


def _expect(pairs: list[tuple[str, str]], index: int, name: str) -> str:
    if index >= len(pairs) or pairs[index][0] != name:
        raise AuthFailed(f"malformed SCRAM message: expected attribute {name!r}")
    return pairs[index][1]


def _saslname(user: str) -> str:
    return user.replace("=", "=3D").replace(",", "=2C")


# --- server role ---------------------------------------------------------------------------------


class ScramServer:
    """The server side of one SCRAM-SHA-256 exchange: pyproxy verifying a client.

    Give a plaintext ``password``, a stored ``secret``, or neither: with neither the exchange runs
    normally and always fails at the final step, so an unknown user looks like a wrong password.
    """

    mechanisms: tuple[str, ...] = (MECHANISM,)

    def __init__(
        self,
        *,
        password: str | None = None,
        secret: str | None = None,
        nonce: str | None = None,
        channel_binding: bytes | None = None,
    ) -> None:
        """``channel_binding``: the connection's tls-server-end-point data; with it
        SCRAM-SHA-256-PLUS is offered first."""
        if password is not None and secret is not None:
            raise ValueError("give either password or secret, not both")
        if nonce is not None and not _is_printable_nonce(nonce):
            raise ValueError("nonce must be printable ASCII without ','")
        self._mock = password is None and secret is None
        if secret is not None:
            self._secret = parse_scram_secret(secret)
        elif password is not None:
            self._secret = _derive_secret(
                password, secrets.token_bytes(_SALT_BYTES), DEFAULT_ITERATIONS
            )
        else:
            self._secret = ScramSecret(
                DEFAULT_ITERATIONS,
                secrets.token_bytes(_SALT_BYTES),
                secrets.token_bytes(_KEY_LEN),
                secrets.token_bytes(_KEY_LEN),
            )
        self._server_nonce = nonce if nonce is not None else _new_nonce()
        self._cbind = channel_binding
        if channel_binding is not None:
            self.mechanisms = (MECHANISM_PLUS, MECHANISM)
        self._state = "client-first"
        self._gs2_header = ""
        self._cbind_data = b""  # what c= must carry after the GS2 header
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""
        self.client_key: bytes | None = None  # recovered from a valid proof (pass-through)

    @property
    def secret(self) -> ScramSecret:
        return self._secret

    def handle_client_first(self, data: bytes, mechanism: str = MECHANISM) -> bytes:
        """Take the client-first-message (for the ``mechanism`` the client chose); return the
        server-first-message."""
        if self._state != "client-first":
            raise AuthFailed("SCRAM exchange out of order")
        self._state = "failed"
        text = _decode(data)
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise AuthFailed("malformed SCRAM message: missing GS2 header")
        cbind_flag, authzid, bare = parts
        plus = mechanism == MECHANISM_PLUS and self._cbind is not None
        if cbind_flag.startswith("p="):
            if not plus or cbind_flag != f"p={CBIND_TYPE}":
                raise AuthFailed(f"SCRAM channel binding {cbind_flag[2:]!r} is not supported")
            self._cbind_data = self._cbind or b""
        elif plus:
            raise AuthFailed("SCRAM-SHA-256-PLUS was chosen but no channel binding was used")
        elif cbind_flag == "y" and self._cbind is not None:
            # The client thinks the server does not bind channels, but PLUS was offered.
            raise AuthFailed("SCRAM channel binding negotiation error")
        elif cbind_flag not in ("n", "y"):
            raise AuthFailed("malformed SCRAM message: bad channel binding flag")
        if authzid:
            raise AuthFailed("SCRAM authorization identity is not supported")
        pairs = _attributes(bare)
        if pairs and pairs[0][0] == "m":
            raise AuthFailed("SCRAM mandatory extensions are not supported")
        _expect(pairs, 0, "n")
        client_nonce = _expect(pairs, 1, "r")
        if not _is_printable_nonce(client_nonce):
            raise AuthFailed("malformed SCRAM message: bad nonce")
        self._gs2_header = f"{cbind_flag},,"
        self._client_first_bare = bare
        self._nonce = client_nonce + self._server_nonce
        s = self._secret
        self._server_first = f"r={self._nonce},s={_b64(s.salt)},i={s.iterations}"
        self._state = "client-final"
        return self._server_first.encode("ascii")

    def handle_client_final(self, data: bytes) -> bytes:
        """Take the client-final-message, verify the proof; return the server-final-message."""
        if self._state != "client-final":
            raise AuthFailed("SCRAM exchange out of order")
        self._state = "failed"
        text = _decode(data)
        without_proof, sep, proof_text = text.rpartition(",p=")
        if not sep:
            raise AuthFailed("malformed SCRAM message: missing proof")
        pairs = _attributes(without_proof)
        channel_binding = _unb64(_expect(pairs, 0, "c"))
        if channel_binding != self._gs2_header.encode("ascii") + self._cbind_data:
            raise AuthFailed("SCRAM channel binding check failed")
        if _expect(pairs, 1, "r") != self._nonce:
            raise AuthFailed("SCRAM nonce mismatch")
        proof = _unb64(proof_text)
        if len(proof) != _KEY_LEN:
            raise AuthFailed("malformed SCRAM message: bad proof length")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}"
        auth_bytes = auth_message.encode("utf-8")
        s = self._secret
        client_key = _xor(proof, _hmac(s.stored_key, auth_bytes))
        valid = hmac.compare_digest(hashlib.sha256(client_key).digest(), s.stored_key)
        if self._mock or not valid:
            raise AuthFailed(_FAILED)
        self.client_key = client_key
        self._state = "done"
        return f"v={_b64(_hmac(s.server_key, auth_bytes))}".encode("ascii")


# --- client role ---------------------------------------------------------------------------------


class ScramClient:
    """The client side of one SCRAM-SHA-256 exchange: pyproxy logging in to PostgreSQL.

    PostgreSQL ignores the SCRAM user name (it uses the startup packet's), so it defaults to "".
    """

    def __init__(self, password: str, *, nonce: str | None = None, user: str = "") -> None:
        if nonce is not None and not _is_printable_nonce(nonce):
            raise ValueError("nonce must be printable ASCII without ','")
        self._password = password
        self._client_nonce = nonce if nonce is not None else _new_nonce()
        self._client_first_bare = f"n={_saslname(user)},r={self._client_nonce}"
        self._server_signature: bytes | None = None
        self._state = "client-first"

    def client_first(self) -> bytes:
        """Return the client-first-message (GS2 header ``n,,`` and the bare message)."""
        if self._state != "client-first":
            raise AuthFailed("SCRAM exchange out of order")
        self._state = "server-first"
        return f"n,,{self._client_first_bare}".encode()

    def handle_server_first(self, data: bytes) -> bytes:
        """Take the server-first-message; return the client-final-message with the proof."""
        if self._state != "server-first":
            raise AuthFailed("SCRAM exchange out of order")
        self._state = "failed"
        server_first = _decode(data)
        pairs = _attributes(server_first)
        if pairs and pairs[0][0] == "m":
            raise AuthFailed("SCRAM mandatory extensions are not supported")
        nonce = _expect(pairs, 0, "r")
        salt = _unb64(_expect(pairs, 1, "s"))
        iter_text = _expect(pairs, 2, "i")
        if not nonce.startswith(self._client_nonce) or len(nonce) == len(self._client_nonce):
            raise AuthFailed("SCRAM nonce mismatch")
        if not _is_printable_nonce(nonce):
            raise AuthFailed("malformed SCRAM message: bad nonce")
        if not (iter_text.isascii() and iter_text.isdigit() and len(iter_text) <= 10):
            raise AuthFailed("malformed SCRAM message: bad iteration count")
        if int(iter_text) < 1 or not salt:
            raise AuthFailed("malformed SCRAM message: bad salt or iteration count")
        salted = _salted_password(self._password, salt, int(iter_text))
        without_proof = f"c=biws,r={nonce}"
        auth_bytes = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        client_key = _hmac(salted, b"Client Key")
        client_signature = _hmac(hashlib.sha256(client_key).digest(), auth_bytes)
        proof = _xor(client_key, client_signature)
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_bytes)
        self._state = "server-final"
        return f"{without_proof},p={_b64(proof)}".encode("ascii")

    def verify_server_final(self, data: bytes) -> None:
        """Check the server-final-message; raise AuthFailed on an error or a wrong signature."""
        if self._state != "server-final" or self._server_signature is None:
            raise AuthFailed("SCRAM exchange out of order")
        self._state = "failed"
        pairs = _attributes(_decode(data))
        if pairs[0][0] == "e":
            raise AuthFailed(f"server refused SCRAM authentication: {pairs[0][1]}")
        signature = _unb64(_expect(pairs, 0, "v"))
        if not hmac.compare_digest(signature, self._server_signature):
            raise AuthFailed("SCRAM server signature mismatch")
        self._state = "done"
