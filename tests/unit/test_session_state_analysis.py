"""``analyze``: which statements leave state that cannot be replayed, which may change session
settings (read back and replayed), which may undo session state."""

from __future__ import annotations

import random

import pytest

from pyproxy.session.analysis import analyze, needs_analysis, needs_analysis_statement_mode
from pyproxy.session.params import tracked_set

EXCLUDED = frozenset({"lock_timeout"})
TRACKED = tracked_set(("IntervalStyle",))


def kinds(sql: str, in_transaction: bool = False) -> list[str]:
    return [f.kind for f in analyze(sql, in_transaction, EXCLUDED, TRACKED).findings]


def settings(sql: str) -> bool:
    return analyze(sql, False, EXCLUDED, TRACKED).settings


# A realistic corpus: ORM-style queries, comments and strings that mention the keywords.
SAFE = [
    "SELECT 1",
    "select id, name from users where id = $1",
    "SELECT * FROM orders WHERE status = 'SET' AND note LIKE '%LISTEN%'",
    "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
    "UPDATE t SET reset = true, listen = false WHERE prepare = 1",
    "INSERT INTO audit (action) VALUES ('DECLARE c CURSOR WITH HOLD FOR SELECT 1')",
    "INSERT INTO log (msg) VALUES ($$CREATE TEMP TABLE x (a int)$$)",
    "SELECT 1 -- SET search_path = evil\n",
    "/* LISTEN channel; PREPARE p AS SELECT 1 */ SELECT now()",
    "SELECT 'pg_advisory_lock(1)' AS text",
    'SELECT "set", "listen", "temp" FROM "prepare"',
    "SELECT pg_advisory_xact_lock(1)",
    "SELECT pg_try_advisory_xact_lock(1, 2)",
    "SELECT pg_advisory_unlock(1)",
    "SELECT set_config('search_path', 'x', true)",
    "SELECT set_config('a.b', $1, is_local => true)",
    "SELECT current_setting('statement_timeout')",
    "BEGIN; SET LOCAL statement_timeout = 5000; SELECT 1; COMMIT",
    "BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; COMMIT",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
    "BEGIN; CREATE TEMP TABLE t (a int) ON COMMIT DROP; COMMIT",
    "CREATE TEMPORARY TABLE t AS SELECT 1 ON COMMIT DROP",
    "BEGIN; DECLARE c CURSOR FOR SELECT 1; FETCH 10 FROM c; COMMIT",
    "CREATE TABLE temp (a int)",
    "CREATE TABLE temp_values (a int)",
    "CREATE OR REPLACE FUNCTION f() RETURNS void AS $$ BEGIN SET search_path = x; END $$ "
    "LANGUAGE plpgsql",
    "WITH s AS (SELECT 1 AS set) SELECT * FROM s",
    "SELECT E'\\'; LISTEN x; \\'' AS escaped",
    "COMMIT",
    "ROLLBACK",
    "SHOW search_path",
    "PREPARE TRANSACTION 'gid-1'",
    "SET search_path = app, public",
    "SET statement_timeout TO 1000",
    "SET TimeZone = 'UTC'",
    "SET application_name = 'web'",
    "RESET search_path",
    "RESET ALL",
    "EXPLAIN SELECT * FROM t WHERE a = 'LISTEN'",
    "SELECT 1 AS reset; SELECT 2 AS listen",
]

UNSAFE = [
    ("set role app_reader", "role"),
    ("SET SESSION AUTHORIZATION bob", "role"),
    ("SELECT set_config('role', 'bob', false)", "role"),
    ("SET lock_timeout = '1s'", "excluded"),
    ("LISTEN orders", "listen"),
    ('listen "Mixed Case"', "listen"),
    ("PREPARE q(int) AS SELECT $1", "prepare"),
    ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "declare_with_hold"),
    ("declare c binary no scroll cursor with hold for select 1", "declare_with_hold"),
    ("CREATE TEMP TABLE t (a int)", "temp_table"),
    ("CREATE TEMPORARY TABLE t (a int) ON COMMIT DELETE ROWS", "temp_table"),
    ("create local temp table t as select 1", "temp_table"),
    ("CREATE TEMP SEQUENCE s", "temp_table"),
    ("SELECT pg_advisory_lock(42)", "advisory_lock"),
    ("SELECT pg_advisory_lock_shared(1, 2)", "advisory_lock"),
    ("select pg_try_advisory_lock(hashtext('job'))", "advisory_lock"),
    ("SELECT x FROM t WHERE pg_try_advisory_lock_shared(t.id)", "advisory_lock"),
    ("/* leading comment */ LISTEN x", "listen"),
]

