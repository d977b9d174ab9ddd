"""Benchmark targets: direct PostgreSQL, pyproxy, PgBouncer and the bare relay (subprocesses)."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.baseline import MODULE_LINE, child_env, reported_module
from pyproxy.testing.pgcluster import free_port, port_open

MODES = ("transaction", "session", "statement")
POOL_NAMES = {"transaction": "bench_tx", "session": "bench_session", "statement": "bench_stmt"}
PGBOUNCER_BIN = "/usr/sbin/pgbouncer"
REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_ID = "00000000-0000-4000-8000-000000000001"
START_TIMEOUT = 30.0
# `python -m pyproxy`, saying first which pyproxy package it imported: a baseline's child must
# run the baseline's source, never the working tree's.
LAUNCHER = (
    "import runpy, pyproxy; "
    f"print({MODULE_LINE!r} + pyproxy.__file__, flush=True); "
    "runpy.run_module('pyproxy', run_name='__main__', alter_sys=True)"
)


@dataclass
class Target:
    """Where pgbench connects, and which process (if any) is the proxy to measure."""

    name: str  # "direct" | "pyproxy" | "pgbouncer" | "relay" | "pyproxy@<commit>" (a baseline)
    host: str
    port: int
    user: str
    password: str
    pid: int | None = None  # the proxy process; None for direct PostgreSQL
    dbnames: dict[str, str] = field(default_factory=dict)  # pool mode -> database name to use
    direct_dbname: str = "pgbench"
    module: Path | None = None  # the pyproxy package a pyproxy target runs

    def dbname(self, mode: str | None) -> str:
        return self.direct_dbname if mode is None else self.dbnames[mode]


def raise_fd_limit() -> None:
    """Raise this process's open-file soft limit to its hard limit (used as a preexec_fn too)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_until(check: Callable[[], bool], what: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        if not alive():
            raise RuntimeError(f"process exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pyproxy_config(
    pg_host: str,
    pg_port: int,
    port: int,
    user: str,
    password: str,
    pool_size: int,
    dbname: str,
    proxy_extra: str = "",
) -> str:
    """The TOML config of the benchmark's pyproxy: one pool per mode, trust auth, no admin API;
    ``proxy_extra``: more lines for its [proxy] table."""
    pools = "".join(
        f'\n[[clusters.pools]]\nname = "{POOL_NAMES[mode]}"\ndb = "{dbname}"\nuser = "{user}"\n'
        f'size = {pool_size}\nmode = "{mode}"\n'
        for mode in MODES
    )
    return (
        f'[proxy]\nlisten = "127.0.0.1:{port}"\nauth_type = "trust"\nmax_client_conn = 20000\n'
        f"query_wait_timeout = 120\n{proxy_extra}\n[admin]\nenabled = false\n\n"
        f'[[clusters]]\nid = "{CLUSTER_ID}"\nhost = "{pg_host}"\nport = {pg_port}\n'
        f"max_connections = 1000\n\n"
        f'[[clusters.users]]\nname = "{user}"\npassword = "{password}"\n{pools}'
    )


