"""PostgreSQL's md5 password authentication: the stored hash, the salted response, its check."""

from __future__ import annotations

import hashlib
import hmac


def md5_password_hash(user: str, password: str) -> str:
    """Return PostgreSQL's stored form: ``"md5" + md5(password + user)`` in hex."""
    return "md5" + hashlib.md5((password + user).encode("utf-8")).hexdigest()


def md5_response(user: str, password: str, salt: bytes) -> bytes:
    """Return what a client sends for AuthenticationMD5Password with this 4-byte salt.

    ``b"md5" + md5(md5(password + user).hex + salt).hex``, without the terminating NUL.
    """
    inner = hashlib.md5((password + user).encode("utf-8")).hexdigest().encode("ascii")
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode("ascii")


def md5_verify(user: str, password: str, salt: bytes, response: bytes) -> bool:
    """Check a client's md5 response in constant time; one trailing NUL is tolerated."""
    if response.endswith(b"\x00"):
        response = response[:-1]
    return hmac.compare_digest(md5_response(user, password, salt), bytes(response))
