"""pg_dump and pg_restore through pyproxy under concurrent load give what they give directly."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
import re
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from tests.integration.conftest import MakeProxy
from tests.support.pgcluster import PgServer, find_server_bindir, run_sql
from tests.support.proxy import SCRAM_PASSWORD, SCRAM_USER, RunningProxy, pool_entry

SOURCE_DB = "dumpsrc"
RESTRICT_KEY = "pyproxytests"  # else pg_dump writes \restrict with a new random key each time
POOL_SIZE = 3
LOAD_CLIENTS = 8
ROUNDS_PER_CONNECTION = 20  # then a new connection: in session mode, servers change hands
RUN_TIMEOUT = 120.0
MODE_MESSAGE = re.compile(
    r"\b(?:session|transaction)(?: or (?:session|transaction))?(?: pooling)?[ -]mode", re.I
)

SCHEMA_SQL = r"""
CREATE SCHEMA shop;
CREATE SCHEMA audit;
COMMENT ON SCHEMA shop IS 'Orders, their lines and how they are numbered';
COMMENT ON SCHEMA audit IS 'Who changed what';

CREATE SEQUENCE shop.orders_id_seq;
CREATE SEQUENCE shop.code_seq START 1000;

CREATE FUNCTION shop.next_code() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN 'C' || lpad(nextval('shop.code_seq')::text, 6, '0');
END
$$;
COMMENT ON FUNCTION shop.next_code() IS 'The next order code, C001000 and up';

CREATE TABLE shop.orders (
    id bigint PRIMARY KEY DEFAULT nextval('shop.orders_id_seq'),
    code text NOT NULL UNIQUE DEFAULT shop.next_code(),
    customer text NOT NULL,
    placed_at timestamptz NOT NULL DEFAULT '2024-01-02 03:04:05+00',
    total numeric(12, 2) NOT NULL DEFAULT 0 CHECK (total >= 0),
    tags text[] NOT NULL DEFAULT '{}',
    details jsonb,
    ratio double precision,
    weight real,
    flags bit varying(8),
    uid uuid,
    valid tstzrange,
    wait interval,
    picture bytea
);
ALTER SEQUENCE shop.orders_id_seq OWNED BY shop.orders.id;
COMMENT ON TABLE shop.orders IS 'One row per order';
COMMENT ON COLUMN shop.orders.code IS 'Printed on the invoice';

CREATE TABLE shop.order_lines (
    order_id bigint NOT NULL REFERENCES shop.orders (id) ON DELETE CASCADE,
    line int NOT NULL,
    item text NOT NULL,
    qty int NOT NULL CHECK (qty > 0),
    price numeric(10, 2) NOT NULL,
    PRIMARY KEY (order_id, line)
);
CREATE INDEX order_lines_item_idx ON shop.order_lines (lower(item)) WHERE qty > 1;
CREATE INDEX orders_customer_idx ON shop.orders (customer, placed_at DESC);

