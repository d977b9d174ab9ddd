"""Stored password forms: plaintext, a SCRAM-SHA-256 verifier or an md5 hash (as PostgreSQL's
``pg_authid.rolpassword`` and PgBouncer's auth_file hold them), and md5 logins from a hash."""

from __future__ import annotations

import hashlib
import hmac
import re

from pyproxy.auth.scram import MECHANISM, parse_scram_secret

PLAIN = "plain"
SCRAM = "scram"
MD5 = "md5"
_MD5_HASH = re.compile(r"md5[0-9a-f]{32}")


def secret_kind(secret: str) -> str:
    """``"scram"`` for a SCRAM-SHA-256 verifier, ``"md5"`` for an md5 hash, else ``"plain"``.

    As in PostgreSQL, a value that looks like neither is a plaintext password; a value that
    starts like a verifier but does not parse raises ValueError (say so rather than guess).
    """
    if secret.startswith(MECHANISM + "$"):
        parse_scram_secret(secret)
        return SCRAM
    if _MD5_HASH.fullmatch(secret):
        return MD5
    return PLAIN


def md5_response_from_hash(md5_hash: str, salt: bytes) -> bytes:
    """What a client sends for AuthenticationMD5Password, from the stored ``md5…`` hash alone."""
    inner = md5_hash[3:].encode("ascii")
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode("ascii")


def md5_verify_hash(md5_hash: str, salt: bytes, response: bytes) -> bool:
    """Check a client's md5 response against a stored hash; one trailing NUL is tolerated."""
    if response.endswith(b"\x00"):
        response = response[:-1]
    return hmac.compare_digest(md5_response_from_hash(md5_hash, salt), bytes(response))
