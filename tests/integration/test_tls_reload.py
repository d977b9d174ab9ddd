"""Certificate rotation without a restart: SIGHUP loads the new certificate and key while 20
clients run queries over TLS (none fails; new handshakes see the new serial); a broken key file
is refused, the old certificate stays in use, and the log line names the file."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.pgcluster import PgServer
from tests.support.proxy import SCRAM_PASSWORD, SCRAM_USER
from tests.support.tls_pg import Certs, made_certs, presented_certificate, ssl_postgres
from tests.support.toml_config import REPO_ROOT, SUBPROCESS_ENV, config_text, pool_text

CLIENTS = 20
BOUND = 10.0


@pytest.fixture(scope="module")
def certs() -> Iterator[Certs]:
    with made_certs() as made:
        yield made


@pytest.fixture(scope="module")
def pg_ssl(certs: Certs) -> Iterator[PgServer]:
    with ssl_postgres(certs) as server:
        yield server


@pytest.fixture
async def served(
    pg_ssl: PgServer, certs: Certs, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int, Path, Path]]:
    cert, key = tmp_path / "proxy.crt", tmp_path / "proxy.key"
    first = certs.ca.server_pair(serial=555, stem="first")
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    text = config_text(pg_ssl, pool_text("tlspool", size=4)).replace(
        "shutdown_timeout = 5\n",
        "shutdown_timeout = 5\n"
        'client_tls_sslmode = "require"\n'
        'client_tls_cert_file = "proxy.crt"\n'  # relative to the config file
        'client_tls_key_file = "proxy.key"\n'
        'server_tls_sslmode = "verify-full"\n'
        f'server_tls_ca_file = "{certs.ca.cert}"\n',
    )
    config = tmp_path / "pyproxy.toml"
    config.write_text(text)
    log = tmp_path / "pyproxy.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pyproxy", "serve", "-c", str(config),
            cwd=REPO_ROOT, env=SUBPROCESS_ENV, stdout=asyncio.subprocess.PIPE, stderr=err,
        )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        found = re.search(r"listening on [\d.]+:(\d+)", line)
        assert found is not None, line + log.read_text()
        yield proc, int(found.group(1)), tmp_path, log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_log(log: Path, needle: str, count: int = 1) -> str:
    deadline = time.monotonic() + BOUND
    while True:
        text = log.read_text()
        if text.count(needle) >= count:
            return text
        assert time.monotonic() < deadline, f"{needle!r} not logged:\n{text}"
        await asyncio.sleep(0.05)


async def test_sighup_rotates_the_certificate_under_load_and_refuses_a_broken_key(
    served: tuple[asyncio.subprocess.Process, int, Path, Path], certs: Certs
) -> None:
    proc, port, folder, log = served
    ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
    assert (await presented_certificate(port, certs.ca.cert))["serialNumber"] == "022B"  # 555
    stop = asyncio.Event()
    errors: list[BaseException] = []
    counts = [0] * CLIENTS

    async def client(i: int) -> None:
        conn = await asyncpg.connect(
            host="localhost", port=port, user=SCRAM_USER, password=SCRAM_PASSWORD,
            database="tlspool", ssl=ctx, timeout=BOUND, statement_cache_size=0,
        )  # fmt: skip
        try:
            while not stop.is_set():
                try:
                    assert await conn.fetchval("SELECT $1::int", i) == i
                    counts[i] += 1
                except Exception as exc:  # every failure counts
                    errors.append(exc)
                    return
        finally:
            await conn.close()

    tasks = [asyncio.create_task(client(i)) for i in range(CLIENTS)]
    await asyncio.sleep(0.5)
    second = certs.ca.server_pair(serial=777, stem="second")
    os.replace(shutil.copy(second.cert, folder / "new.crt"), folder / "proxy.crt")
    os.replace(shutil.copy(second.key, folder / "new.key"), folder / "proxy.key")
    proc.send_signal(signal.SIGHUP)
    await wait_log(log, "configuration reloaded")
    assert (await presented_certificate(port, certs.ca.cert))["serialNumber"] == "0309"  # 777
    await asyncio.sleep(0.5)

    (folder / "proxy.key").write_text("-----BEGIN PRIVATE KEY-----\nbroken\n")
    proc.send_signal(signal.SIGHUP)
    text = await wait_log(log, "reload refused")
    assert f"proxy.client_tls_key_file: {folder / 'proxy.key'}" in text
    assert (await presented_certificate(port, certs.ca.cert))["serialNumber"] == "0309"
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*tasks)
    assert errors == []
    assert min(counts) > 0
