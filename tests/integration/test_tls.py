"""TLS on both sides against a PostgreSQL with ssl=on and a throwaway CA: psql, psycopg,
asyncpg and pgbench over TLS, client certificates, plaintext refused, bytes behind an
SSLRequest refused, server certificates checked (right CA, wrong CA), direct TLS."""

from __future__ import annotations

import asyncio
import os
import re
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import psycopg
import pytest

from pyproxy.proto import messages as m
from tests.support.pgcluster import PgServer, run_sql
from tests.support.proxy import (
    SCRAM_PASSWORD,
    SCRAM_USER,
    RunningProxy,
    pool_entry,
    running_proxy,
)
from tests.support.tls_pg import Certs, made_certs, presented_certificate, ssl_postgres

TIMEOUT = 10


@pytest.fixture(scope="module")
def certs() -> Iterator[Certs]:
    with made_certs() as made:
        yield made


@pytest.fixture(scope="module")
def pg_ssl(certs: Certs) -> Iterator[PgServer]:
    with ssl_postgres(certs) as server:
        yield server


def tls_proxy_settings(certs: Certs, **extra: Any) -> dict[str, Any]:
    """Client TLS required with the proxy's certificate, the server checked (verify-full)."""
    return {
        "client_tls_sslmode": "require",
        "client_tls_cert_file": str(certs.proxy.cert),
        "client_tls_key_file": str(certs.proxy.key),
        "server_tls_sslmode": "verify-full",
        "server_tls_ca_file": str(certs.ca.cert),
        **extra,
    }


@pytest.fixture(scope="module")
async def tls_proxy(pg_ssl: PgServer, certs: Certs) -> AsyncIterator[RunningProxy]:
    async with running_proxy(
        pg_ssl, [pool_entry(size=4)], proxy=tls_proxy_settings(certs)
    ) as proxy:
        yield proxy


def libpq_dsn(proxy: RunningProxy, **params: str) -> str:
    base = {
        "host": "localhost", "hostaddr": "127.0.0.1", "port": str(proxy.port),
        "dbname": "testpool", "user": SCRAM_USER, "password": SCRAM_PASSWORD,
        "connect_timeout": "5",
    }  # fmt: skip
    base.update(params)
    return " ".join(f"{k}={v}" for k, v in base.items())


def psql(dsn: str, *sql: str) -> subprocess.CompletedProcess[str]:
    commands = [arg for text in sql for arg in ("-c", text)]
    return subprocess.run(
        ["psql", "-X", "-At", "-d", dsn, *commands],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        env=dict(os.environ, PGSSLCERT="/nonexistent", PGSSLKEY="/nonexistent"),
    )  # fmt: skip


SERVER_SSL = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


async def test_psql_verify_full_and_the_server_leg_is_tls_too(
    tls_proxy: RunningProxy, certs: Certs
) -> None:
    dsn = libpq_dsn(tls_proxy, sslmode="verify-full", sslrootcert=str(certs.ca.cert))
    done = await asyncio.to_thread(psql, dsn, SERVER_SSL, "\\conninfo")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "t"  # pg_stat_ssl: pyproxy's backend uses TLS (verify-full, right CA)
    assert "SSL connection (protocol: TLSv1." in done.stdout


async def test_psycopg_and_asyncpg_over_tls(tls_proxy: RunningProxy, certs: Certs) -> None:
    dsn = libpq_dsn(tls_proxy, sslmode="verify-full", sslrootcert=str(certs.ca.cert))
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        assert conn.pgconn.ssl_in_use
        cur = await conn.execute("SELECT repeat('x', 200000)")  # records larger than 16 kB
        assert len((await cur.fetchone())[0]) == 200000
    ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
    conn = await asyncpg.connect(
        host="localhost", port=tls_proxy.port, user=SCRAM_USER, password=SCRAM_PASSWORD,
        database="testpool", ssl=ctx, timeout=TIMEOUT, statement_cache_size=0,
    )  # fmt: skip
    try:
        assert await conn.fetchval(SERVER_SSL) is True
        assert conn.get_settings() is not None
    finally:
        await conn.close()