class PythonChild:
    """A Python module run as a benchmark target in a child process (high fd limit, output to
    ``log_path``), started once its port listens and stopped with SIGTERM. It runs in ``cwd``
    (the repository root by default) with the environment ``env`` (this process's by default)."""

    label = "child"

    def __init__(
        self,
        log_path: Path,
        argv: list[str],
        port: int,
        cwd: Path = REPO_ROOT,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path, self.argv, self.port = log_path, argv, port
        self.cwd, self.env = cwd, env
        self.proc: subprocess.Popen[bytes] | None = None

    def start_process(self) -> int:
        """Start the child, wait until it listens on ``port``; its pid."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=raise_fd_limit,
            )
        proc = self.proc
        try:
            wait_until(
                lambda: port_open("127.0.0.1", self.port),
                f"{self.label} to listen",
                lambda: proc.poll() is None,
            )
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{self.label} did not start: {exc}\n{self.log_tail()}") from exc
        return proc.pid

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PyproxyProcess(PythonChild):
    """`python -m pyproxy serve -c <config>` as a child process, named `name`.

    With `source` (a baseline's directory holding another commit's `pyproxy` package) the child
    runs in `source` with only `source` on its PYTHONPATH, so it imports that package; without,
    it runs the working tree's. Either way it must say it imported the package it was meant to,
    or it does not count as started. `stem` names its config and log files in `workdir`;
    `proxy_extra` adds lines to its [proxy] table (e.g. ``metrics = false``).
    """

    def __init__(
        self,
        workdir: Path,
        pg_host: str,
        pg_port: int,
        user: str,
        password: str,
        pool_size: int,
        dbname: str,
        extra_args: tuple[str, ...] = (),
        name: str = "pyproxy",
        source: Path | None = None,
        stem: str = "pyproxy",
        proxy_extra: str = "",
    ) -> None:
        port = free_port()
        self.name = self.label = name
        self.user, self.password = user, password
        self.expected = (source or REPO_ROOT).resolve() / "pyproxy"
        self.config_path = workdir / f"{stem}.toml"
        self.config_path.write_text(
            pyproxy_config(pg_host, pg_port, port, user, password, pool_size, dbname, proxy_extra)
        )
        argv = [sys.executable, "-c", LAUNCHER, "serve", "-c", str(self.config_path)]
        argv += ["--log-level", "warning", *extra_args]
        if source is None:
            super().__init__(workdir / f"{stem}.log", argv, port)
        else:
            super().__init__(workdir / f"{stem}.log", argv, port, source, child_env(source))

    def start(self) -> Target:
        pid = self.start_process()
        module = reported_module(self.log_path.read_text(errors="replace"))
        if module != self.expected:
            self.stop()
            raise RuntimeError(
                f"{self.name} runs the pyproxy package in {module}, not the one in "
                f"{self.expected}\n{self.log_tail()}"
            )
        return Target(
            self.name,
            "127.0.0.1",
            self.port,
            self.user,
            self.password,
            pid,
            dict(POOL_NAMES),
            module=module,
        )


class RelayProcess(PythonChild):
    """`python -m bench.relay` as a child process: one backend connection per client, no pool.

    The relay forwards the startup packet unchanged, so every mode connects with the real
    database name `dbname`.
    """

    label = "the relay"

    def __init__(
        self,
        workdir: Path,
        pg_host: str,
        pg_port: int,
        user: str,
        password: str,
        dbname: str,
    ) -> None:
        port = free_port()
        self.user, self.password, self.dbname = user, password, dbname
        argv = [sys.executable, "-m", "bench.relay", "--listen-port", str(port)]
        argv += ["--pg-host", pg_host, "--pg-port", str(pg_port)]
        super().__init__(workdir / "relay.log", argv, port)

    def start(self) -> Target:
        pid = self.start_process()
        return Target(
            "relay",
            "127.0.0.1",
            self.port,
            self.user,
            self.password,
            pid,
            {mode: self.dbname for mode in MODES},
            direct_dbname=self.dbname,
        )


def pgbouncer_version(binary: str = PGBOUNCER_BIN) -> tuple[int, ...] | None:
    if not os.access(binary, os.X_OK):
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out)
    return tuple(int(g or 0) for g in match.groups()) if match else None


def pgbouncer_carries_prepared(version: tuple[int, ...] | None) -> bool:
    """PgBouncer tracks protocol-level prepared statements in pooled modes from 1.21 on."""
    return version is not None and version >= (1, 21)


class PgBouncerProcess:
    """PgBouncer run as `postgres` (it refuses root) with one database entry per pool mode."""

    def __init__(
        self,
        pg_host: str,
        pg_port: int,
        user: str,
        password: str,
        pool_size: int,
        dbname: str,
        binary: str = PGBOUNCER_BIN,
    ) -> None:
        self.binary = binary
        self.port = free_port()
        self.user, self.password = user, password
        self.dir = Path(tempfile.mkdtemp(prefix="bench-pgbouncer-"))
        self.dir.chmod(0o755)
        self.pidfile = self.dir / "pgbouncer.pid"
        self.ini = self.dir / "pgbouncer.ini"
        version = pgbouncer_version(binary)
        self.ini.write_text(self._ini(pg_host, pg_port, pool_size, dbname, version))
        (self.dir / "userlist.txt").write_text(f'"{user}" "{password}"\n')
        for path in (self.dir, self.ini, self.dir / "userlist.txt"):
            shutil.chown(path, user="postgres", group="postgres")
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    def _ini(
        self,
        pg_host: str,
        pg_port: int,
        pool_size: int,
        dbname: str,
        version: tuple[int, ...] | None,
    ) -> str:
        server = (
            f"host={pg_host} port={pg_port} dbname={dbname} "
            f"user={self.user} password={self.password}"
        )
        dbs = "".join(
            f"{POOL_NAMES[mode]} = {server} pool_mode={mode} pool_size={pool_size}\n"
            for mode in MODES
        )
        prepared = "max_prepared_statements = 200\n" if pgbouncer_carries_prepared(version) else ""
        return (
            f"[databases]\n{dbs}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir =\nauth_type = trust\nauth_file = {self.dir}/userlist.txt\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 12000\n"
            f"max_db_connections = 0\nignore_startup_parameters = extra_float_digits\n"
            f"log_connections = 0\nlog_disconnections = 0\nlog_pooler_errors = 0\nlog_stats = 0\n"
            f"logfile = {self.dir}/pgbouncer.log\npidfile = {self.pidfile}\n{prepared}"
        )

    def start(self) -> Target:
        _soft, hard = _fd_limit()
        script = f"ulimit -n {hard} && exec {self.binary} {self.ini}"
        self.proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", "sh", "-c", script],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = self.proc
        try:
            wait_until(
                lambda: self.pidfile.exists() and port_open("127.0.0.1", self.port),
                "PgBouncer to listen",
                lambda: proc.poll() is None,
            )
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"PgBouncer did not start: {exc}") from exc
        self.pid = int(self.pidfile.read_text().split()[0])
        return Target(
            "pgbouncer",
            "127.0.0.1",
            self.port,
            self.user,
            self.password,
            self.pid,
            dict(POOL_NAMES),
        )

    def stop(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            self.pid = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _fd_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_NOFILE)
