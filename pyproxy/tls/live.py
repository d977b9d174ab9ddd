"""The TLS contexts a running proxy uses: built at start, built again from the files on every
reload (new handshakes use the new ones, established connections keep theirs); a context whose
files are broken at reload is not replaced, and a log line names the file."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable

from pyproxy.tls.contexts import (
    ServingContext,
    TlsFileError,
    TlsFiles,
    connecting_context,
    serving_context,
)

log = logging.getLogger("pyproxy.tls")


class LiveTls:
    """Client-side context (pyproxy as TLS server) and server-side contexts by their files."""

    def __init__(self, client: TlsFiles, servers: Iterable[TlsFiles]) -> None:
        self.client: ServingContext | None = None
        self._servers: dict[TlsFiles, ssl.SSLContext | None] = {}
        self.load(client, servers, strict=True)

    def load(self, client: TlsFiles, servers: Iterable[TlsFiles], *, strict: bool = False) -> bool:
        """Build every context again; ``strict`` raises TlsFileError, otherwise a broken one
        keeps its predecessor (logged). True when everything was replaced."""
        ok = True
        try:
            self.client = None if client.mode == "disable" else serving_context(client)
        except TlsFileError as exc:
            if strict:
                raise
            ok = False
            log.error("TLS reload: client_tls_%s, keeping the previous certificate", exc)
        fresh: dict[TlsFiles, ssl.SSLContext | None] = {}
        for files in servers:
            if files in fresh:
                continue
            try:
                fresh[files] = None if files.mode == "disable" else connecting_context(files)
            except TlsFileError as exc:
                if strict:
                    raise
                ok = False
                log.error("TLS reload: server_tls_%s, keeping the previous context", exc)
                if files in self._servers:
                    fresh[files] = self._servers[files]
        self._servers = fresh
        return ok

    def server(self, files: TlsFiles) -> ssl.SSLContext | None:
        """The context for connecting with ``files`` (None: no TLS); built on first use for
        settings the last load did not see (a cluster added through a reload)."""
        if files not in self._servers:
            self._servers[files] = None if files.mode == "disable" else connecting_context(files)
        return self._servers[files]
