"""A throwaway PostgreSQL for tests and benchmarks: from PYPROXY_TEST_DSN, Docker, or initdb."""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

DSN_ENV = "PYPROXY_TEST_DSN"
READY_TIMEOUT = 30.0
DOCKER_IMAGE = "postgres:15"

# Test roles with known passwords: kind -> (role name, password).
USERS: dict[str, tuple[str, str]] = {
    "scram": ("pyproxy_scram", "scram-secret"),
    "md5": ("pyproxy_md5", "md5-secret"),
    "trust": ("pyproxy_trust", "trust-secret"),
    "nologin": ("pyproxy_nologin", "nologin-secret"),
    "superuser": ("postgres", "postgres"),
}
LOGIN_KINDS = ("scram", "md5", "trust")
APP_DB = "appdb"

INITDB_OPTIONS = ("-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")

# Settings for every server we start ourselves (local cluster or container).
BASE_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "400",
    "password_encryption": "scram-sha-256",
    "log_min_messages": "warning",
}

INSTALL_HINT = (
    "No PostgreSQL server found for the tests. Install the server binaries "
    "(Debian/Ubuntu: `apt-get install postgresql`), or point the tests at a disposable server "
    f"whose user is a superuser: {DSN_ENV}=postgresql://postgres:secret@host:5432/postgres"
)


@dataclass
class _LocalCluster:
    """A cluster created with initdb in a temp dir and controlled with pg_ctl."""

    bindir: Path
    tmpdir: Path
    port: int
    as_postgres: bool
    running: bool = False

    @property
    def datadir(self) -> Path:
        return self.tmpdir / "data"

    @property
    def logfile(self) -> Path:
        return self.tmpdir / "postgres.log"

    def command(self, program: str, *args: str) -> list[str]:
        argv = [str(self.bindir / program), *args]
        return ["runuser", "-u", "postgres", "--", *argv] if self.as_postgres else argv

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.command(program, *args),
            cwd=self.tmpdir,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=READY_TIMEOUT + 30,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}\n{self.log_tail()}"
            )
        return proc

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no server log at {self.logfile})"
        return f"last lines of {self.logfile}:\n" + "\n".join(text[-lines:])

    def pg_ctl_start(self) -> None:
        timeout = str(int(READY_TIMEOUT))
        self.run("pg_ctl", "start", "-D", str(self.datadir), "-l", str(self.logfile), "-w",
                 "-t", timeout, "-o", f"-p {self.port}")  # fmt: skip
        self.running = True

    def pg_ctl_stop(self, mode: str) -> None:
        timeout = str(int(READY_TIMEOUT))
        self.run("pg_ctl", "stop", "-D", str(self.datadir), "-m", mode, "-w", "-t", timeout)
        self.running = False


@dataclass
class PgServer:
    """A PostgreSQL server reachable over TCP with a known superuser."""

    host: str
    port: int
    superuser: str
    superuser_password: str
    source: str  # "dsn" | "docker" | "local"
    _local: _LocalCluster | None = field(default=None, repr=False)
    _container: Any = field(default=None, repr=False)

    def dsn(
        self, user: str = "postgres", password: str | None = None, dbname: str = "postgres"
    ) -> str:
        """A postgresql:// URL; password None means the known password of `user`, "" none."""
        if password is None:
            password = _known_password(self, user)
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{auth}@{host}:{self.port}/{quote(dbname, safe='')}"

    @property
    def can_restart(self) -> bool:
        return self.source == "local"

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (pg_ctl stop -m mode) and wait until it refuses connections."""
        local = self._require_local("stop")
        local.pg_ctl_stop(mode)
        _wait_until(lambda: not port_open(self.host, self.port), "the server to go down", local)

    def start(self) -> None:
        """Start the stopped server on the same port and data dir; wait until it serves."""
        local = self._require_local("start")
        local.pg_ctl_start()
        _wait_ready(self)

    def close(self) -> None:
        """Stop the server and remove what it left behind (no-op for a PYPROXY_TEST_DSN server)."""
        if self._local is not None:
            local, self._local = self._local, None
            try:
                if local.running:
                    local.pg_ctl_stop("immediate")
            finally:
                shutil.rmtree(local.tmpdir, ignore_errors=True)
        if self._container is not None:
            container, self._container = self._container, None
            container.stop()

    def _require_local(self, action: str) -> _LocalCluster:
        if self._local is None:
            raise RuntimeError(f"cannot {action} this {self.source} server: only an open local one")
        return self._local


def start_postgres(extra_settings: dict[str, str] | None = None) -> PgServer:
    """Start (or attach to) a PostgreSQL server and create the test roles and `appdb`."""
    extra = dict(extra_settings or {})
    dsn = os.environ.get(DSN_ENV)
    if dsn:
        server = _from_dsn(dsn, extra)
    elif _docker_available():
        server = _start_docker(extra)
    else:
        bindir = find_server_bindir()
        if bindir is None:
            raise RuntimeError(INSTALL_HINT)
        server = _start_local(bindir, extra)
    try:
        _create_test_objects(server)
    except BaseException:
        server.close()
        raise
    return server


def run_sql(server: PgServer, sql: str, dbname: str = "postgres") -> str:
    """Run SQL with psql as the superuser over TCP; return stdout (-At) or raise with stderr."""
    psql = _client_binary("psql", server)
    env = dict(os.environ, PGPASSWORD=server.superuser_password, PGCONNECT_TIMEOUT="5")
    cmd = [psql, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", server.host, "-p", str(server.port),
           "-U", server.superuser, "-d", dbname, "-c", sql]  # fmt: skip
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"psql failed ({proc.returncode}) running {sql!r}:\n{proc.stderr}")
    return proc.stdout


def find_server_bindir() -> Path | None:
    """The PostgreSQL server binaries: `pg_config --bindir`, then /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        if out:
            candidates.append(Path(out))
    versioned = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(p) for p in versioned), key=_version_key, reverse=True)
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres")):
            return bindir
    return None


