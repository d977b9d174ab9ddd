"""Session settings read back and replayed (pyproxy.session.settings), without a server."""

from __future__ import annotations

from pyproxy.session.settings import apply_sql, parse_state, startup_sql, state_query


def test_apply_sql_changes_only_what_differs_each_in_its_own_block() -> None:
    assert apply_sql({}, {}) == ""
    assert apply_sql({"search_path": "a"}, {"search_path": "a"}) == ""
    sql = apply_sql(
        {"search_path": '"$user", x', "work_mem": "7168", "app.tenant": "it's"},
        {"work_mem": "7168", "lock_timeout": "1000"},
    )
    assert sql.startswith("DO $pyproxy$BEGIN ") and sql.endswith(" END$pyproxy$")
    assert "set_config('search_path', '\"$user\", x', false)" in sql
    assert "set_config('app.tenant', 'it''s', false)" in sql
    assert "work_mem" not in sql  # already equal
    assert "RESET lock_timeout" in sql  # the server has it, the client does not
    assert sql.count("EXCEPTION WHEN OTHERS THEN RAISE WARNING") == 3


def test_reset_names_are_only_parameter_names() -> None:
    assert apply_sql({}, {"x; DROP TABLE t": "1"}) == ""


def test_the_state_query_reads_settings_custom_names_and_what_pins() -> None:
    sql = state_query({"app.tenant", "bad'name"}, frozenset({"lock_timeout"}), "app_user")
    assert "source = 'session'" in sql
    assert "ARRAY['lock_timeout']::text[]" in sql
    assert "unnest(ARRAY['app.tenant']::text[])" in sql  # the quote-bearing name is left out
    assert "session_user = 'app_user'" in sql
    assert "pg_listening_channels" in sql and "pg_my_temp_schema" in sql


def test_parse_state_keeps_settings_and_names_what_cannot_be_replayed() -> None:
    rows: list[list[str | None]] = [
        ["work_mem", "7168"],
        ["timezone", "UTC"],  # reported: follows through ParameterStatus, not here
        ["app.tenant", None],  # never set
        ["1", "0", "0", "2", "0", "t"],
    ]
    state = parse_state(rows, frozenset({"timezone"}))
    assert state.settings == {"work_mem": "7168"}
    assert state.kept == ("LISTEN", "temporary tables")
    assert parse_state([["0", "0", "0", "0", "0", "f"]], frozenset()).kept == ("SET ROLE",)
    assert parse_state([], frozenset()).kept == ("unknown",)  # no counts row: the worst


def test_startup_settings_are_applied_unguarded() -> None:
    assert startup_sql({"work_mem": "8MB"}) == (
        "SELECT pg_catalog.set_config('work_mem', '8MB', false)"
    )
