"""``pyproxy demo``: a throwaway PostgreSQL, pyproxy in front of it, a burst of clients, a URL."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from pyproxy.config import parse_config
from pyproxy.errors import PgError
from pyproxy.testing.miniclient import MiniClient

CLUSTER_ID = "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30"
POOL = "demo-pool"
USER, PASSWORD = "pyproxy_scram", "scram-secret"


def _port_or_zero(port: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


async def _burst(port: int, pg_port: int, clients: int, queries: int) -> dict[str, float]:
    """Many clients at once through a small pool; watch PostgreSQL's backend count meanwhile."""
    pids: set[str] = set()
    errors: list[str] = []
    watcher = await MiniClient.connect("127.0.0.1", pg_port, "postgres", "postgres", "postgres")
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        sql = (
            "select count(*) from pg_stat_activity where usename = 'pyproxy_scram' "
            "and backend_type = 'client backend'"
        )
        while not done.is_set():
            rows = await watcher.query(sql)
            peak = max(peak, int(rows[0][0] or 0))
            await asyncio.sleep(0.01)

    async def one(i: int) -> None:
        try:
            c = await MiniClient.connect("127.0.0.1", port, USER, PASSWORD, POOL)
            for _ in range(queries):
                rows = await c.query("select pg_backend_pid(), pg_sleep(0.002)")
                pids.add(rows[0][0] or "")
            await c.close()
        except (PgError, OSError) as exc:
            errors.append(str(exc))

    started = time.monotonic()
    watch_task = asyncio.create_task(watch())
    await asyncio.gather(*(one(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    done.set()
    await watch_task
    await watcher.close()
    return {
        "clients": clients,
        "queries": clients * queries,
        "seconds": elapsed,
        "errors": len(errors),
        "peak_backends": peak,
        "distinct_backends": len(pids),
    }


def _throwaway_certificate(workdir: Path) -> dict[str, str]:
    """Client TLS with a self-signed certificate for localhost/127.0.0.1, made with the openssl
    command when there is one (prefer: the demo's own clients stay in plaintext); else none."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return {}
    cert, key = workdir / "demo.crt", workdir / "demo.key"
    try:
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
             "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        "client_tls_sslmode": "prefer",
        "client_tls_cert_file": str(cert),
        "client_tls_key_file": str(key),
    }


async def run_demo(
    clients: int = 200, queries: int = 10, pool_size: int = 5, serve: bool = True
) -> int:
    from pyproxy.app import App
    from pyproxy.testing.pgcluster import start_postgres

    print("starting a throwaway PostgreSQL ...", flush=True)
    pg = await asyncio.to_thread(start_postgres)
    workdir = Path(tempfile.mkdtemp(prefix="pyproxy-demo-"))
    token = secrets.token_urlsafe(18)
    tls = _throwaway_certificate(workdir)
    config = parse_config(
        {
            "proxy": {
                "listen": f"127.0.0.1:{_port_or_zero(6432)}",
                "query_wait_timeout": 30,
                **tls,
            },
            "admin": {
                "listen": f"127.0.0.1:{_port_or_zero(8080)}",
                "token": token,
                "state_path": str(workdir / "state.db"),
            },
            "clusters": [
                {
                    "id": CLUSTER_ID,
                    "host": pg.host,
                    "port": pg.port,
                    "ram_gib": 1,
                    "users": [{"name": USER, "password": PASSWORD}],
                    "pools": [
                        {
                            "name": POOL,
                            "db": "appdb",
                            "user": USER,
                            "size": pool_size,
                            "mode": "transaction",
                        }
                    ],
                }
            ],
        }
    )
    app = App(config)
    await app.start()
    try:
        print(
            f"pyproxy is up: {clients} clients x {queries} queries through pool "
            f"'{POOL}' of size {pool_size} (transaction mode) ...",
            flush=True,
        )
        result = await _burst(app.client_port, pg.port, clients, queries)
        print(
            f"  {result['queries']} queries from {result['clients']} clients in "
            f"{result['seconds']:.2f} s, {result['errors']} errors"
        )
        print(
            f"  PostgreSQL never saw more than {result['peak_backends']} backends for the "
            f"pool; clients shared {result['distinct_backends']} server connections"
        )
        url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{app.client_port}/{POOL}"
        url += "?sslmode=require" if tls else ""
        admin = f"http://127.0.0.1:{app.admin_port}/v2/databases/{CLUSTER_ID}/pools"
        print(f"\nConnect:   psql '{url}'")
        if tls:
            made = tls["client_tls_cert_file"]
            print(f"           (TLS with a throwaway self-signed certificate, {made})")
        print(f"Admin API: curl -H 'Authorization: Bearer {token}' {admin}")
        if serve:
            print("Press Ctrl-C to stop.", flush=True)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        return 0 if result["errors"] == 0 else 1
    finally:
        await app.stop(1.0)
        await asyncio.to_thread(pg.close)