def hba_lines(address: str) -> list[str]:
    """pg_hba.conf: local trust; over TCP trust and md5 test roles by name, SCRAM for others."""
    return [
        "local all all trust",
        f"host all {USERS['trust'][0]} {address} trust",
        f"host all {USERS['md5'][0]} {address} md5",
        f"host all all {address} scram-sha-256",
    ]


# --- the three sources -------------------------------------------------------------------------


def _from_dsn(dsn: str, extra: dict[str, str]) -> PgServer:
    params = _parse_dsn(dsn)
    server = PgServer(
        host=params.get("host") or "127.0.0.1",
        port=int(params.get("port") or 5432),
        superuser=params.get("user") or "postgres",
        superuser_password=params.get("password", ""),
        source="dsn",
    )
    _wait_ready(server)
    if extra:
        for name, value in extra.items():
            run_sql(server, f"ALTER SYSTEM SET {_ident(name)} = {_literal(value)}")
        run_sql(server, "SELECT pg_reload_conf()")
        pending = run_sql(server, "SELECT name FROM pg_settings WHERE pending_restart").split()
        if pending:
            raise RuntimeError(f"{DSN_ENV} server must be restarted to apply: {pending}")
    return server


def _docker_available() -> bool:
    if importlib.util.find_spec("testcontainers") is None or shutil.which("docker") is None:
        return False
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


def _start_docker(extra: dict[str, str]) -> PgServer:
    from testcontainers.postgres import PostgresContainer  # optional: only with a Docker engine

    superuser, password = USERS["superuser"]
    settings = {**BASE_SETTINGS, **extra}
    port = free_port()
    container = PostgresContainer(
        DOCKER_IMAGE, username=superuser, password=password, dbname="postgres", driver=None
    )
    container.with_bind_ports(5432, port)
    container.with_command(["postgres", *(f"-c{k}={v}" for k, v in settings.items())])
    container.start()
    server = PgServer(
        host=container.get_container_host_ip(),
        port=int(container.get_exposed_port(5432)),
        superuser=superuser,
        superuser_password=password,
        source="docker",
        _container=container,
    )
    try:
        _wait_ready(server)
        # Clients reach the container through Docker's NAT, so match any address.
        hba = ", ".join(_literal(line) for line in hba_lines("all"))
        hba_file = run_sql(server, "SHOW hba_file").strip()
        run_sql(server, f"COPY (SELECT unnest(ARRAY[{hba}])) TO {_literal(hba_file)}")
        run_sql(server, "SELECT pg_reload_conf()")
    except BaseException:
        server.close()
        raise
    return server


def _start_local(bindir: Path, extra: dict[str, str]) -> PgServer:
    as_postgres = os.geteuid() == 0
    tmpdir = Path(tempfile.mkdtemp(prefix="pyproxy-pg-"))
    superuser, password = USERS["superuser"]
    local = _LocalCluster(bindir=bindir, tmpdir=tmpdir, port=0, as_postgres=as_postgres)
    server = PgServer("127.0.0.1", 0, superuser, password, "local", _local=local)
    try:
        if as_postgres:
            _chown_to_postgres(tmpdir)
        pwfile = _write(tmpdir / "pwfile", password + "\n", as_postgres)
        datadir = str(local.datadir)
        local.run("initdb", "-D", datadir, "-U", superuser, f"--pwfile={pwfile}", *INITDB_OPTIONS)
        pwfile.unlink()
        settings = {
            **BASE_SETTINGS,
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(tmpdir),
            **extra,
        }
        conf = "".join(f"{k} = {_literal(v)}\n" for k, v in settings.items())
        with (local.datadir / "postgresql.conf").open("a") as f:
            f.write("\n# pyproxy test settings\n" + conf)
        hba = "\n".join(hba_lines("127.0.0.1/32")) + "\n"
        _write(local.datadir / "pg_hba.conf", hba, as_postgres)
        _start_on_free_port(local)
        server.port = local.port
        _wait_ready(server)
    except BaseException:
        server.close()
        raise
    return server


