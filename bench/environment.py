"""Bringing up a benchmark's world: a throwaway PostgreSQL with pgbench data, the proxies and
the bare relay."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.baseline import Baseline
from bench.metrics_cost import METRICS_OFF
from bench.pgbench import init_pgbench
from bench.procstat import maps_mention
from bench.targets import (
    PGBOUNCER_BIN,
    PgBouncerProcess,
    PyproxyProcess,
    RelayProcess,
    Target,
)
from tests.support.pgcluster import DSN_ENV, USERS, PgServer, run_sql, start_postgres

BENCH_DB = "pgbench"
PG_SETTINGS = {"max_connections": "1200", "shared_buffers": "256MB"}


@dataclass
class Environment:
    pg: PgServer
    postgres_version: str
    targets: dict[str, Target]
    errors: list[str] = field(default_factory=list)
    pyproxy_event_loop: str | None = None
    relay_event_loop: str | None = None


def _trust_hba(workdir: Path) -> Path:
    """A pg_hba.conf trusting loopback, so direct connections authenticate like the proxies' do."""
    path = workdir / "pg_hba.conf"
    path.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    shutil.chown(workdir, user="postgres", group="postgres")
    shutil.chown(path, user="postgres", group="postgres")
    workdir.chmod(0o755)
    return path


@contextmanager
def environment(
    scale: int,
    pool_size: int,
    log: Callable[[str], None],
    pyproxy_args: tuple[str, ...] = (),
    with_pgbouncer: bool = True,
    with_relay: bool = True,
    baseline: Baseline | None = None,
    metrics_off: bool = False,
) -> Iterator[Environment]:
    """PostgreSQL with pgbench data at `scale`, pyproxy, (when given) a second pyproxy running
    `baseline`'s source with the same config, (with `metrics_off`) a third, this tree's with
    `[proxy] metrics = false` (named METRICS_OFF), (when installed and asked for) PgBouncer and
    (when asked for) the relay.

    A proxy or the relay that fails to start is recorded in `errors`; the others still run.
    """
    user, password = USERS["superuser"]
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="bench-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        settings = dict(PG_SETTINGS)
        if not os.environ.get(DSN_ENV):
            settings["hba_file"] = str(_trust_hba(workdir))
        log("starting PostgreSQL")
        pg = start_postgres(settings)
        stack.callback(pg.close)
        version = run_sql(pg, "SHOW server_version").strip()
        log(f"PostgreSQL {version} on port {pg.port}; loading pgbench data, scale {scale}")
        run_sql(pg, f"DROP DATABASE IF EXISTS {BENCH_DB}")
        run_sql(pg, f"CREATE DATABASE {BENCH_DB}")
        init_pgbench(pg.host, pg.port, user, password, BENCH_DB, scale)
        env = Environment(
            pg, version, {"direct": Target("direct", pg.host, pg.port, user, password)}
        )
        pyproxy = PyproxyProcess(
            workdir, pg.host, pg.port, user, password, pool_size, BENCH_DB, pyproxy_args
        )
        target = _start(env, stack, "pyproxy", pyproxy, log)
        if target is not None:
            env.pyproxy_event_loop = _event_loop(target)
            log(
                f"pyproxy on port {target.port} (pid {target.pid}, {env.pyproxy_event_loop}), "
                f"running {target.module}"
            )
        if baseline is not None:
            other = PyproxyProcess(
                workdir, pg.host, pg.port, user, password, pool_size, BENCH_DB, pyproxy_args,
                name=baseline.name, source=baseline.source, stem="pyproxy-baseline",
            )  # fmt: skip
            target = _start(env, stack, baseline.name, other, log)
            if target is not None:
                log(
                    f"{baseline.name} on port {target.port} (pid {target.pid}, "
                    f"{_event_loop(target)}), running {target.module}"
                )
        if metrics_off:
            other = PyproxyProcess(
                workdir, pg.host, pg.port, user, password, pool_size, BENCH_DB, pyproxy_args,
                name=METRICS_OFF, stem=METRICS_OFF, proxy_extra="metrics = false\n",
            )  # fmt: skip
            target = _start(env, stack, METRICS_OFF, other, log)
            if target is not None:
                log(f"{METRICS_OFF} on port {target.port} (pid {target.pid}): metrics = false")
        if with_pgbouncer and os.access(PGBOUNCER_BIN, os.X_OK):
            bouncer = PgBouncerProcess(pg.host, pg.port, user, password, pool_size, BENCH_DB)
            target = _start(env, stack, "pgbouncer", bouncer, log)
            if target is not None:
                log(f"PgBouncer on port {target.port} (pid {target.pid})")
        if with_relay:
            relay = RelayProcess(workdir, pg.host, pg.port, user, password, BENCH_DB)
            target = _start(env, stack, "relay", relay, log)
            if target is not None:
                env.relay_event_loop = _event_loop(target)
                log(f"bare relay on port {target.port} (pid {target.pid}, {env.relay_event_loop})")
        yield env


class _Startable(Protocol):
    def start(self) -> Target: ...

    def stop(self) -> None: ...


def _start(
    env: Environment, stack: ExitStack, name: str, process: _Startable, log: Callable[[str], None]
) -> Target | None:
    """Start a target's process (stopped when ``stack`` closes); a failure is recorded in
    ``env.errors`` and leaves the target out instead of ending the benchmark."""
    stack.callback(process.stop)
    try:
        env.targets[name] = target = process.start()
    except RuntimeError as exc:
        env.errors.append(str(exc))
        log(str(exc))
        return None
    return target


def _event_loop(target: Target) -> str:
    return "uvloop" if maps_mention(target.pid or 0, "uvloop") else "asyncio"
