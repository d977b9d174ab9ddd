"""Sans-IO authentication: SCRAM-SHA-256 in both roles and PostgreSQL's md5 scheme."""

from pyproxy.auth.md5 import md5_password_hash, md5_response, md5_verify
from pyproxy.auth.scram import (
    AuthFailed,
    ScramClient,
    ScramSecret,
    ScramServer,
    make_scram_secret,
    parse_scram_secret,
    saslprep,
)

__all__ = [
    "AuthFailed",
    "ScramClient",
    "ScramSecret",
    "ScramServer",
    "make_scram_secret",
    "md5_password_hash",
    "md5_response",
    "md5_verify",
    "parse_scram_secret",
    "saslprep",
]
