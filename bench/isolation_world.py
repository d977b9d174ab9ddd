"""The isolation checks' world: one throwaway PostgreSQL, and a `pyproxy serve` child per check."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.isolation_report import CheckResult
from bench.procstat import process_cpu_seconds
from bench.targets import PythonChild
from pyproxy.testing.pgcluster import free_port
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import SUPERUSER, SUPERUSER_PASSWORD, TRUST_USER, config_dict

TRACEBACK = re.compile(r"^Traceback \(most recent call last\)", re.M)


def toml_text(data: Mapping[str, Any]) -> str:
    """``data`` as TOML: tables of scalars, lists of tables (arrays of tables) nested in them.

    Enough for a pyproxy config; keys are bare words, strings are written as JSON strings (a
    valid TOML basic string for the text a config holds)."""
    lines: list[str] = []
    _table(lines, [], data)
    return "\n".join(lines) + "\n"


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple) and all(not isinstance(v, Mapping) for v in value):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and isinstance(value[0], Mapping)


def _table(lines: list[str], path: list[str], data: Mapping[str, Any]) -> None:
    for key, value in data.items():
        if not isinstance(value, Mapping) and not _is_table_list(value):
            lines.append(f"{key} = {_scalar(value)}")
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines += ["", f"[{'.'.join([*path, key])}]"]
            _table(lines, [*path, key], value)
        elif _is_table_list(value):
            for item in value:
                lines += ["", f"[[{'.'.join([*path, key])}]]"]
                _table(lines, [*path, key], item)


class ProxyChild(PythonChild):
    """`python -m pyproxy serve` for the test PostgreSQL with the given pools, trust auth for
    clients (pools log in to PostgreSQL as the SCRAM test role unless they say otherwise)."""

    label = "pyproxy"

    def __init__(self, workdir: Path, pg: PgServer, pools: list[dict[str, Any]]) -> None:
        port = free_port()
        cfg = config_dict(
            pg,
            pools,
            proxy={
                "listen": f"127.0.0.1:{port}",
                "auth_type": "trust",
                "max_client_conn": 2000,
                "shutdown_timeout": 2,
            },
        )
        config_path = workdir / f"pyproxy-{port}.toml"
        config_path.write_text(toml_text(cfg))
        argv = [sys.executable, "-m", "pyproxy", "serve", "-c", str(config_path)]
        super().__init__(workdir / f"pyproxy-{port}.log", [*argv, "--log-level", "warning"], port)
        self.pid = 0

    def start(self) -> ProxyChild:
        self.pid = self.start_process()
        return self

    def dsn(self, pool: str, user: str = TRUST_USER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{pool}"

    def cpu_seconds(self) -> float:
        with contextlib.suppress(OSError):
            return process_cpu_seconds(self.pid)
        return 0.0

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def tracebacks(self) -> int:
        """Tracebacks in the child's output: exceptions nobody handled (asyncio logs them)."""
        return len(TRACEBACK.findall(self.log_text()))

    def first_traceback(self, lines: int = 12) -> str:
        text = self.log_text()
        match = TRACEBACK.search(text)
        if match is None:
            return ""
        start = text.rfind("\n", 0, match.start()) + 1
        return " | ".join(text[start:].splitlines()[:lines])


@dataclass
class World:
    """The PostgreSQL every check shares and a directory for the proxies' configs and logs."""

    pg: PgServer
    workdir: Path

    def superuser_dsn(self) -> str:
        return self.pg.dsn(SUPERUSER, SUPERUSER_PASSWORD, APP_DB)

    async def postgres_alive(self) -> bool:
        """Does PostgreSQL still answer a direct connection?"""
        try:
            conn = await asyncpg.connect(self.superuser_dsn(), timeout=10)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        try:
            return await conn.fetchval("SELECT 1", timeout=10) == 1
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return False
        finally:
            await conn.close()

    @contextlib.contextmanager
    def proxy(self, pools: list[dict[str, Any]], result: CheckResult) -> Iterator[ProxyChild]:
        """A started pyproxy child; when it stops, ``result`` gets the CPU it used and how many
        tracebacks it printed (with the first one as a note)."""
        result.require("pyproxy_tracebacks", "==", 0)
        child = ProxyChild(self.workdir, self.pg, pools)
        child.start()
        cpu = child.cpu_seconds()
        try:
            yield child
        finally:
            result.figures["pyproxy_cpu_s"] = round(child.cpu_seconds() - cpu, 1)
            child.stop()
            result.figures["pyproxy_tracebacks"] = child.tracebacks()
            if child.first_traceback():
                result.note("pyproxy: " + child.first_traceback())
