"""A second throwaway PostgreSQL with ssl=on and certificates from a test CA, and small TLS
clients: an SSLRequest then a handshake, to see the certificate a listener presents."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyproxy.proto import messages as m
from pyproxy.testing.pgcluster import PgServer, start_postgres
from pyproxy.testing.tlsfiles import CertPair, TestCA, give_to_postgres


@dataclass
class Certs:
    dir: Path
    ca: TestCA
    other_ca: TestCA  # signs nothing the others trust
    proxy: CertPair  # for 127.0.0.1 and localhost
    pg: CertPair


@contextmanager
def made_certs() -> Iterator[Certs]:
    top = Path(tempfile.mkdtemp(prefix="pyproxy-tls-"))
    os.chmod(top, 0o755)  # PostgreSQL (user postgres) reads its files below
    try:
        ca = TestCA(top / "ca")
        yield Certs(
            top, ca, TestCA(top / "other", "unrelated CA"), ca.server_pair(stem="proxy"),
            ca.server_pair(stem="pg"),
        )  # fmt: skip
    finally:
        shutil.rmtree(top, ignore_errors=True)


@contextmanager
def ssl_postgres(certs: Certs) -> Iterator[PgServer]:
    """PostgreSQL with ssl = on, its certificate signed by ``certs.ca``."""
    pgdir = certs.dir / "pgfiles"
    pgdir.mkdir()
    cert, key = pgdir / "server.crt", pgdir / "server.key"
    shutil.copy(certs.pg.cert, cert)
    shutil.copy(certs.pg.key, key)
    os.chmod(key, 0o600)
    give_to_postgres(cert, key)
    server = start_postgres({"ssl": "on", "ssl_cert_file": str(cert), "ssl_key_file": str(key)})
    try:
        yield server
    finally:
        server.close()


async def presented_certificate(
    port: int, ca: Path, host: str = "127.0.0.1", *, direct: bool = False
) -> dict[str, object]:
    """The certificate a PostgreSQL listener presents after an SSLRequest (or directly)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["postgresql"])
    if direct:
        reader, writer = await asyncio.open_connection(
            host, port, ssl=ctx, server_hostname="localhost"
        )
    else:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(m.ssl_request())
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"S"
        await writer.start_tls(ctx, server_hostname="localhost")
    try:
        obj = writer.get_extra_info("ssl_object")
        return obj.getpeercert()
    finally:
        writer.close()
