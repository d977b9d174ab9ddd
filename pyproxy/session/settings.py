"""Session settings that follow their client: reading them back from a server, replaying them.

Every server of a pool logs in the same way, so a client's session settings are the ones it
changed: ``{name: value}``, values as PostgreSQL prints them in ``pg_settings.setting`` (or
``current_setting`` for custom dotted names), which ``set_config(name, value, false)`` takes back
unchanged. After a transaction that may have changed them, ``state_query`` reads them back from
the server (committed changes stay, rolled-back ones are gone) together with the session state
that cannot be replayed; ``apply_sql`` makes another server match before the client's next request
on it.

Parameters PostgreSQL reports with ParameterStatus (client_encoding, TimeZone, ...) are left
out: they follow their client through ``pyproxy.session.params``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyproxy.session.params import quote_literal

Settings = dict[str, str]

# One row per parameter set in this session (source 'session'), then one row of counts of what
# cannot be replayed: LISTEN channels, SQL prepared statements, WITH HOLD cursors, temporary
# relations, session advisory locks, and whether the role is still the login role.
_SETTINGS = (
    "SELECT lower(name), setting FROM pg_catalog.pg_settings WHERE source = 'session'"
    " AND lower(name) <> ALL ({excluded})"
)
_CUSTOM = " UNION ALL SELECT n, pg_catalog.current_setting(n, true) FROM unnest({names}) AS n"
_STATE = (
    "SELECT (SELECT count(*) FROM pg_catalog.pg_listening_channels()),"
    " (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql),"
    " (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable),"
    " (SELECT count(*) FROM pg_catalog.pg_class"
    " WHERE relnamespace = pg_catalog.pg_my_temp_schema()),"
    " (SELECT count(*) FROM pg_catalog.pg_locks"
    " WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()),"
    " current_user = session_user AND session_user = {login}"
)
STATE_WHAT = ("LISTEN", "PREPARE", "WITH HOLD cursors", "temporary tables", "advisory locks")
_NAME = re.compile(r"[a-z_][a-z0-9_$]*(?:\.[a-z_][a-z0-9_$]*)*")


@dataclass(frozen=True)
class SessionState:
    """What a server's session holds after a transaction, as ``state_query`` read it."""

    settings: Settings
    kept: tuple[str, ...]  # what cannot be replayed, by name (empty: nothing)


def state_query(custom: set[str], excluded: frozenset[str], login_user: str) -> str:
    """The query reading back a server's session settings and what cannot be replayed.

    ``custom``: dotted parameter names to read too (PostgreSQL does not list them);
    ``excluded``: parameters never replayed; ``login_user``: the role the server logged in as.
    """
    sql = _SETTINGS.format(excluded=_array(excluded))
    names = sorted(n for n in custom if _NAME.fullmatch(n))
    if names:
        sql += _CUSTOM.format(names=_array(names))
    return sql + ";" + _STATE.format(login=quote_literal(login_user))


def parse_state(rows: list[list[str | None]], tracked: frozenset[str]) -> SessionState:
    """The rows ``state_query`` answered: two-column setting rows, then the six counts."""
    settings: Settings = {}
    kept: tuple[str, ...] = ("unknown",)  # no counts row: assume the worst
    for row in rows:
        if len(row) == 2:
            name, value = row
            if name is not None and value is not None and name not in tracked:
                settings[name] = value
        elif len(row) == 6:
            counts = [int(c or 0) for c in row[:5]]
            kept = tuple(what for what, n in zip(STATE_WHAT, counts, strict=True) if n)
            if row[5] != "t":
                kept += ("SET ROLE",)
    return SessionState(settings, kept)


def apply_sql(client: Settings, server: Settings) -> str:
    """A query that changes ``server``'s settings into ``client``'s ("" when equal).

    Each change runs on its own: a value PostgreSQL took once is expected to be taken again,
    and if it is not (a role lost a privilege), the others still apply and a WARNING says so.
    """
    parts = [
        f"PERFORM pg_catalog.set_config({quote_literal(name)}, {quote_literal(value)}, false)"
        for name, value in client.items()
        if server.get(name) != value
    ]
    parts += [f"RESET {name}" for name in server if name not in client and _NAME.fullmatch(name)]
    if not parts:
        return ""
    body = "".join(
        f"BEGIN {part}; EXCEPTION WHEN OTHERS THEN RAISE WARNING 'pyproxy: % (%)', SQLERRM, "
        f"{quote_literal(part)}; END;"
        for part in parts
    )
    return f"DO $pyproxy$BEGIN {body} END$pyproxy$"


def startup_sql(options: Settings) -> str:
    """The settings a client asked for in its startup packet (``options=-c name=value``), applied
    once unguarded: a value PostgreSQL refuses ends the login, as it would without pyproxy."""
    return ";".join(
        f"SELECT pg_catalog.set_config({quote_literal(name)}, {quote_literal(value)}, false)"
        for name, value in options.items()
    )


def _array(names: set[str] | frozenset[str] | list[str]) -> str:
    items = ",".join(quote_literal(n) for n in sorted(names))
    return f"ARRAY[{items}]::text[]" if items else "ARRAY[]::text[]"
