"""The TLS keys: client_tls_* and server_tls_* in [proxy] (server_tls_* overridable per
[[clusters]]), tls_cert_file/tls_key_file in [admin]. Checked at load (and so at reload): the
mode is known, the files exist and are readable, the key matches the certificate, verify-*
has a CA; every error names its key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pyproxy.config.fields import _choice, _string
from pyproxy.tls.contexts import (
    TlsFileError,
    TlsFiles,
    connecting_context,
    serving_context,
)
from pyproxy.tls.modes import SSLMODES

_SETTINGS = ("sslmode", "cert_file", "key_file", "ca_file", "protocols", "ciphers")
_FILES = ("cert_file", "key_file", "ca_file")
CLIENT_TLS_KEYS = frozenset(f"client_tls_{s}" for s in _SETTINGS)
SERVER_TLS_KEYS = frozenset(f"server_tls_{s}" for s in _SETTINGS)
ADMIN_TLS_KEYS = frozenset(("tls_cert_file", "tls_key_file"))


def tls_settings(
    t: Mapping[str, Any],
    side: str,
    prefix: str,
    base: TlsFiles,
    base_dir: str | None,
    errs: list[str],
) -> TlsFiles:
    """``base`` with the ``{side}_tls_*`` keys of ``t`` applied (relative paths are taken from
    the config file's directory), checked when this table sets any of them."""
    changes: dict[str, str] = {}
    for setting in _SETTINGS:
        key = f"{side}_tls_{setting}"
        if key not in t:
            continue
        if setting == "sslmode":
            changes["mode"] = _choice(t, key, prefix, base.mode, SSLMODES, errs)
        else:
            value = _string(t, key, prefix, getattr(base, setting), errs)
            changes[setting] = _path(value, base_dir) if setting in _FILES else value
    files = replace(base, **changes)
    if changes or prefix == "proxy":
        check(files, side, prefix, errs)
    return files


def check(files: TlsFiles, side: str, prefix: str, errs: list[str]) -> None:
    """Build the context ``files`` describe, to find what is wrong with it now."""
    if files.mode == "disable":
        return
    try:
        if side == "client":
            serving_context(files)
        else:
            connecting_context(files)
    except TlsFileError as exc:
        errs.append(f"{prefix}.{side}_tls_{exc.setting}: {_explain(exc, side, files.mode)}")


def admin_tls(t: Mapping[str, Any], base_dir: str | None, errs: list[str]) -> tuple[str, str]:
    """[admin] tls_cert_file and tls_key_file: both or neither; checked like client_tls_*."""
    cert = _path(_string(t, "tls_cert_file", "admin", "", errs), base_dir)
    key = _path(_string(t, "tls_key_file", "admin", "", errs), base_dir)
    if bool(cert) != bool(key):
        missing = "tls_key_file" if cert else "tls_cert_file"
        errs.append(f"admin.{missing}: required with admin.tls_{'cert' if key else 'key'}_file")
        return "", ""
    if cert:
        try:
            serving_context(TlsFiles("require", cert, key), alpn=False)
        except TlsFileError as exc:
            errs.append(f"admin.tls_{exc.setting}: {exc.message}")
    return cert, key


def _explain(exc: TlsFileError, side: str, mode: str) -> str:
    if exc.message == "required":
        return f"required with {side}_tls_sslmode = {mode!r}"
    return exc.message


def _path(value: str, base_dir: str | None) -> str:
    if not value or os.path.isabs(value) or base_dir is None:
        return value
    return os.path.normpath(os.path.join(base_dir, value))
