"""The sslmode names (libpq's and PgBouncer's) and what each one asks for."""

from __future__ import annotations

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
VERIFYING = frozenset(("verify-ca", "verify-full"))
REQUIRING = frozenset(("require", "verify-ca", "verify-full"))

# PgBouncer's tls_protocols words: "secure" = TLS 1.2 and 1.3, "all"/"legacy" = every version
# the TLS library still allows; or a list such as "tlsv1.2,tlsv1.3".
PROTOCOL_WORDS = ("secure", "all", "legacy", "normal", "tlsv1.0", "tlsv1.1", "tlsv1.2", "tlsv1.3")
# PgBouncer's tls_ciphers words that mean the TLS library's own default list.
DEFAULT_CIPHER_WORDS = frozenset(("default", "secure", "normal", "fast"))

ALPN = "postgresql"  # what PostgreSQL 17 requires for direct TLS