-- SQL functions whose bodies name their tables unqualified: they work for callers whose
-- search_path has shop. Restoring them needs check_function_bodies = false.
SET search_path = shop, public;
CREATE FUNCTION shop.order_total(p_order bigint) RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(qty * price), 0) FROM order_lines WHERE order_id = p_order
$$;
COMMENT ON FUNCTION shop.order_total(bigint) IS 'Sum of the order''s lines';
CREATE FUNCTION shop.line_count(p_order bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM order_lines WHERE order_id = p_order
$$;
CREATE FUNCTION shop.customer_orders(p_customer text) RETURNS SETOF bigint LANGUAGE sql AS $$
    SELECT id FROM orders WHERE customer = p_customer ORDER BY id
$$;
CREATE FUNCTION shop.item_quantity(p_item text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT coalesce(sum(qty), 0) FROM order_lines WHERE lower(item) = lower(p_item)
$$;
CREATE FUNCTION shop.busiest_day() RETURNS date LANGUAGE sql STABLE AS $$
    SELECT placed_at::date FROM orders GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1
$$;
RESET search_path;

CREATE VIEW shop.order_summary AS
    SELECT o.id, o.code, o.customer, count(l.line) AS lines, sum(l.qty * l.price) AS amount
    FROM shop.orders o LEFT JOIN shop.order_lines l ON l.order_id = o.id
    GROUP BY o.id, o.code, o.customer;
COMMENT ON VIEW shop.order_summary IS 'Orders with their line count and amount';

CREATE TABLE audit.log (
    id bigserial PRIMARY KEY,
    tbl text NOT NULL,
    op text NOT NULL,
    row_data jsonb,
    at timestamptz NOT NULL DEFAULT '2024-01-01 00:00:00+00'
);
CREATE FUNCTION audit.record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO audit.log (tbl, op, row_data)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP, to_jsonb(NEW));
    RETURN NEW;
END
$$;
SET search_path = audit;
CREATE FUNCTION audit.entries(p_op text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM log WHERE op = p_op
$$;
RESET search_path;
CREATE TRIGGER orders_audit AFTER INSERT OR UPDATE ON shop.orders
    FOR EACH ROW EXECUTE FUNCTION audit.record();
COMMENT ON TRIGGER orders_audit ON shop.orders IS 'Every insert and update, as JSON';

-- Objects in public: pg_dump names them public.x only while its search_path is empty.
CREATE TABLE public.settings (key text PRIMARY KEY, value text NOT NULL);
CREATE SEQUENCE public.batch_seq;
CREATE TABLE public.batches (
    id int PRIMARY KEY DEFAULT nextval('batch_seq'),
    note text DEFAULT current_setting('application_name')
);
CREATE VIEW public.big_orders AS
    SELECT o.code, s.value AS currency FROM shop.orders o, settings s
    WHERE s.key = 'currency' AND o.total > 100;

INSERT INTO public.settings VALUES ('currency', 'EUR'), ('tab', E'a\tb'), ('quote', 'it''s');
INSERT INTO public.batches (note) VALUES ('first'), (NULL), (E'back\\slash');

INSERT INTO shop.orders (customer, placed_at, total, tags, details, ratio, weight, flags, uid,
                         valid, wait, picture)
SELECT
    CASE WHEN i % 5 = 0 THEN 'Zoë Ünïcode ' || i ELSE 'customer ' || i END,
    timestamptz '2024-03-01 12:00:00+00' + i * interval '7 hours 13 minutes',
    (i * 12.34)::numeric(12, 2),
    ARRAY['tag' || (i % 3), CASE WHEN i % 4 = 0 THEN 'with space' ELSE 'x' END],
    jsonb_build_object('i', i, 'nested', jsonb_build_object('ok', i % 2 = 0), 'pi', 3.14159),
    CASE i % 6 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN 'Infinity' WHEN 2 THEN 1e-300
               WHEN 3 THEN 0.1 ELSE i / 7.0 END,
    (i / 3.0)::real,
    (i % 256)::bit(8)::varbit,
    md5(i::text)::uuid,
    tstzrange('2024-01-01 00:00+00'::timestamptz + i * interval '1 day', NULL),
    i * interval '1 minute 30 seconds',
    CASE WHEN i % 3 = 0 THEN NULL ELSE decode(md5(i::text), 'hex') END
FROM generate_series(1, 200) AS i;

INSERT INTO shop.order_lines (order_id, line, item, qty, price)
SELECT o.id, l, 'item ' || ((o.id * l) % 17), 1 + (o.id + l) % 4, ((o.id + l) % 50) + 0.99
FROM shop.orders o, generate_series(1, 3) AS l;

UPDATE shop.orders SET total = total + 1 WHERE id % 50 = 0;
"""


# --- programs ----------------------------------------------------------------------------------


def program(name: str) -> str:
    """A PostgreSQL client program of the test server's version when we know its binaries."""
    bindir = find_server_bindir()
    if bindir is not None and (bindir / name).exists():
        return str(bindir / name)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install the PostgreSQL client programs", pytrace=False)
    return found


async def run(
    argv: Sequence[str], env: Mapping[str, str], timeout: float = RUN_TIMEOUT
) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"{argv[0]} did not finish in {timeout:.0f} s: {err.decode()}"
        ) from None
    assert proc.returncode is not None
    return proc.returncode, out, err.decode(errors="replace")


@dataclass(frozen=True)
class Target:
    """Where a tool connects: direct PostgreSQL or a pool, by libpq environment variables."""

    host: str
    port: int
    dbname: str

    def env(self) -> dict[str, str]:
        return {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": SCRAM_USER,
            "PGPASSWORD": SCRAM_PASSWORD,
            "PGDATABASE": self.dbname,
            "PGCONNECT_TIMEOUT": "10",
        }


def direct(pg: PgServer, dbname: str) -> Target:
    return Target(pg.host, pg.port, dbname)


def pooled(proxy: RunningProxy, pool: str) -> Target:
    return Target(proxy.host, proxy.port, pool)


async def pg_dump(target: Target, *args: str) -> tuple[int, bytes, str]:
    return await run([program("pg_dump"), "--no-password", *args], target.env())


async def plain_dump(target: Target) -> str:
    rc, out, err = await pg_dump(target, f"--restrict-key={RESTRICT_KEY}")
    assert rc == 0, f"pg_dump of {target}: {err}"
    return out.decode()


async def custom_dump(target: Target, path: Path) -> tuple[int, str]:
    rc, _, err = await pg_dump(target, "-Fc", "-f", str(path))
    return rc, err


async def archive_views(path: Path) -> tuple[str, str]:
    """The SQL script pg_restore makes of a custom-format archive, and its table of contents
    without the header (which has the archive's time and the database name)."""
    restore = [program("pg_restore"), f"--restrict-key={RESTRICT_KEY}"]
    rc, script, err = await run([*restore, "-f", "-", str(path)], {})
    assert rc == 0, err
    rc, listing, err = await run([*restore, "-l", str(path)], {})
    assert rc == 0, err
    toc = "".join(
        line for line in listing.decode().splitlines(keepends=True) if not line.startswith(";")
    )
    return script.decode(), toc


def diff(expected: str, got: str, what: str, limit: int = 60) -> str:
    lines = list(
        difflib.unified_diff(
            expected.splitlines(), got.splitlines(), f"direct {what}", f"{what} through pyproxy",
            lineterm="", n=1,
        )
    )  # fmt: skip
    more = f"\n... {len(lines) - limit} more diff lines" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def assert_same(expected: str, got: str, what: str) -> None:
    assert got == expected, f"{what} differs from the direct one:\n{diff(expected, got, what)}"


# --- databases ---------------------------------------------------------------------------------


def create_database(pg: PgServer, name: str) -> None:
    run_sql(pg, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    run_sql(pg, f"CREATE DATABASE {name} OWNER {SCRAM_USER}")


def drop_database(pg: PgServer, name: str) -> None:
    run_sql(pg, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class Source:
    """The source database and its direct dumps."""

    plain: str
    script: str
    toc: str
    archive: Path


@pytest.fixture(scope="module")
async def source_db(
    pg: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Source]:
    """``dumpsrc``, owned by the pool's user, with SCHEMA_SQL; dumped directly once."""
    create_database(pg, SOURCE_DB)
    try:
        conn = await asyncpg.connect(pg.dsn(SCRAM_USER, SCRAM_PASSWORD, SOURCE_DB))
        try:
            await conn.execute(SCHEMA_SQL)
        finally:
            await conn.close()
        target = direct(pg, SOURCE_DB)
        archive = tmp_path_factory.mktemp("dumpsrc") / "direct.dump"
        rc, err = await custom_dump(target, archive)
        assert rc == 0, err
        script, toc = await archive_views(archive)
        yield Source(await plain_dump(target), script, toc, archive)
    finally:
        drop_database(pg, SOURCE_DB)


# --- concurrent load ---------------------------------------------------------------------------


@dataclass
class Load:
    """Clients sharing the pool with the tool: each sets its own session, checks it, reconnects
    now and then, and runs statements, until stopped."""

    proxy: RunningProxy
    pool: str
    with_tables: bool
    rounds: int = 0
    errors: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, i: int) -> None:
        path = ("shop, audit", "audit, public", "public, shop")[i % 3]
        zone = ("Asia/Tokyo", "America/New_York", "UTC")[i % 3]
        while not self.stop.is_set():
            try:
                conn = await self.proxy.asyncpg(self.pool, statement_cache_size=100)
            except (OSError, asyncpg.PostgresError) as exc:
                self.errors.append(f"client {i} connect: {exc!r}")
                return
            try:
                for _ in range(ROUNDS_PER_CONNECTION):
                    await self.round(conn, i, path, zone)
                    if self.stop.is_set():
                        break
            except (OSError, asyncpg.PostgresError) as exc:
                self.errors.append(f"client {i}: {exc!r}")
                return
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)

    async def round(self, conn: asyncpg.Connection, i: int, path: str, zone: str) -> None:
        await conn.execute(f"SET search_path = {path}")
        await conn.execute(f"SET statement_timeout = '{5001 + i}ms'")
        await conn.execute(f"SET work_mem = '{4 + i}MB'")
        await conn.execute(f"SET TIME ZONE '{zone}'")
        if i % 2:
            # Not one of the replayed parameters: pyproxy notices it and it stays on the server.
            await conn.execute("SET extra_float_digits = 0")
        got = await conn.fetchrow(
            "SELECT current_setting('search_path'), current_setting('statement_timeout'), "
            "current_setting('work_mem'), current_setting('TimeZone')"
        )
        expected = (path, f"{5001 + i}ms", f"{4 + i}MB", zone)
        if tuple(got) != expected:
            self.errors.append(f"client {i} saw {tuple(got)}, set {expected}")
        if self.with_tables:
            count = await conn.fetchval("SELECT count(*) FROM shop.orders WHERE id <= $1", i + 1)
            if count != i + 1:
                self.errors.append(f"client {i} counted {count} orders")
            if path.startswith("shop"):  # the function's body needs shop on the search_path
                await conn.fetchval("SELECT shop.order_total($1)", i + 1)
        else:
            await conn.fetchval("SELECT count(*) FROM pg_catalog.pg_class")
        self.rounds += 1


@contextlib.asynccontextmanager
async def load_on(proxy: RunningProxy, pool: str, with_tables: bool) -> AsyncIterator[Load]:
    load = Load(proxy, pool, with_tables)
    tasks = [asyncio.create_task(load.client(i)) for i in range(LOAD_CLIENTS)]
    try:
        while load.rounds < LOAD_CLIENTS and not load.errors:  # every client under way
            await asyncio.sleep(0.01)
        yield load
    finally:
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    assert not load.errors, load.errors[:5]
    assert load.rounds > 2 * LOAD_CLIENTS, f"only {load.rounds} rounds of load ran"


# --- dump --------------------------------------------------------------------------------------

DUMP_MODES = ("session", "transaction")
RESTORE_MODES = DUMP_MODES


@pytest.mark.parametrize("mode", DUMP_MODES)
async def test_plain_pg_dump_through_a_loaded_pool_matches_direct(
    make_proxy: MakeProxy, source_db: Source, mode: str
) -> None:
    proxy = await make_proxy([pool_entry("dumppool", mode=mode, size=POOL_SIZE, db=SOURCE_DB)])
    async with load_on(proxy, "dumppool", with_tables=True):
        got = await plain_dump(pooled(proxy, "dumppool"))
    assert_same(source_db.plain, got, "plain pg_dump")


@pytest.mark.parametrize("mode", DUMP_MODES)
async def test_custom_pg_dump_through_a_loaded_pool_matches_direct(
    make_proxy: MakeProxy, source_db: Source, mode: str, tmp_path: Path
) -> None:
    proxy = await make_proxy([pool_entry("dumppool", mode=mode, size=POOL_SIZE, db=SOURCE_DB)])
    archive = tmp_path / "pooled.dump"
    async with load_on(proxy, "dumppool", with_tables=True):
        rc, err = await custom_dump(pooled(proxy, "dumppool"), archive)
    assert rc == 0, err
    script, toc = await archive_views(archive)
    assert_same(source_db.toc, toc, "pg_restore -l of pg_dump -Fc")
    assert_same(source_db.script, script, "pg_restore -f - of pg_dump -Fc")


# --- restore -----------------------------------------------------------------------------------


async def restore(target: Target, archive: Path) -> tuple[int, str]:
    argv = [program("pg_restore"), "--no-password", "-d", target.dbname, str(archive)]
    rc, _, err = await run(argv, target.env())
    return rc, err


async def test_direct_pg_restore_gives_an_identical_database(
    pg: PgServer, source_db: Source
) -> None:
    """The harness itself: restoring directly and dumping again gives the source's dump."""
    create_database(pg, "dumpdst_direct")
    try:
        rc, err = await restore(direct(pg, "dumpdst_direct"), source_db.archive)
        assert rc == 0 and not err, err
        assert_same(source_db.plain, await plain_dump(direct(pg, "dumpdst_direct")), "restored")
    finally:
        drop_database(pg, "dumpdst_direct")


@pytest.mark.parametrize("mode", RESTORE_MODES)
async def test_pg_restore_through_a_loaded_pool_gives_an_identical_database(
    pg: PgServer, make_proxy: MakeProxy, source_db: Source, mode: str
) -> None:
    db = f"dumpdst_{mode}"
    create_database(pg, db)
    try:
        proxy = await make_proxy([pool_entry("restorepool", mode=mode, size=POOL_SIZE, db=db)])
        async with load_on(proxy, "restorepool", with_tables=False):
            rc, err = await restore(pooled(proxy, "restorepool"), source_db.archive)
        assert rc == 0 and "error" not in err.lower(), err
        restored = await plain_dump(direct(pg, db))
        assert_same(source_db.plain, restored.replace(db, SOURCE_DB), "restored database")
    finally:
        drop_database(pg, db)


# --- statement mode ----------------------------------------------------------------------------


def assert_refused_naming_modes(stderr: str) -> None:
    """The tool's error (not a NOTICE before it) says which modes to use instead."""
    error = re.search(r"error", stderr, re.I)
    assert error is not None, stderr
    assert MODE_MESSAGE.search(stderr, error.start()), stderr


async def test_pg_dump_through_a_statement_pool_is_refused_naming_the_modes_that_work(
    make_proxy: MakeProxy, source_db: Source
) -> None:
    proxy = await make_proxy(
        [pool_entry("dumppool", mode="statement", size=POOL_SIZE, db=SOURCE_DB)]
    )
    rc, _, err = await pg_dump(pooled(proxy, "dumppool"))
    assert rc != 0, "pg_dump through a statement pool succeeded"
    assert_refused_naming_modes(err)


async def test_pg_restore_through_a_statement_pool_is_refused_naming_the_modes_that_work(
    pg: PgServer, make_proxy: MakeProxy, source_db: Source
) -> None:
    db = "dumpdst_statement"
    create_database(pg, db)
    try:
        proxy = await make_proxy(
            [pool_entry("restorepool", mode="statement", size=POOL_SIZE, db=db)]
        )
        rc, err = await restore(pooled(proxy, "restorepool"), source_db.archive)
        assert rc != 0, f"pg_restore through a statement pool succeeded: {err}"
        assert_refused_naming_modes(err)
    finally:
        drop_database(pg, db)
