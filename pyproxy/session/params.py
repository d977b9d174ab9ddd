"""Tracked session parameters: per-client values, comparison with a server, the aligning SET."""

from __future__ import annotations

import re

from pyproxy.errors import PROTOCOL_VIOLATION, PgError

# Parameters PostgreSQL reports with ParameterStatus that every client keeps its own value of.
BASE_TRACKED = (
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "standard_conforming_strings",
    "application_name",
)

# Startup keys every client may send that are not session parameters to track.
PROTOCOL_KEYS = ("user", "database", "options", "replication")


def tracked_set(extra: tuple[str, ...]) -> frozenset[str]:
    return frozenset(BASE_TRACKED) | frozenset(e.lower() for e in extra)


def canonical(name: str, value: str) -> str:
    """A comparison form: equal spellings of one setting compare equal."""
    v = value.strip().lower()
    if name == "client_encoding":
        # PostgreSQL ignores every non-alphanumeric character of an encoding name
        # (asyncpg, for one, sends client_encoding as "'utf-8'").
        v = "".join(c for c in v if c.isalnum())
        if v == "unicode":
            v = "utf8"
    return v


def differences(
    client: dict[str, str], server: dict[str, str], tracked: frozenset[str]
) -> list[tuple[str, str]]:
    """(name, client value) for each tracked parameter the server must change."""
    out = []
    for name in tracked:
        want = client.get(name)
        if want is None:
            continue
        have = server.get(name)
        if have is None or canonical(name, have) != canonical(name, want):
            out.append((name, want))
    return out


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def set_statements(items: list[tuple[str, str]]) -> str:
    """One simple query that applies every item: SET name TO 'value';..."""
    return ";".join(f"SET {name} TO {quote_literal(value)}" for name, value in items)


_OPTION_RE = re.compile(r"(?:-c\s*|--)([A-Za-z_][A-Za-z0-9_.]*)=((?:\\.|[^\s\\])*)")


def parse_options(options: str) -> dict[str, str]:
    """Decode a startup ``options`` value: ``-c name=value`` and ``--name=value`` items.

    Backslash escapes a space or a backslash, as libpq documents. Anything else is refused.
    """
    out: dict[str, str] = {}
    pos = 0
    text = options.strip()
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        m = _OPTION_RE.match(text, pos)
        if not m:
            raise PgError(
                PROTOCOL_VIOLATION,
                "unsupported options startup parameter: only '-c name=value' and "
                "'--name=value' are allowed",
                fatal=True,
            )
        name = m.group(1).lower().replace("-", "_")
        out[name] = re.sub(r"\\(.)", r"\1", m.group(2))
        pos = m.end()
    return out