async def test_pgbench_with_sslmode_require_has_no_failed_transactions(
    tls_proxy: RunningProxy,
) -> None:
    script = "SELECT 1;\n"
    proc = await asyncio.create_subprocess_exec(
        "pgbench", "-n", "-f", "/dev/stdin", "-c", "4", "-j", "2", "-t", "100",
        "-h", "127.0.0.1", "-p", str(tls_proxy.port), "-U", SCRAM_USER, "testpool",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PGSSLMODE="require", PGPASSWORD=SCRAM_PASSWORD,
                 PGCONNECT_TIMEOUT="5"),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(script.encode()), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode() + text
    assert re.search(r"actually processed: 400/400", text), text
    failed = re.search(r"number of failed transactions: (\d+)", text)
    assert failed is not None and failed.group(1) == "0", text


async def test_plaintext_client_is_refused_under_require(tls_proxy: RunningProxy) -> None:
    done = await asyncio.to_thread(psql, libpq_dsn(tls_proxy, sslmode="disable"), "SELECT 1")
    assert done.returncode != 0
    assert "SSL required" in done.stderr
    with pytest.raises(asyncpg.PostgresError) as caught:
        await tls_proxy.asyncpg(ssl=False)
    assert caught.value.sqlstate == "28000"


async def _answer(port: int, *chunks: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.05)
        return await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()


STARTUP = m.startup_message({"user": SCRAM_USER, "database": "testpool"})


@pytest.mark.parametrize("split", [False, True], ids=["one-packet", "split-request"])
async def test_bytes_behind_an_ssl_request_are_refused(
    tls_proxy: RunningProxy, make_proxy: Any, split: bool
) -> None:
    request = m.ssl_request()
    chunks = (request[:5], request[5:] + STARTUP) if split else (request + STARTUP,)
    plain = await make_proxy()  # client TLS off: the N answer has the same rule
    for proxy in (tls_proxy, plain):
        answer = await _answer(proxy.port, *chunks)
        assert answer[:1] == b"E", answer  # neither S nor N: nothing was negotiated
        assert b"C08P01" in answer
        assert b"received unencrypted data after SSL request" in answer


async def test_direct_tls_needs_alpn_postgresql(tls_proxy: RunningProxy, certs: Certs) -> None:
    cert = await presented_certificate(tls_proxy.port, certs.ca.cert, direct=True)
    assert ("commonName", "localhost") in cert["subject"][0]
    ctx = ssl.create_default_context(cafile=str(certs.ca.cert))
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", tls_proxy.port, ssl=ctx, server_hostname="localhost"
    )
    writer.write(STARTUP)
    answer = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    assert b"without ALPN" in answer
    ctx.set_alpn_protocols(["postgresql"])
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", tls_proxy.port, ssl=ctx, server_hostname="localhost"
    )
    writer.write(STARTUP)
    assert await asyncio.wait_for(reader.readexactly(1), TIMEOUT) == b"R"  # authentication
    writer.close()


async def test_client_certificates_for_verify_full_and_verify_ca(
    pg_ssl: PgServer, certs: Certs
) -> None:
    mine = certs.ca.issue(SCRAM_USER, stem="client-mine")
    theirs = certs.ca.issue("someone-else", stem="client-theirs")
    stranger = certs.other_ca.issue(SCRAM_USER, stem="client-stranger")
    root = str(certs.ca.cert)
    for mode in ("verify-full", "verify-ca"):
        settings = tls_proxy_settings(
            certs, client_tls_sslmode=mode, client_tls_ca_file=str(certs.ca.cert)
        )
        async with running_proxy(pg_ssl, [pool_entry(size=2)], proxy=settings) as proxy:

            async def attempt(pair: Any, proxy: RunningProxy = proxy) -> str:
                extra = {"sslcert": str(pair.cert), "sslkey": str(pair.key)} if pair else {}
                dsn = libpq_dsn(proxy, sslmode="verify-full", sslrootcert=root, **extra)
                try:
                    async with await psycopg.AsyncConnection.connect(dsn) as conn:
                        await conn.execute("SELECT 1")
                        return "ok"
                except psycopg.OperationalError as exc:
                    return f"{exc.sqlstate}: {exc}"

            assert await attempt(mine) == "ok"
            assert not (await attempt(None)).startswith("ok")  # no certificate: no handshake
            assert not (await attempt(stranger)).startswith("ok")  # another CA
            other = await attempt(theirs)
            if mode == "verify-full":
                assert "FATAL:  certificate authentication failed" in other
            else:
                assert other == "ok"


