"""Real drivers through every pool mode: pgJDBC, node-postgres, SQLAlchemy, psql and pgbench."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
import sqlalchemy as sa
from psycopg import pq

from tests.integration.conftest import MakeProxy
from tests.support.pgcluster import APP_DB, PgServer, run_sql
from tests.support.proxy import (
    MODES,
    SCRAM_PASSWORD,
    SCRAM_USER,
    RunningProxy,
    pool_entry,
)

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = ROOT / "tests" / "drivers"
JDBC_SOURCE = DRIVERS / "jdbc" / "Workload.java"
JDBC_JAR = Path("/usr/share/java/postgresql.jar")
NODE_DIR = DRIVERS / "node"
CLIENTS = 8  # concurrent connections of one workload ...
POOL_SIZE = 3  # ... sharing this many servers
RUN_TIMEOUT = 100.0  # below pytest's 120 s per test, so that our message is the one seen
JAVA_HINT = (
    "the pgJDBC tests need java and javac (Debian: apt-get install default-jdk-headless) and "
    f"{JDBC_JAR} (apt-get install libpostgresql-jdbc-java); .ci/run installs them"
)
NODE_HINT = (
    "the node-postgres tests need node and npm (Debian: apt-get install nodejs npm) and the "
    "npm registry to install pg; .ci/run installs them"
)

# --- running programs -------------------------------------------------------------------------


def require(program: str, hint: str) -> str:
    found = shutil.which(program)
    if found is None:
        pytest.fail(f"{program} not found: {hint}", pytrace=False)
    return found


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = RUN_TIMEOUT,
) -> tuple[int, str, str]:
    """Run a program without blocking the event loop (pyproxy runs in it); kill it on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"{argv[0]} did not finish within {timeout:.0f} s\n{out.decode()}{err.decode()}"
        ) from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def libpq_env(proxy: RunningProxy, pool: str) -> dict[str, str]:
    return {
        "PGHOST": proxy.host,
        "PGPORT": str(proxy.port),
        "PGUSER": SCRAM_USER,
        "PGPASSWORD": SCRAM_PASSWORD,
        "PGDATABASE": pool,
        "PGCONNECT_TIMEOUT": "10",
        "PGAPPNAME": "",
    }


# --- the workload's tables and what each step must print ---------------------------------------


