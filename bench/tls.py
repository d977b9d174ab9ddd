"""TLS cells: pgbench select-only through pyproxy and PgBouncer with TLS on both sides
(clients sslmode=require, the proxy to PostgreSQL sslmode=require), TPS and the proxy's CPU per
transaction, and the handshake rate with a new TLS connection per transaction (pgbench -C).

    python -m bench.tls [--duration 10] [--clients 10] [--pool-size 10] [--no-tls]

``--no-tls`` runs the same cells with TLS off on both sides, for the cost of TLS itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from bench.pgbench import RunResult, init_pgbench, run_pgbench
from bench.targets import PgBouncerProcess, PyproxyProcess
from pyproxy.testing.pgcluster import USERS, run_sql
from pyproxy.testing.tlspg import made_certs, ssl_postgres

DBNAME = "pgbench"


def _pyproxy_tls(proc: PyproxyProcess, cert: Path, key: Path, tls: bool = True) -> None:
    keys = (
        f'client_tls_sslmode = "require"\nclient_tls_cert_file = "{cert}"\n'
        f'client_tls_key_file = "{key}"\nserver_tls_sslmode = "require"\n'
        if tls
        else 'server_tls_sslmode = "disable"\n'
    )
    text = proc.config_path.read_text().replace(
        'auth_type = "trust"\n', 'auth_type = "trust"\n' + keys
    )
    proc.config_path.write_text(text)


def _pgbouncer_tls(proc: PgBouncerProcess, cert: Path, key: Path, tls: bool = True) -> None:
    if not tls:
        with proc.ini.open("a") as f:
            f.write("server_tls_sslmode = disable\n")
        return
    mine_cert, mine_key = proc.dir / "tls.crt", proc.dir / "tls.key"
    shutil.copy(cert, mine_cert)
    shutil.copy(key, mine_key)
    for path in (mine_cert, mine_key):
        shutil.chown(path, user="postgres", group="postgres")
    with proc.ini.open("a") as f:
        f.write(
            f"client_tls_sslmode = require\nclient_tls_cert_file = {mine_cert}\n"
            f"client_tls_key_file = {mine_key}\nserver_tls_sslmode = require\n"
        )


def _row(result: RunResult) -> dict[str, object]:
    return {
        "target": result.target,
        "connect_each": result.connect_each,
        "clients": result.clients,
        "tps": round(result.tps, 1),
        "failed": result.failed,
        "proxy_cpu_us_per_tx": result.proxy_cpu_us_per_tx and round(result.proxy_cpu_us_per_tx),
        "error": result.error,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--no-tls", action="store_true", help="the same cells without TLS")
    args = parser.parse_args(argv)
    tls = not args.no_tls
    user, password = USERS["superuser"]
    os.environ["PGSSLMODE"] = "require" if tls else "disable"
    rows = []
    with made_certs() as certs, ssl_postgres(certs) as pg:
        run_sql(pg, f"CREATE DATABASE {DBNAME}")
        init_pgbench(pg.host, pg.port, user, password, DBNAME, 1)
        workdir = Path(tempfile.mkdtemp(prefix="bench-tls-"))
        try:
            for make in ("pyproxy", "pgbouncer"):
                if make == "pyproxy":
                    proc: PyproxyProcess | PgBouncerProcess = PyproxyProcess(
                        workdir, pg.host, pg.port, user, password, args.pool_size, DBNAME
                    )
                    _pyproxy_tls(proc, certs.proxy.cert, certs.proxy.key, tls)
                else:
                    proc = PgBouncerProcess(
                        pg.host, pg.port, user, password, args.pool_size, DBNAME
                    )
                    _pgbouncer_tls(proc, certs.proxy.cert, certs.proxy.key, tls)
                target = proc.start()
                try:
                    for connect_each in (False, True):
                        result = run_pgbench(
                            target, "transaction", "simple", args.clients, args.duration, None,
                            connect_each=connect_each,
                        )  # fmt: skip
                        rows.append(_row(result))
                        print(json.dumps(rows[-1]), flush=True)
                finally:
                    proc.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    by = {(r["target"], r["connect_each"]): r for r in rows}
    for each, label in ((False, "kept connections"), (True, "pgbench -C (handshakes)")):
        ours, theirs = by.get(("pyproxy", each)), by.get(("pgbouncer", each))
        if ours and theirs and theirs["tps"]:
            print(f"{label}: pyproxy/PgBouncer TPS = {ours['tps'] / theirs['tps']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