async def test_server_certificate_from_an_unknown_ca_fails_with_08001(
    pg_ssl: PgServer, certs: Certs, make_proxy: Any
) -> None:
    async with running_proxy(
        pg_ssl,
        [pool_entry(size=1)],
        proxy={"server_tls_sslmode": "verify-full", "server_tls_ca_file": str(certs.other_ca.cert)},
    ) as proxy:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await proxy.asyncpg(ssl=False)
        assert caught.value.sqlstate == "08001"
        assert "certificate verify failed" in str(caught.value)


async def test_server_require_against_a_server_without_tls_fails_with_08001(
    make_proxy: Any,
) -> None:
    proxy = await make_proxy([pool_entry(size=1)], proxy={"server_tls_sslmode": "require"})
    with pytest.raises(asyncpg.PostgresError) as caught:
        await proxy.asyncpg(ssl=False)
    assert caught.value.sqlstate == "08001"
    assert "does not support SSL" in str(caught.value)


async def test_bytes_behind_the_servers_s_fail_the_connection(make_proxy: Any) -> None:
    async def fake_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(8)  # the SSLRequest
        writer.write(b"S" + m.error_response("XX000", "injected in the clear"))
        await writer.drain()
        await reader.read()

    server = await asyncio.start_server(fake_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await make_proxy(
            [pool_entry(size=1)],
            cluster={"host": "127.0.0.1", "port": port},
            proxy={"server_tls_sslmode": "require"},
        )
        with pytest.raises(asyncpg.PostgresError) as caught:
            await proxy.asyncpg(ssl=False)
        assert caught.value.sqlstate == "08P01"
        assert "received unencrypted data after SSL response" in str(caught.value)
        assert "injected" not in str(caught.value)
    finally:
        server.close()


async def test_scram_channel_binding_tls_server_end_point(
    tls_proxy: RunningProxy, certs: Certs, make_proxy: Any
) -> None:
    dsn = libpq_dsn(
        tls_proxy, sslmode="verify-full", sslrootcert=str(certs.ca.cert), channel_binding="require"
    )
    done = await asyncio.to_thread(psql, dsn, "SELECT 1")
    assert done.returncode == 0, done.stderr  # libpq checked the binding: SCRAM-SHA-256-PLUS
    plain = await make_proxy()
    done = await asyncio.to_thread(
        psql, libpq_dsn(plain, sslmode="disable", channel_binding="require"), "SELECT 1"
    )
    assert done.returncode != 0 and "channel binding" in done.stderr


async def test_sni_is_sent_and_a_wrong_name_fails_verify_full(
    certs: Certs, make_proxy: Any
) -> None:
    """A TLS endpoint that records the SNI it is sent; its certificate names only localhost,
    so a cluster reached as 127.0.0.1 under verify-full fails on the name."""
    only_name = certs.ca.issue("localhost", hosts=("localhost",), stem="only-name")
    seen: list[str | None] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(only_name.cert, only_name.key)
    ctx.sni_callback = lambda _sock, name, _ctx: seen.append(name)  # type: ignore[assignment,misc,func-returns-value]

    async def endpoint(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(8)
        writer.write(b"S")
        await writer.drain()
        try:
            await writer.start_tls(ctx)
            await reader.read()
        except (ssl.SSLError, OSError):
            pass

    server = await asyncio.start_server(endpoint, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for host, reason in (("localhost", None), ("127.0.0.1", "IP address mismatch")):
            proxy = await make_proxy(
                [pool_entry(size=1)],
                cluster={"host": host, "port": port},
                proxy={
                    "server_tls_sslmode": "verify-full",
                    "server_tls_ca_file": str(certs.ca.cert),
                    "server_connect_timeout": 2,
                },
            )
            with pytest.raises(asyncpg.PostgresError) as caught:
                await proxy.asyncpg(ssl=False)
            if reason is not None:
                assert caught.value.sqlstate == "08001"
                assert reason in str(caught.value)
        assert seen[0] == "localhost"  # verified, then SNI-routed; the endpoint never answers
        assert None in seen  # no SNI for an IP address (RFC 6066)
    finally:
        server.close()


async def test_allow_logs_in_without_tls_first(pg_ssl: PgServer, make_proxy: Any) -> None:
    async with running_proxy(
        pg_ssl, [pool_entry(size=1)], proxy={"server_tls_sslmode": "allow"}
    ) as proxy:
        conn = await proxy.asyncpg(ssl=False)
        try:
            assert await conn.fetchval(SERVER_SSL) is False
        finally:
            await conn.close()


async def test_pass_through_with_channel_binding_and_only_a_verifier(
    pg_ssl: PgServer, certs: Certs
) -> None:
    """No plaintext anywhere: the client proves itself with SCRAM-SHA-256-PLUS against the
    verifier PostgreSQL holds, pyproxy logs in over TLS with the recovered key."""
    verifier = run_sql(
        pg_ssl, f"SELECT rolpassword FROM pg_authid WHERE rolname = '{SCRAM_USER}'"
    ).strip()
    async with running_proxy(
        pg_ssl,
        [pool_entry(user=None)],
        proxy=tls_proxy_settings(certs),
        users=[{"name": SCRAM_USER, "password": verifier}],
    ) as proxy:
        dsn = libpq_dsn(
            proxy, sslmode="verify-full", sslrootcert=str(certs.ca.cert), channel_binding="require"
        )
        done = await asyncio.to_thread(psql, dsn, f"SELECT current_user, ({SERVER_SSL})")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"{SCRAM_USER}|t"


async def test_a_failed_or_timed_out_handshake_closes_without_plaintext(
    pg_ssl: PgServer, certs: Certs
) -> None:
    """An SSLRequest answered S, then no ClientHello (client_login_timeout ends it) or a broken
    one: the connection ends with nothing written in the clear into what is now a TLS stream,
    and the client is forgotten."""
    settings = tls_proxy_settings(certs, client_login_timeout=0.3)
    async with running_proxy(pg_ssl, [pool_entry(size=1)], proxy=settings) as proxy:
        for hello in (b"", b"\x16\x03\x01\x00\x05hello"):
            reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
            writer.write(m.ssl_request())
            assert await asyncio.wait_for(reader.readexactly(1), TIMEOUT) == b"S"
            writer.write(hello)
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
            writer.close()
            for _ in range(100):  # the client is forgotten once its connection is lost
                if not proxy.app.state.clients:
                    break
                await asyncio.sleep(0.01)
            assert proxy.app.state.clients == set()


async def test_a_server_that_closes_during_the_handshake_fails_the_login_at_once(
    make_proxy: Any,
) -> None:
    async def closing_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(8)
        writer.write(b"S")
        await writer.drain()
        await reader.read(1)  # the ClientHello's first bytes
        writer.close()

    server = await asyncio.start_server(closing_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await make_proxy(
            [pool_entry(size=1)],
            cluster={"host": "127.0.0.1", "port": port},
            proxy={"server_tls_sslmode": "require", "server_connect_timeout": 60},
        )
        with pytest.raises(asyncpg.PostgresError) as caught:
            await asyncio.wait_for(proxy.asyncpg(ssl=False, timeout=30), 30)
        assert caught.value.sqlstate == "08001"
        assert "TLS connection to server" in str(caught.value)  # not the 60 s connect timeout
    finally:
        server.close()