async def create_workload_tables(pg: PgServer, prefix: str, clients: int) -> None:
    """Per client i a schema PREFIX_i with marker(tag) = 'PREFIX_i'; one table PREFIX_rows."""
    conn = await asyncpg.connect(pg.dsn(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
    try:
        for i in range(clients):
            schema = f"{prefix}_{i}"
            await conn.execute(
                f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
                f"CREATE TABLE {schema}.marker (tag text); "
                f"INSERT INTO {schema}.marker VALUES ('{schema}')"
            )
        await conn.execute(
            f"DROP TABLE IF EXISTS {prefix}_rows; "
            f"CREATE TABLE {prefix}_rows (thread int, kind text, n int)"
        )
    finally:
        await conn.close()


def parse_records(out: str) -> list[dict[str, Any]]:
    records = []
    for line in out.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise AssertionError(f"not a JSON line: {line!r}") from exc
    return records


def expected_values(prefix: str, thread: int, batch_rows: int, upper: str) -> dict[str, Any]:
    """What every step must print in session and transaction mode."""
    batch_sum = sum(range(batch_rows))
    return {
        "autocommit": [42, SCRAM_USER, upper],
        "application_name": [f"{prefix}_app_{thread}"] * 5,
        "search_path": [f"{prefix}_{thread}"] * 5,
        "commit": "done",
        "rollback": "done",
        "batch": batch_rows,
        "rows": {"batch": [batch_rows, batch_sum], "commit": [3, 3]},
        "after": "still usable",
    }


def prepared_results(thread: int) -> list[list[Any]]:
    return [[(thread * 100 + run) * 2, f"t{thread}r{run}!"] for run in range(10)]


def check_workload(
    records: list[dict[str, Any]], mode: str, prefix: str, batch_rows: int, upper: str
) -> dict[tuple[int, str], dict[str, Any]]:
    """Every client printed every step with the value it must have; returns them by step."""
    fatal = [r for r in records if "fatal" in r]
    assert not fatal, fatal
    by_step = {(r["thread"], r["step"]): r for r in records}
    problems = []
    for thread in range(CLIENTS):
        expected = expected_values(prefix, thread, batch_rows, upper)
        if mode == "statement":
            # A transaction is refused in statement mode; the client learns it from an error of
            # class 25 (invalid transaction state) and nothing of it is left.
            del expected["commit"], expected["rollback"]
            expected["rows"] = {"batch": expected["rows"]["batch"]}
            for name in ("commit", "rollback"):
                got = by_step.get((thread, name), {})
                if not str(got.get("error", "")).startswith("25"):
                    problems.append((thread, name, got))
        for name, value in expected.items():
            got = by_step.get((thread, name), {})
            if got.get("value") != value:
                problems.append((thread, name, got, "expected", value))
    assert not problems, "\n".join(map(str, problems))
    return by_step


# --- pgJDBC ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def jdbc_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The JDBC workload compiled into a temporary directory."""
    javac = require("javac", JAVA_HINT)
    require("java", JAVA_HINT)
    if not JDBC_JAR.is_file():
        pytest.fail(f"{JDBC_JAR} not found: {JAVA_HINT}", pytrace=False)
    out = tmp_path_factory.mktemp("jdbc")
    proc = subprocess.run(
        [javac, "-d", str(out), "-cp", str(JDBC_JAR), str(JDBC_SOURCE)],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, f"javac failed:\n{proc.stdout}{proc.stderr}"
    return out


@pytest.mark.parametrize("prepare_threshold", [1, 5])
@pytest.mark.parametrize("mode", MODES)
async def test_jdbc_workload(
    pg: PgServer, make_proxy: MakeProxy, jdbc_classes: Path, mode: str, prepare_threshold: int
) -> None:
    prefix = f"jdbc_{mode[:5]}_{prepare_threshold}"
    await create_workload_tables(pg, prefix, CLIENTS)
    proxy = await make_proxy([pool_entry("jdbcpool", mode=mode, size=POOL_SIZE)])
    url = (
        f"jdbc:postgresql://{proxy.host}:{proxy.port}/jdbcpool"
        f"?prepareThreshold={prepare_threshold}&connectTimeout=10&socketTimeout=60"
    )
    classpath = f"{JDBC_JAR}{os.pathsep}{jdbc_classes}"
    rc, out, err = await run(
        ["java", "-cp", classpath, "Workload", url, SCRAM_USER, SCRAM_PASSWORD, str(CLIENTS),
         prefix],
    )  # fmt: skip
    assert rc == 0, out + err
    by_step = check_workload(parse_records(out), mode, prefix, 50, "PGJDBC")
    for thread in range(CLIENTS):
        assert by_step[(thread, "current_schema")].get("value") == ["public"] * 5
        prepared = by_step[(thread, "prepared")]
        assert prepared.get("value") == {
            "results": prepared_results(thread),
            "server_prepared": True,
        }, prepared


@pytest.mark.parametrize("mode", MODES)
async def test_jdbc_current_schema_follows_each_connection(
    pg: PgServer, make_proxy: MakeProxy, jdbc_classes: Path, mode: str
) -> None:
    """currentSchema=... in the URL: every connection sees it, on whichever server it runs."""
    prefix = f"jdbc_cs_{mode[:5]}"
    await create_workload_tables(pg, prefix, CLIENTS)
    proxy = await make_proxy([pool_entry("jdbcpool", mode=mode, size=POOL_SIZE)])
    url = (
        f"jdbc:postgresql://{proxy.host}:{proxy.port}/jdbcpool"
        f"?currentSchema={prefix}_0&connectTimeout=10&socketTimeout=60"
    )
    classpath = f"{JDBC_JAR}{os.pathsep}{jdbc_classes}"
    rc, out, err = await run(
        ["java", "-cp", classpath, "Workload", url, SCRAM_USER, SCRAM_PASSWORD, str(CLIENTS),
         prefix],
    )  # fmt: skip
    assert rc == 0, out + err
    records = parse_records(out)
    schemas = {r["thread"]: r.get("value") for r in records if r.get("step") == "current_schema"}
    assert schemas == {t: [f"{prefix}_0"] * 5 for t in range(CLIENTS)}, out


# --- node-postgres -----------------------------------------------------------------------------


_npm_lock = threading.Lock()


@pytest.fixture(scope="session")
def node_workload() -> Path:
    """tests/drivers/node with its node_modules, installed from the npm registry if missing."""
    require("node", NODE_HINT)
    npm = require("npm", NODE_HINT)
    with _npm_lock:
        if not (NODE_DIR / "node_modules" / "pg" / "package.json").is_file():
            cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyproxy-npm"
            proc = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--no-package-lock",
                 "--cache", str(cache)],
                cwd=NODE_DIR, capture_output=True, text=True, timeout=300,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert proc.returncode == 0, f"npm install failed ({NODE_HINT}):\n{proc.stderr}"
    return NODE_DIR / "workload.js"


@pytest.mark.parametrize("mode", MODES)
async def test_node_postgres_workload(
    pg: PgServer, make_proxy: MakeProxy, node_workload: Path, mode: str
) -> None:
    prefix = f"node_{mode[:5]}"
    await create_workload_tables(pg, prefix, CLIENTS)
    proxy = await make_proxy([pool_entry("nodepool", mode=mode, size=POOL_SIZE)])
    rc, out, err = await run(
        ["node", str(node_workload), str(CLIENTS), prefix],
        env=libpq_env(proxy, "nodepool"),
        cwd=NODE_DIR,
    )
    assert rc == 0, out + err
    by_step = check_workload(parse_records(out), mode, prefix, 20, "NODE-POSTGRES")
    for thread in range(CLIENTS):
        prepared = by_step[(thread, "prepared")]
        assert prepared.get("value") == prepared_results(thread), prepared


# --- SQLAlchemy 2 with psycopg 3 ---------------------------------------------------------------


def sa_url(proxy: RunningProxy, pool: str) -> str:
    return f"postgresql+psycopg://{SCRAM_USER}:{SCRAM_PASSWORD}@{proxy.host}:{proxy.port}/{pool}"


def rows_table(prefix: str) -> sa.Table:
    return sa.Table(
        f"{prefix}_rows",
        sa.MetaData(),
        sa.Column("thread", sa.Integer),
        sa.Column("kind", sa.Text),
        sa.Column("n", sa.Integer),
    )


def in_threads(work: Any, clients: int = CLIENTS) -> list[Any]:
    """``work(thread)`` for every thread at once; their results in thread order."""
    results: list[Any] = [None] * clients
    errors: list[BaseException] = []

    def target(thread: int) -> None:
        try:
            results[thread] = work(thread)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + RUN_TIMEOUT
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a SQLAlchemy thread did not finish"
    if errors:
        raise errors[0]
    return results


def sa_autocommit_work(engine: sa.Engine, prefix: str, thread: int) -> dict[str, Any]:
    """Core queries on an AUTOCOMMIT connection; what each returned."""
    table = rows_table(prefix)
    pause = sa.text("SELECT pg_sleep(0.001)")
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        # Ten runs of one query: psycopg prepares it on the server from the sixth on.
        out["prepared"] = [
            conn.execute(
                sa.text("SELECT CAST(:x AS int) * 2"), {"x": thread * 100 + i}
            ).scalar_one()
            for i in range(10)
        ]
        conn.execute(sa.text(f"SET application_name = '{prefix}_app_{thread}'"))
        out["application_name"] = []
        for _ in range(5):
            query = sa.text("SELECT current_setting('application_name')")
            out["application_name"].append(conn.execute(query).scalar_one())
            conn.execute(pause)
        conn.execute(sa.text(f"SET search_path = {prefix}_{thread}, public"))
        out["search_path"] = []
        for _ in range(5):
            out["search_path"].append(conn.execute(sa.text("SELECT tag FROM marker")).scalar_one())
            conn.execute(pause)
        conn.execute(
            table.insert(), [{"thread": thread, "kind": "many", "n": n} for n in range(20)]
        )
        out["rows"] = rows_by_kind(conn, table, thread)
    return out


def rows_by_kind(conn: sa.Connection, table: sa.Table, thread: int) -> dict[str, list[int]]:
    query = (
        sa.select(table.c.kind, sa.func.count(), sa.func.sum(table.c.n))
        .where(table.c.thread == thread)
        .group_by(table.c.kind)
    )
    return {kind: [count, total] for kind, count, total in conn.execute(query)}


def sa_transaction_work(engine: sa.Engine, prefix: str, thread: int) -> dict[str, Any]:
    """Default (transactional) use: one transaction committed, one rolled back."""
    table = rows_table(prefix)
    with engine.begin() as conn:
        conn.execute(
            table.insert(), [{"thread": thread, "kind": "commit", "n": n} for n in range(3)]
        )
    with engine.connect() as conn:
        conn.execute(table.insert().values(thread=thread, kind="rollback", n=1))
        conn.rollback()
    with engine.connect() as conn:
        rows = rows_by_kind(conn, table, thread)
        conn.commit()
    return rows


def sa_refused_transaction(engine: sa.Engine, prefix: str, thread: int) -> tuple[str, str]:
    """Statement mode: a statement in autocommit, then a transaction on the same connection;
    the SQLSTATE and message of the error the transaction meets."""
    table = rows_table(prefix)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
        conn.commit()  # ends SQLAlchemy's own autobegun block; nothing is sent in AUTOCOMMIT
        conn = conn.execution_options(isolation_level="READ COMMITTED")
        try:
            with conn.begin():
                conn.execute(table.insert().values(thread=thread, kind="commit", n=1))
        except sa.exc.DBAPIError as exc:
            return (getattr(exc.orig, "sqlstate", None) or "", str(exc.orig))
        return ("", "committed")


def sa_engine(url: str, mode: str, **kwargs: Any) -> sa.Engine:
    """An engine without a connection pool of its own: in session mode an idle pooled
    connection would keep its server from the clients waiting for one.

    In statement mode, SQLAlchemy's psycopg dialect must not look for hstore on its first
    connection: psycopg fetches type information inside a transaction, which statement mode
    refuses (``use_native_hstore=False`` is what an application does there).
    """
    if mode == "statement":
        kwargs.setdefault("use_native_hstore", False)
    return sa.create_engine(url, poolclass=sa.pool.NullPool, **kwargs)


async def rows_of(pg: PgServer, prefix: str) -> dict[str, int]:
    conn = await asyncpg.connect(pg.dsn(SCRAM_USER, SCRAM_PASSWORD, APP_DB))
    try:
        kinds = await conn.fetch(f"SELECT kind, count(*) FROM {prefix}_rows GROUP BY kind")
    finally:
        await conn.close()
    return {r["kind"]: r["count"] for r in kinds}


@pytest.mark.parametrize("mode", MODES)
async def test_sqlalchemy_core_autocommit(pg: PgServer, make_proxy: MakeProxy, mode: str) -> None:
    """AUTOCOMMIT: every query one result, prepared after five runs, settings kept."""
    prefix = f"sa_auto_{mode[:5]}"
    await create_workload_tables(pg, prefix, CLIENTS)
    proxy = await make_proxy([pool_entry("sapool", mode=mode, size=POOL_SIZE)])

    def workload() -> list[Any]:
        engine = sa_engine(sa_url(proxy, "sapool"), mode, isolation_level="AUTOCOMMIT")
        try:
            return in_threads(lambda t: sa_autocommit_work(engine, prefix, t))
        finally:
            engine.dispose()

    results = await asyncio.to_thread(workload)
    for thread in range(CLIENTS):
        assert results[thread] == {
            "prepared": [(thread * 100 + i) * 2 for i in range(10)],
            "application_name": [f"{prefix}_app_{thread}"] * 5,
            "search_path": [f"{prefix}_{thread}"] * 5,
            "rows": {"many": [20, 190]},
        }, thread
    assert await rows_of(pg, prefix) == {"many": 20 * CLIENTS}


@pytest.mark.parametrize("mode", ["session", "transaction", "statement"])
async def test_sqlalchemy_core_transactions(pg: PgServer, make_proxy: MakeProxy, mode: str) -> None:
    """Default (transactional) use: commits kept, rollbacks gone; statement mode refuses the
    transaction with an error and leaves nothing of it."""
    prefix = f"sa_tx_{mode[:5]}"
    await create_workload_tables(pg, prefix, CLIENTS)
    proxy = await make_proxy([pool_entry("sapool", mode=mode, size=POOL_SIZE)])

    def workload() -> list[Any]:
        if mode != "statement":
            engine = sa_engine(sa_url(proxy, "sapool"), mode)
            work = sa_transaction_work
        else:  # an application that mostly runs in autocommit tries a transaction
            engine = sa_engine(sa_url(proxy, "sapool"), mode, isolation_level="AUTOCOMMIT")
            work = sa_refused_transaction
        try:
            first = work(engine, prefix, 0)  # alone: nobody waits for its server
            return [first, *in_threads(lambda t: work(engine, prefix, t + 1), CLIENTS - 1)]
        finally:
            engine.dispose()

    results = await asyncio.to_thread(workload)
    for thread in range(CLIENTS):
        if mode == "statement":
            assert results[thread][0], results[thread]  # an error from the server's side
        else:
            assert results[thread] == {"commit": [3, 3]}, thread
    assert await rows_of(pg, prefix) == ({} if mode == "statement" else {"commit": 3 * CLIENTS})


@pytest.mark.parametrize(
    ("mode", "how"),
    [
        ("session", "set_in_transaction"),
        ("transaction", "set_in_transaction"),
        ("session", "set_config"),
        ("transaction", "set_config"),
        ("statement", "set_config"),
        ("session", "startup_options"),
        ("transaction", "startup_options"),
        ("statement", "startup_options"),
        ("session", "set_custom_parameter"),
        ("transaction", "set_custom_parameter"),
        ("statement", "set_custom_parameter"),
    ],
)
async def test_sqlalchemy_session_setting_follows_its_client(
    pg: PgServer, make_proxy: MakeProxy, mode: str, how: str
) -> None:
    """Each client makes a session setting its own way, every client waits until all have,
    then each reads its own value back five times (from whichever server it gets)."""
    prefix = f"sa_set_{mode[:5]}"
    await create_workload_tables(pg, prefix, CLIENTS)
    proxy = await make_proxy([pool_entry("sasetpool", mode=mode, size=POOL_SIZE)])
    url = sa_url(proxy, "sasetpool")
    # Session mode: a waiting client would hold one of the few servers the others wait for.
    barrier = threading.Barrier(CLIENTS, timeout=30) if mode != "session" else None
    read = {
        "set_custom_parameter": "SELECT current_setting('pyproxy_test.tenant', true)",
    }.get(how, "SELECT tag FROM marker")

    def work(thread: int) -> list[Any]:
        mine = f"{prefix}_{thread}"
        options = {"options": f"-c search_path={mine},public"} if how == "startup_options" else {}
        engine = sa_engine(
            url,
            mode,
            isolation_level="READ COMMITTED" if how == "set_in_transaction" else "AUTOCOMMIT",
            connect_args=options,
        )
        try:
            with engine.connect() as conn:
                if how == "set_in_transaction":
                    conn.execute(sa.text(f"SET search_path = {mine}, public"))
                elif how == "set_config":
                    conn.execute(
                        sa.text(f"SELECT set_config('search_path', '{mine}, public', false)")
                    )
                elif how == "set_custom_parameter":
                    conn.execute(sa.text(f"SET pyproxy_test.tenant = '{mine}'"))
                conn.commit()
                if barrier is not None:
                    barrier.wait()
                values = []
                for _ in range(5):
                    try:
                        values.append(conn.execute(sa.text(read)).scalar_one())
                    except sa.exc.DBAPIError as exc:
                        values.append(f"error {getattr(exc.orig, 'sqlstate', exc)}")
                    conn.commit()
                    conn.execute(sa.text("SELECT pg_sleep(0.001)"))
                    conn.commit()
                return values
        finally:
            engine.dispose()

    results = await asyncio.to_thread(in_threads, work)
    assert results == [[f"{prefix}_{t}"] * 5 for t in range(CLIENTS)]


# --- psql --------------------------------------------------------------------------------------


COPY_ROWS = 3000


def copy_input() -> str:
    """CSV rows that need quoting: commas, quotes, newlines, non-ASCII."""
    lines = []
    for i in range(COPY_ROWS):
        name = f'name {i}, "quoted"' if i % 3 == 0 else f"name-{i}"
        note = f"line one\nline two {i}" if i % 7 == 0 else f"näive ✓ {i}"
        lines.append(f'{i},"{name.replace(chr(34), chr(34) * 2)}","{note}",{i * 1.25}\n')
    return "".join(lines)


def parse_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("mode", MODES)
async def test_psql_copy_in_and_out(
    pg: PgServer, make_proxy: MakeProxy, tmp_path: Path, mode: str
) -> None:
    table = f"psql_copy_{mode}"
    run_sql(
        pg,
        f"DROP TABLE IF EXISTS {table}; "
        f"CREATE TABLE {table} (id int PRIMARY KEY, name text, note text, amount numeric);"
        f"ALTER TABLE {table} OWNER TO {SCRAM_USER}",
        dbname=APP_DB,
    )
    proxy = await make_proxy([pool_entry("copypool", mode=mode, size=2)])
    source, through, direct = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "direct.csv"
    source.write_text(copy_input(), encoding="utf-8")
    rc, out, err = await run(
        ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1",
         "-c", f"\\copy {table} FROM '{source}' WITH (FORMAT csv)",
         "-c", f"\\copy (SELECT * FROM {table} ORDER BY id) TO '{through}' WITH (FORMAT csv)",
         "-c", f"\\copy {table} TO '{tmp_path / 'table.csv'}' WITH (FORMAT csv)",
         "-c", f"SELECT count(*), sum(amount) FROM {table}"],
        env=libpq_env(proxy, "copypool"),
    )  # fmt: skip
    assert rc == 0, out + err
    assert out.splitlines()[-1] == f"{COPY_ROWS}|{sum(i * 1.25 for i in range(COPY_ROWS)):.2f}"
    direct_env = {**libpq_env(proxy, APP_DB), "PGHOST": pg.host, "PGPORT": str(pg.port)}
    rc, out, err = await run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1",
         "-c", f"\\copy (SELECT * FROM {table} ORDER BY id) TO '{direct}' WITH (FORMAT csv)"],
        env=direct_env,
    )  # fmt: skip
    assert rc == 0, out + err
    assert through.read_bytes() == direct.read_bytes()
    expected = parse_csv(source)
    assert parse_csv(through) == expected
    assert sorted(parse_csv(tmp_path / "table.csv")) == sorted(expected)