# Statements that may change session settings: read back after the transaction, replayed.
SETTINGS = [
    "SET enable_seqscan = off",
    "SET SESSION enable_hashjoin TO off",
    "SET my.custom = 'x'",
    "RESET enable_seqscan",
    "RESET ALL",
    "DISCARD ALL",
    "SET search_path = app, public",
    "SET SCHEMA 'app'",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SELECT set_config('search_path', '', false)",
    "SELECT pg_catalog.set_config('search_path', 'x', false)",
    "SELECT set_config($1, $2, false)",
    "SELECT set_config('a', lower('B'), off)",
    "SELECT 1; SELECT set_config('app.tenant_id', '7', false)",
    "BEGIN; SET statement_timeout = 5; COMMIT",
    "-- comment\nSET enable_hashjoin TO off",
]

# Statements that change nothing that outlives the transaction.
NO_SETTINGS = [
    "SELECT 1",
    "SET LOCAL statement_timeout = 5",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SELECT set_config('search_path', 'x', true)",
    "SET TimeZone = 'UTC'",
    "SET application_name = 'web'",
    "SET client_encoding = 'UTF8'",
    "SELECT 'SET x = 1'",
]


@pytest.mark.parametrize("sql", SETTINGS)
def test_a_settings_change_is_read_back_not_reported(sql: str) -> None:
    result = analyze(sql, False, EXCLUDED, TRACKED)
    assert result.settings
    assert result.findings == []


@pytest.mark.parametrize("sql", NO_SETTINGS)
def test_transaction_local_and_reported_parameters_need_no_read_back(sql: str) -> None:
    assert not settings(sql)


def test_custom_parameters_are_named_for_the_read_back() -> None:
    result = analyze(
        "SET my.custom = 1; SELECT set_config('App.Tenant_ID', '7', false)",
        False,
        EXCLUDED,
        TRACKED,
    )
    assert result.custom == {"my.custom", "app.tenant_id"}


@pytest.mark.parametrize(
    "sql",
    [
        "UNLISTEN *",
        "unlisten orders",
        "DEALLOCATE ALL",
        "DEALLOCATE q",
        "CLOSE ALL",
        "DISCARD TEMP",
        "DISCARD ALL",
        "SELECT pg_advisory_unlock(1)",
        "SELECT pg_advisory_unlock_all()",
        "DROP TABLE t",
        "RESET ROLE",
        "SET ROLE NONE",
        "RESET SESSION AUTHORIZATION",
        "SET SESSION AUTHORIZATION DEFAULT",
    ],
)
def test_statements_that_may_undo_session_state_are_noticed(sql: str) -> None:
    result = analyze(sql, False, EXCLUDED, TRACKED)
    assert result.undo
    assert result.findings == []


def test_every_finding_has_a_hint_that_fits_it() -> None:
    hints = {kind: analyze(sql, False, EXCLUDED, TRACKED).findings[0].hint for sql, kind in UNSAFE}
    assert "UNLISTEN" in hints["listen"]
    assert "DEALLOCATE" in hints["prepare"] and "protocol-level" in hints["prepare"]
    assert "WITH HOLD" in hints["declare_with_hold"]
    assert "ON COMMIT DROP" in hints["temp_table"]
    assert "pg_advisory_xact_lock" in hints["advisory_lock"]
    assert "RESET ROLE" in hints["role"]
    assert "SET LOCAL" in hints["excluded"]
    assert all("pin" in h for k, h in hints.items() if k != "excluded")
    assert not any("SET LOCAL" in h for k, h in hints.items() if k in ("listen", "prepare"))


@pytest.mark.parametrize("sql", SAFE)
def test_no_false_alarm(sql: str) -> None:
    assert kinds(sql) == []


@pytest.mark.parametrize(("sql", "kind"), UNSAFE)
def test_unsafe_statement_is_found(sql: str, kind: str) -> None:
    assert kinds(sql) == [kind]