def _start_on_free_port(local: _LocalCluster, attempts: int = 5) -> None:
    """Start on a probed free port; another process may take it first, so retry a few times."""
    for attempt in range(attempts):
        local.port = free_port()
        try:
            local.pg_ctl_start()
            return
        except RuntimeError as exc:
            in_use = "could not bind" in str(exc) or "already in use" in str(exc)
            if not in_use or attempt == attempts - 1:
                raise


# --- roles and databases ----------------------------------------------------------------------


def _create_test_objects(server: PgServer) -> None:
    superuser, su_password = USERS["superuser"]
    logins = [USERS[kind][0] for kind in LOGIN_KINDS]
    nologin = USERS["nologin"][0]
    run_sql(server, _create_roles_sql([superuser, *logins, nologin]))
    statements = [
        "SET password_encryption = 'scram-sha-256'",
        f"ALTER ROLE {superuser} WITH SUPERUSER LOGIN PASSWORD {_literal(su_password)}",
        *(
            f"ALTER ROLE {USERS[kind][0]} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            f"PASSWORD {_literal(USERS[kind][1])}"
            for kind in ("scram", "trust")
        ),
        f"ALTER ROLE {nologin} WITH NOLOGIN PASSWORD {_literal(USERS['nologin'][1])}",
        "SET password_encryption = 'md5'",
        f"ALTER ROLE {USERS['md5'][0]} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
        f"PASSWORD {_literal(USERS['md5'][1])}",
    ]
    run_sql(server, ";\n".join(statements))
    if server.superuser == superuser:
        server.superuser_password = su_password
    exists = run_sql(server, f"SELECT 1 FROM pg_database WHERE datname = {_literal(APP_DB)}")
    if not exists.strip():
        run_sql(server, f"CREATE DATABASE {APP_DB} OWNER {USERS['scram'][0]}")
    grantees = ", ".join(logins)
    run_sql(
        server,
        f"GRANT ALL ON DATABASE {APP_DB} TO {grantees};"
        f"GRANT CONNECT, CREATE ON DATABASE postgres TO {grantees}",
    )
    run_sql(server, f"GRANT ALL ON SCHEMA public TO {grantees}", dbname=APP_DB)


def _create_roles_sql(roles: Iterable[str]) -> str:
    body = "".join(
        f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(r)}) "
        f"THEN CREATE ROLE {r}; END IF;\n"
        for r in roles
    )
    return f"DO $$\nBEGIN\n{body}END\n$$"


# --- helpers ----------------------------------------------------------------------------------


def _known_password(server: PgServer, user: str) -> str:
    if user == server.superuser:
        return server.superuser_password
    for name, password in USERS.values():
        if name == user:
            return password
    return ""


def _wait_ready(server: PgServer) -> None:
    def ready() -> bool:
        try:
            return run_sql(server, "SELECT 1").strip() == "1"
        except RuntimeError:
            return False

    _wait_until(ready, "the server to accept connections", server._local)


def _wait_until(check: Callable[[], bool], what: str, local: _LocalCluster | None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            tail = local.log_tail() if local else ""
            raise RuntimeError(f"timed out after {READY_TIMEOUT:.0f}s waiting for {what}\n{tail}")
        time.sleep(0.1)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port below the kernel's ephemeral range that nothing is bound to right now."""
    for _ in range(200):
        port = random.randrange(15000, 32768)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port found in 15000-32767")


def _client_binary(name: str, server: PgServer) -> str:
    if server._local is not None and (server._local.bindir / name).exists():
        return str(server._local.bindir / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found on PATH; install the PostgreSQL client programs")
    return found


def _chown_to_postgres(path: Path) -> None:
    try:
        shutil.chown(path, user="postgres", group="postgres")
    except LookupError as exc:
        raise RuntimeError("running as root needs a 'postgres' system user to run initdb") from exc


def _write(path: Path, text: str, as_postgres: bool) -> Path:
    path.write_text(text)
    if as_postgres:
        _chown_to_postgres(path)
    path.chmod(0o600)
    return path


def _parse_dsn(dsn: str) -> dict[str, str]:
    if "://" not in dsn:
        return dict(item.split("=", 1) for item in dsn.split())
    url = urlsplit(dsn)
    params = {
        "host": url.hostname or "",
        "port": str(url.port or ""),
        "user": unquote(url.username or ""),
        "password": unquote(url.password or ""),
    }
    return {k: v for k, v in params.items() if v}


def _version_key(bindir: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", bindir.parent.name)) or (0,)


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_.]*", name):
        raise ValueError(f"not a setting name: {name!r}")
    return name