@pytest.mark.parametrize(
    "mode",
    [
        "session",
        "transaction",
        "statement",
    ],
)
async def test_psql_script_rolled_back_leaves_no_row(
    pg: PgServer, make_proxy: MakeProxy, tmp_path: Path, mode: str
) -> None:
    table = f"psql_rollback_{mode}"
    run_sql(
        pg,
        f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (n int);"
        f"ALTER TABLE {table} OWNER TO {SCRAM_USER}",
        dbname=APP_DB,
    )
    proxy = await make_proxy([pool_entry("rbpool", mode=mode, size=2)])
    script = tmp_path / "script.sql"
    script.write_text(
        f"BEGIN;\nINSERT INTO {table} VALUES (1);\nROLLBACK;\nSELECT 'after' || 'wards';\n"
    )
    # ON_ERROR_STOP stays off, psql's default: it goes on after an error.
    rc, out, err = await run(
        ["psql", "-X", "-At", "-f", str(script)], env=libpq_env(proxy, "rbpool")
    )
    assert rc == 0, out + err
    assert out.splitlines()[-1] == "afterwards", out + err
    count = run_sql(pg, f"SELECT count(*) FROM {table}", dbname=APP_DB).strip()
    assert count == "0", out + err


# --- pgbench -----------------------------------------------------------------------------------

