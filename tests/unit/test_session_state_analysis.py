"""``analyze``: which statements break under transaction pooling, which SETs are replayed."""

from __future__ import annotations

import random

import pytest

from pyproxy.config import ProxyConfig
from pyproxy.pool.params import tracked_set
from pyproxy.pool.session_state import analyze, needs_analysis

REPLAYABLE = frozenset(ProxyConfig().replay_parameters)
TRACKED = tracked_set(("IntervalStyle",))


def kinds(sql: str, in_transaction: bool = False) -> list[str]:
    return [f.kind for f in analyze(sql, in_transaction, REPLAYABLE, TRACKED).findings]


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
    ("SET enable_seqscan = off", "set"),
    ("set role app_reader", "set"),
    ("SET SESSION AUTHORIZATION bob", "set"),
    ("SET my.custom = 'x'", "set"),
    ("RESET enable_seqscan", "reset"),
    ("RESET ROLE", "reset"),
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
    ("SELECT set_config('search_path', 'x', false)", "set_config"),
    ("SELECT set_config($1, $2, false)", "set_config"),
    ("SELECT set_config('a', lower('B'), off)", "set_config"),
    ("/* leading comment */ LISTEN x", "listen"),
    ("-- comment\nSET enable_hashjoin TO off", "set"),
]


@pytest.mark.parametrize("sql", SAFE)
def test_no_false_alarm(sql: str) -> None:
    assert kinds(sql) == []


@pytest.mark.parametrize(("sql", "kind"), UNSAFE)
def test_unsafe_statement_is_found(sql: str, kind: str) -> None:
    assert kinds(sql) == [kind]


def test_the_precheck_lets_every_unsafe_statement_through() -> None:
    for sql, _ in UNSAFE:
        raw = sql.encode()
        assert needs_analysis(raw, 0, len(raw)), sql


def test_each_statement_of_a_multi_statement_query_is_classified() -> None:
    sql = "SELECT 1; LISTEN a; SET enable_seqscan = off; SELECT pg_advisory_lock(1)"
    assert kinds(sql) == ["listen", "set", "advisory_lock"]


def test_transaction_state_is_followed_through_the_query() -> None:
    assert kinds("SET enable_seqscan = off", in_transaction=True) == []
    assert kinds("BEGIN; SET enable_seqscan = off; COMMIT") == []
    assert kinds("BEGIN; SELECT 1; COMMIT; SET enable_seqscan = off") == ["set"]
    assert kinds("START TRANSACTION; SET enable_seqscan = off; END") == []
    assert kinds("BEGIN; ROLLBACK TO SAVEPOINT s; SET enable_seqscan = off") == []


def test_the_finding_names_the_statement_and_why() -> None:
    finding = analyze("  LISTEN   orders ", False, REPLAYABLE, TRACKED).findings[0]
    assert finding.statement == "LISTEN orders"
    assert "notifications" in finding.why


def test_replayable_sets_and_resets_are_recorded_not_reported() -> None:
    result = analyze(
        "SET search_path = app, public; SET statement_timeout TO '5s'; RESET lock_timeout",
        False,
        REPLAYABLE,
        TRACKED,
    )
    assert result.findings == []
    assert result.replay == [
        ("set", "search_path", "app, public"),
        ("set", "statement_timeout", "'5s'"),
        ("reset", "lock_timeout", None),
    ]
    assert analyze("RESET ALL", False, REPLAYABLE, TRACKED).replay == [("reset_all", "", None)]
    assert analyze("SET LOCAL search_path = x", True, REPLAYABLE, TRACKED).replay == []


def test_deallocate_and_discard_all_are_reported_for_the_statement_maps() -> None:
    def dealloc(sql: str) -> list[str | None]:
        return analyze(sql, False, REPLAYABLE, TRACKED).deallocate

    assert dealloc("DEALLOCATE ALL") == [None]
    assert dealloc("deallocate prepare all") == [None]
    assert dealloc("DEALLOCATE pdo_stmt_00000001") == ["pdo_stmt_00000001"]
    assert dealloc("DEALLOCATE PREPARE s1") == ["s1"]
    assert dealloc("DISCARD ALL") == [None]
    assert dealloc("DISCARD PLANS") == []
    assert dealloc("SELECT 'DEALLOCATE ALL'") == []


def test_discard_all_also_resets_replayed_parameters() -> None:
    result = analyze("DISCARD ALL", False, REPLAYABLE, TRACKED)
    assert ("reset_all", "", None) in result.replay


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
        result = analyze(sql, False, REPLAYABLE, TRACKED)
        if result.findings or result.replay or result.deallocate:
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
