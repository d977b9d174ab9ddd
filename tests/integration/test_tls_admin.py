"""The admin API over HTTPS, pool connection details saying ssl / sslmode=require when client
TLS is on (and that URI working), and the warning for a plaintext admin API off loopback."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from pyproxy.app import App
from pyproxy.config import parse_config
from tests.support.admin_api import FILE_POOL, POOLS, TOKEN, admin_config
from tests.support.pgcluster import PgServer
from tests.support.tls_pg import Certs, made_certs


@pytest.fixture(scope="module")
def certs() -> Iterator[Certs]:
    with made_certs() as made:
        yield made


async def test_admin_api_over_https_reports_tls_connection_details(
    pg: PgServer, certs: Certs, tmp_path: Path
) -> None:
    config = admin_config(pg, tmp_path / "state.db")
    config["admin"].update(tls_cert_file=str(certs.proxy.cert), tls_key_file=str(certs.proxy.key))
    config["proxy"].update(
        client_tls_sslmode="require",
        client_tls_cert_file=str(certs.proxy.cert),
        client_tls_key_file=str(certs.proxy.key),
    )
    app = App(parse_config(config))
    await app.start()
    try:
        base = f"https://localhost:{app.admin_port}"
        async with httpx.AsyncClient(
            base_url=base,
            verify=ssl.create_default_context(cafile=str(certs.ca.cert)),
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as http:
            reply = await http.get(f"{POOLS}/{FILE_POOL}")
            assert reply.status_code == 200, reply.text
            connection = reply.json()["pool"]["connection"]
            assert connection["ssl"] is True
            assert connection["uri"].endswith("?sslmode=require")
        async with await psycopg.AsyncConnection.connect(
            connection["uri"], connect_timeout=5
        ) as conn:
            assert conn.pgconn.ssl_in_use
        async with httpx.AsyncClient(base_url=base.replace("https", "http")) as plain:
            with pytest.raises(httpx.HTTPError):
                await plain.get(f"{POOLS}/{FILE_POOL}")
    finally:
        await app.stop(1.0)


async def test_plaintext_admin_api_off_loopback_logs_a_warning(
    pg: PgServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = admin_config(pg, tmp_path / "state.db")
    config["admin"]["listen"] = "0.0.0.0:0"
    app = App(parse_config(config))
    with caplog.at_level(logging.WARNING, logger="pyproxy.admin"):
        await app.start()
    await app.stop(1.0)
    assert "without TLS" in caplog.text and "tls_cert_file" in caplog.text