def test_the_precheck_lets_every_statement_the_analysis_acts_on_through() -> None:
    for sql in [u[0] for u in UNSAFE] + SETTINGS:
        raw = sql.encode()
        assert needs_analysis(raw, 0, len(raw)), sql


def test_statement_mode_also_looks_at_transaction_blocks() -> None:
    for sql in (b"BEGIN", b"begin isolation level serializable", b"START TRANSACTION"):
        assert not needs_analysis(sql, 0, len(sql))
        assert needs_analysis_statement_mode(sql, 0, len(sql))
    assert not needs_analysis_statement_mode(b"SELECT 1", 0, 8)


def test_each_statement_of_a_multi_statement_query_is_classified() -> None:
    sql = "SELECT 1; LISTEN a; SET ROLE x; SELECT pg_advisory_lock(1)"
    assert kinds(sql) == ["listen", "role", "advisory_lock"]


def test_the_finding_names_the_statement_and_why() -> None:
    finding = analyze("  LISTEN   orders ", False, EXCLUDED, TRACKED).findings[0]
    assert finding.statement == "LISTEN orders"
    assert "notifications" in finding.why


def test_deallocate_and_discard_all_are_reported_for_the_statement_maps() -> None:
    def dealloc(sql: str) -> list[str | None]:
        return analyze(sql, False, EXCLUDED, TRACKED).deallocate

    assert dealloc("DEALLOCATE ALL") == [None]
    assert dealloc("deallocate prepare all") == [None]
    assert dealloc("DEALLOCATE pdo_stmt_00000001") == ["pdo_stmt_00000001"]
    assert dealloc("DEALLOCATE PREPARE s1") == ["s1"]
    assert dealloc("DISCARD ALL") == [None]
    assert dealloc("DISCARD PLANS") == []
    assert dealloc("SELECT 'DEALLOCATE ALL'") == []


# Fragments that generated queries are made of: keywords in several spellings, look-alikes,
# separators, comments, quotes and calls.
_FRAGMENTS = [
    "SELECT",
    "select",
    "Set",
    "SET",
    "reset",
    "BEGIN",
    "commit",
    "END",
    "rollback",
    "start",
    "transaction",
    "listen",
    "LISTEN",
    "prepare",
    "Declare",
    "cursor",
    "with hold",
    "for",
    "create",
    "CREATE",
    "temp",
    "TEMPORARY",
    "table",
    "discard",
    "ALL",
    "deallocate",
    "abort",
    "pg_advisory_lock(1)",
    "pg_try_advisory_lock_shared(2)",
    "pg_advisory_xact_lock(3)",
    "set_config('a', 'b', false)",
    "settings",
    "reset_x",
    "x",
    "1",
    "=",
    "enable_seqscan",
    "off",
    "search_path",
    ";",
    ";",
    " ",
    "\n",
    "(",
    ")",
    "/* c */",
    "-- c\n",
    "'s'",
    '"q"',
]


def _generated_queries(count: int) -> list[str]:
    rng = random.Random(20261121)
    return [
        "".join(rng.choice(_FRAGMENTS) + rng.choice(("", " ")) for _ in range(rng.randint(0, 8)))
        for _ in range(count)
    ]


def test_the_precheck_lets_through_every_query_the_analysis_acts_on() -> None:
    acted_on = 0
    for sql in _generated_queries(20_000):
        result = analyze(sql, False, EXCLUDED, TRACKED)
        if result:
            acted_on += 1
            raw = sql.encode() + b"\x00"  # as in a Query message: the text and its terminator
            assert needs_analysis(b"Q\x00\x00\x00\x00" + raw, 5, 5 + len(raw)), sql
    assert acted_on > 1_000  # the corpus does exercise the analysis


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
        "select id, name from users where id = $1",
        "UPDATE accounts SET balance = balance - $1 WHERE id = $2;",
        "INSERT INTO t (a, b) VALUES (1, 'x') RETURNING id",
        "BEGIN",
        "COMMIT;",
        "SELECT now();\n",
    ],
)
def test_the_precheck_passes_common_single_statements_without_a_closer_look(sql: str) -> None:
    raw = sql.encode() + b"\x00"
    assert not needs_analysis(raw, 0, len(raw))
