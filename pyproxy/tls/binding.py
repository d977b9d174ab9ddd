"""tls-server-end-point channel binding (RFC 5929): the hash of the server's certificate, by the
hash of the certificate's signature algorithm (MD5 and SHA-1 count as SHA-256). Python's ssl
module gives no connection's own certificate and only ``tls-unique`` binding, so the hash is
taken from the certificate file the context was built from; None when the algorithm has no
single hash (RSASSA-PSS, Ed25519): then SCRAM-SHA-256-PLUS is not offered."""

from __future__ import annotations

import hashlib

_HASH_BY_OID = {
    "1.2.840.113549.1.1.4": "sha256",  # md5WithRSAEncryption
    "1.2.840.113549.1.1.5": "sha256",  # sha1WithRSAEncryption
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
    "1.2.840.10045.4.1": "sha256",  # ecdsa-with-SHA1
    "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
    "1.2.840.10040.4.3": "sha256",  # dsa-with-sha1
    "2.16.840.1.101.3.4.3.1": "sha224",  # dsa-with-sha224
    "2.16.840.1.101.3.4.3.2": "sha256",  # dsa-with-sha256
}


def server_end_point(der: bytes) -> bytes | None:
    """The tls-server-end-point binding data of certificate ``der`` (None: not defined)."""
    try:
        oid = signature_algorithm(der)
    except (IndexError, ValueError):
        return None
    name = _HASH_BY_OID.get(oid)
    return hashlib.new(name, der).digest() if name else None


def signature_algorithm(der: bytes) -> str:
    """The dotted OID of a DER certificate's signatureAlgorithm."""
    _, body, _ = _tlv(der, 0, 0x30)  # Certificate
    _, _, after_tbs = _tlv(der, body, 0x30)  # tbsCertificate
    _, alg, _ = _tlv(der, after_tbs, 0x30)  # signatureAlgorithm
    _, oid, end = _tlv(der, alg, 0x06)
    return _dotted(der[oid:end])


def _tlv(data: bytes, off: int, tag: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``off``, which must be ``tag``."""
    if data[off] != tag:
        raise ValueError(f"expected DER tag {tag:#x} at {off}, got {data[off]:#x}")
    first = data[off + 1]
    if first < 0x80:
        start, length = off + 2, first
    else:
        n = first & 0x7F
        start, length = off + 2 + n, int.from_bytes(data[off + 2 : off + 2 + n], "big")
    if start + length > len(data):
        raise ValueError("truncated DER element")
    return tag, start, start + length


def _dotted(oid: bytes) -> str:
    parts: list[int] = []
    value = 0
    for byte in oid:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    if not parts:
        raise ValueError("empty OID")
    first = parts[0]
    head = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    return ".".join(str(p) for p in head + parts[1:])
