"""SSL contexts from certificate files: pyproxy as TLS server (towards clients, and the admin
API) and as TLS client (towards PostgreSQL), each built the way an sslmode asks. Every problem
is a TlsFileError naming the setting it comes from."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass

from pyproxy.tls.binding import server_end_point
from pyproxy.tls.modes import ALPN, DEFAULT_CIPHER_WORDS, PROTOCOL_WORDS, VERIFYING

_VERSIONS = {
    "tlsv1.0": ssl.TLSVersion.TLSv1,
    "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}


class TlsFileError(Exception):
    """A TLS setting that cannot be used: ``setting`` is the key's suffix (``cert_file``,
    ``key_file``, ``ca_file``, ``protocols``, ``ciphers``), ``message`` says why."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


@dataclass(frozen=True)
class TlsFiles:
    """What a context is built from (paths as given, "" = not set)."""

    mode: str
    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    protocols: str = "secure"
    ciphers: str = "default"


@dataclass(frozen=True)
class ServingContext:
    """A context for accepting TLS, and its own certificate (DER, for channel binding)."""

    context: ssl.SSLContext
    certificate: bytes
    files: TlsFiles
    end_point: bytes | None = None  # tls-server-end-point binding data (None: no PLUS)


def readable(setting: str, path: str) -> None:
    """Raise TlsFileError unless ``path`` names a readable file."""
    if not path:
        raise TlsFileError(setting, "required")
    if not os.path.isfile(path):
        raise TlsFileError(setting, f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise TlsFileError(setting, f"{path}: cannot read it: {exc.strerror}") from None


def serving_context(files: TlsFiles, *, alpn: bool = True) -> ServingContext:
    """pyproxy as TLS server: its certificate and key; a client certificate is asked for and
    checked against ``ca_file`` only for verify-ca/verify-full (never for require: libpq sends
    one whenever ~/.postgresql/postgresql.crt exists)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _versions(ctx, files.protocols)
    _ciphers(ctx, files.ciphers)
    certificate = _load_pair(ctx, files.cert_file, files.key_file)
    if files.mode in VERIFYING:
        _load_ca(ctx, files.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols([ALPN])
    return ServingContext(ctx, certificate, files, server_end_point(certificate))


def connecting_context(files: TlsFiles) -> ssl.SSLContext:
    """pyproxy as TLS client of PostgreSQL, with libpq's sslmode semantics: prefer/require
    check nothing (require with a CA file checks the chain, as libpq does with a root
    certificate), verify-ca checks the chain, verify-full the chain and the host name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _versions(ctx, files.protocols)
    _ciphers(ctx, files.ciphers)
    if files.cert_file or files.key_file:
        _load_pair(ctx, files.cert_file, files.key_file)
    verify = files.mode in VERIFYING or (files.mode == "require" and files.ca_file)
    if verify:
        _load_ca(ctx, files.ca_file)
        ctx.check_hostname = files.mode == "verify-full"
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _load_pair(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> bytes:
    """Load a certificate (chain) and its key; return the leaf certificate in DER."""
    readable("cert_file", cert_file)
    readable("key_file", key_file)
    with open(cert_file, encoding="ascii", errors="replace") as f:
        pem = f.read()
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0:
        raise TlsFileError("cert_file", f"{cert_file}: no PEM certificate in it")
    try:
        der = ssl.PEM_cert_to_DER_cert(pem[start : stop + len(end)])
    except ValueError:
        raise TlsFileError("cert_file", f"{cert_file}: not a valid PEM certificate") from None
    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_password)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise TlsFileError(
                "key_file", f"{key_file}: does not match the certificate in {cert_file}"
            ) from None
        raise TlsFileError(
            "key_file",
            f"{key_file}: cannot load it with {cert_file} ({exc.reason or exc}); "
            "give an unencrypted PEM private key",
        ) from None
    except _EncryptedKey:
        raise TlsFileError(
            "key_file", f"{key_file}: the key is encrypted; give an unencrypted PEM private key"
        ) from None
    return der


def _load_ca(ctx: ssl.SSLContext, ca_file: str) -> None:
    if not ca_file:
        raise TlsFileError("ca_file", "required for verify-ca and verify-full")
    readable("ca_file", ca_file)
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as exc:
        raise TlsFileError(
            "ca_file", f"{ca_file}: no usable PEM certificate ({exc.reason or exc})"
        ) from None


def _versions(ctx: ssl.SSLContext, protocols: str) -> None:
    words = [w.strip().lower() for w in protocols.split(",") if w.strip()]
    unknown = [w for w in words if w not in PROTOCOL_WORDS]
    if not words or unknown:
        raise TlsFileError(
            "protocols",
            f"unknown {', '.join(unknown) or 'empty value'}; use secure (TLS 1.2 and 1.3), all, "
            "or a list such as tlsv1.2,tlsv1.3",
        )
    if words == ["secure"] or words == ["normal"]:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return
    if words in (["all"], ["legacy"]):
        return
    chosen = sorted(_VERSIONS[w] for w in words if w in _VERSIONS)
    if len(chosen) != len(words):
        raise TlsFileError("protocols", "mix no word with a list of versions")
    ctx.minimum_version, ctx.maximum_version = chosen[0], chosen[-1]


def _ciphers(ctx: ssl.SSLContext, ciphers: str) -> None:
    word = ciphers.strip()
    if word.lower() in DEFAULT_CIPHER_WORDS:
        return
    try:
        ctx.set_ciphers("ALL" if word.lower() == "all" else word)
    except ssl.SSLError:
        raise TlsFileError("ciphers", f"no cipher matches {word!r}") from None


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    raise _EncryptedKey