BENCH_DB = "drivers_bench"


@pytest.fixture(scope="module")
def bench_db(pg: PgServer) -> Iterator[str]:
    """A database owned by the pool's user, initialised with ``pgbench -i -s 1``."""
    run_sql(pg, f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    run_sql(pg, f"CREATE DATABASE {BENCH_DB} OWNER {SCRAM_USER}")
    env = dict(os.environ, PGPASSWORD=SCRAM_PASSWORD)
    subprocess.run(
        ["pgbench", "-i", "-s", "1", "-q", "-h", pg.host, "-p", str(pg.port),
         "-U", SCRAM_USER, BENCH_DB],
        env=env, check=True, capture_output=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    yield BENCH_DB
    run_sql(pg, f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


@pytest.mark.parametrize("protocol", ["simple", "extended", "prepared"])
async def test_pgbench_tpcb_through_a_transaction_pool(
    make_proxy: MakeProxy, bench_db: str, protocol: str
) -> None:
    proxy = await make_proxy(
        [pool_entry("benchpool", mode="transaction", size=POOL_SIZE, db=bench_db)]
    )
    # pgbench prepares each command with a blocking PQprepare just before its first use: with
    # two threads for eight clients, one client waiting in the queue for a server would stop
    # its thread's other clients, which hold the servers inside their transactions (the same
    # happens with any transaction pooler). So prepared mode gets a thread per client.
    threads = "8" if protocol == "prepared" else "2"
    rc, out, err = await run(
        ["pgbench", "-n", "-c", "8", "-j", threads, "-T", "3", "-M", protocol, "benchpool"],
        env=libpq_env(proxy, "benchpool"),
        timeout=60,
    )
    assert rc == 0, out + err
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    assert processed is not None and failed is not None, out + err
    assert int(processed.group(1)) > 0, out
    assert failed.group(1) == "0", out + err


# --- psycopg 3: a transaction in statement mode, as PostgreSQL refuses one ---------------------


@pytest.mark.parametrize("first", ["alone", "after_a_statement"])
async def test_psycopg_transaction_in_statement_mode_is_an_aborted_block(
    make_proxy: MakeProxy, first: str
) -> None:
    """BEGIN is one error, the block stays aborted (25P02) until ROLLBACK or COMMIT, COMMIT
    is answered ROLLBACK, and the connection is usable afterwards."""
    proxy = await make_proxy([pool_entry("stmtpool", mode="statement", size=2)])
    async with await psycopg.AsyncConnection.connect(
        proxy.dsn("stmtpool"), autocommit=True
    ) as conn:
        if first == "after_a_statement":
            assert await (await conn.execute("SELECT 1")).fetchone() == (1,)
        with pytest.raises(psycopg.Error) as begin:
            await conn.execute("BEGIN")
        assert begin.value.sqlstate is not None, begin.value
        assert conn.info.transaction_status == pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            await conn.execute("SELECT 2")
        cur = await conn.execute("COMMIT")
        assert cur.statusmessage == "ROLLBACK"
        assert conn.info.transaction_status == pq.TransactionStatus.IDLE
        assert await (await conn.execute("SELECT 3")).fetchone() == (3,)
