"""Parsing console commands: case, quoting, arguments; unknown ones are 42601 with the list."""

from __future__ import annotations

from typing import Any

import pytest

from pyproxy.console.commands import Commands
from pyproxy.errors import PgError

PARSER = Commands(registry=None, config=None, view=None, clients=None, actions=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("SHOW POOLS", ("SHOW", "POOLS")),
        ("  show   stats_totals \n", ("SHOW", "stats_totals")),
        ("pause", ("PAUSE", None)),
        ('PAUSE "my pool"', ("PAUSE", "my pool")),
        ("kill_client 42", ("KILL_CLIENT", "42")),
        ("Reload", ("RELOAD", None)),
    ],
)
def test_commands_parse_like_pgbouncer(text: str, parsed: tuple[str, Any]) -> None:
    assert PARSER.parse(text) == parsed


@pytest.mark.parametrize("text", ["SHOW POOLS EXTRA", "SELECT 1", "PAUSE a b", "'x'", "SHOW 1+"])
def test_anything_else_is_a_syntax_error_with_the_command_list(text: str) -> None:
    with pytest.raises(PgError) as err:
        PARSER.run(text, "admin", "ops")
    assert err.value.sqlstate == "42601"
    assert err.value.hint is not None and "KILL_CLIENT" in err.value.hint
