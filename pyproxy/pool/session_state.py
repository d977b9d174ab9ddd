"""Session-state safety under transaction pooling: find statements that leak or get lost.

``analyze`` reads a query string and reports (a) statements whose effect outlives the
transaction and so silently breaks when the next transaction runs on another server, and
(b) plain ``SET``/``RESET`` of allow-listed parameters, which pyproxy replays instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyproxy.pool.sqlscan import split_statements

# Cheap pre-filter: only queries containing one of these words are tokenized.
_TRIGGER_WORDS = (
    rb"\b(set|reset|listen|prepare|declare|temp|temporary|pg_advisory_lock|"
    rb"pg_advisory_lock_shared|pg_try_advisory_lock|pg_try_advisory_lock_shared|set_config|"
    rb"begin|start|commit|rollback|end|abort|deallocate|discard)\b"
)
TRIGGER = re.compile(rb"(?i)" + _TRIGGER_WORDS)

_LEADING = (
    b"set",
    b"reset",
    b"listen",
    b"prepare",
    b"declare",
    b"create",
    b"deallocate",
    b"discard",
)
# needs_analysis's rule as one anchored pattern, so that the common query costs one C-level
# match. A query needs a closer look when it begins with a keyword that may leave session state
# behind, ...
_KEYWORD_FIRST = rb"(?:" + rb"|".join(_LEADING) + rb")"
# ... or begins with whitespace, a comment or a parenthesis and mentions a trigger word, ...
_OTHER_FIRST = rb"(?=[^a-z]).*?" + _TRIGGER_WORDS
# ... or calls a function and mentions advisory locks or set_config, ...
_CALLS_LOCK_OR_SET_CONFIG = rb"(?=[^(]*\().*?(?:advisory|set_config)"
# ... or holds more than one statement (something other than blanks, NULs and semicolons after
# the first semicolon) and mentions a trigger word.
_STATEMENTS = rb"(?=[^;]*;[ \t\r\n\x00;]*[^ \t\r\n\x00;]).*?" + _TRIGGER_WORDS
_NEEDS_ANALYSIS = re.compile(
    rb"(?is)" + rb"|".join((_KEYWORD_FIRST, _OTHER_FIRST, _CALLS_LOCK_OR_SET_CONFIG, _STATEMENTS))
)


def needs_analysis(data: bytes, start: int, end: int) -> bool:
    """Cheap pre-check of a Query body ``data[start:end]``: could ``analyze`` find anything?

    Most queries are one statement starting with SELECT/INSERT/UPDATE/BEGIN/... and mention
    neither advisory locks nor set_config: those are answered by one regular-expression match.
    False positives only cost a closer look.
    """
    return _NEEDS_ANALYSIS.match(data, start, end) is not None


_PARSE_CHECKS: dict[bytes, bool] = {}
_PARSE_CHECKS_MAX = 4096


def parse_needs_analysis(data: bytes, start: int, end: int) -> bool:
    """``needs_analysis`` for the query of a Parse, remembered: applications send the same
    parameterized query texts again and again."""
    key = data[start:end]
    found = _PARSE_CHECKS.get(key)
    if found is None:
        found = needs_analysis(key, 0, len(key))
        if len(_PARSE_CHECKS) >= _PARSE_CHECKS_MAX:
            _PARSE_CHECKS.clear()
        _PARSE_CHECKS[key] = found
    return found


SESSION_LOCKS = frozenset(
    {
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
    }
)


@dataclass(frozen=True)
class Finding:
    """One unsafe statement: what it is and why it breaks under transaction pooling."""

    kind: str
    statement: str
    why: str


@dataclass
class Analysis:
    findings: list[Finding]
    replay: list[tuple[str, str, str | None]]  # ("set", name, value) | ("reset", name) | ...
    deallocate: list[str | None]  # names given to SQL DEALLOCATE; None = ALL / DISCARD ALL


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _setting_name(tokens: list[str], start: int) -> tuple[str, int]:
    """A possibly dotted parameter name starting at ``tokens[start]``."""
    name = tokens[start] if start < len(tokens) else ""
    i = start + 1
    while i + 1 < len(tokens) and tokens[i] == ".":
        name += "." + tokens[i + 1]
        i += 2
    return name, i


def _value_text(original: str) -> str:
    """The value of ``SET name = value`` / ``SET name TO value`` from the original text."""
    m = re.match(r"(?is)\s*set\s+(?:session\s+)?[\w.\"]+\s*(?:=|\bto\b)\s*(.*)$", original)
    return m.group(1).strip() if m else ""


def _set_config_is_session(tokens: list[str], at: int) -> bool:
    """``set_config(name, value, false)``: the third argument at the call's top level."""
    if at + 1 >= len(tokens) or tokens[at + 1] != "(":
        return False
    depth = 0
    args: list[list[str]] = [[]]
    for tok in tokens[at + 1 :]:
        if tok == "(":
            depth += 1
            if depth == 1:
                continue
        elif tok == ")":
            depth -= 1
            if depth == 0:
                break
        elif tok == "," and depth == 1:
            args.append([])
            continue
        args[-1].append(tok)
    return len(args) == 3 and args[2] in (["false"], ["off"])


def analyze(
    sql: str, in_transaction: bool, replayable: frozenset[str], tracked: frozenset[str]
) -> Analysis:
    """Classify every statement of ``sql``; ``in_transaction`` is the state before it runs."""
    result = Analysis([], [], [])
    in_tx = in_transaction
    for original, tokens in split_statements(sql):
        head = tokens[0]
        second = tokens[1] if len(tokens) > 1 else ""
        if head in ("begin", "start") and (head == "begin" or second == "transaction"):
            in_tx = True
            continue
        if head in ("commit", "rollback", "end", "abort") and not (
            head == "rollback" and second == "to"
        ):
            in_tx = False
            continue
        if head == "deallocate":
            name_at = 2 if second == "prepare" else 1
            target = tokens[name_at] if len(tokens) > name_at else ""
            result.deallocate.append(None if target == "all" else target)
            continue
        if head == "discard" and second == "all":
            result.deallocate.append(None)
            result.replay.append(("reset_all", "", None))  # DISCARD ALL includes RESET ALL
            continue
        _classify(result, original, tokens, in_tx, replayable, tracked)
    return result


def _classify(
    result: Analysis,
    original: str,
    tokens: list[str],
    in_tx: bool,
    replayable: frozenset[str],
    tracked: frozenset[str],
) -> None:
    head = tokens[0]
    second = tokens[1] if len(tokens) > 1 else ""
    stmt = _short(original)
    if head == "set" and not in_tx:
        if second in ("local", "transaction") or (
            second == "session" and len(tokens) > 2 and tokens[2] == "characteristics"
        ):
            return
        start = 2 if second == "session" else 1
        name, _ = _setting_name(tokens, start)
        if name in tracked:
            return  # reported by the server and re-applied per client already
        if name in replayable:
            result.replay.append(("set", name, _value_text(original)))
            return
        result.findings.append(
            Finding(
                "set",
                stmt,
                "a session SET stays on the server "
                "connection, which other clients reuse, and this client's "
                "next transaction may run elsewhere without it",
            )
        )
        return
    if head == "reset" and not in_tx:
        if second == "all":
            result.replay.append(("reset_all", "", None))
            return
        name, _ = _setting_name(tokens, 1)
        if name in replayable or name in tracked:
            result.replay.append(("reset", name, None))
            return
        result.findings.append(
            Finding(
                "reset",
                stmt,
                "RESET changes the shared server connection, not this client's session",
            )
        )
        return
    if head == "listen":
        result.findings.append(
            Finding(
                "listen",
                stmt,
                "notifications arrive on the server "
                "connection, which is handed to other clients after this "
                "transaction",
            )
        )
    elif head == "prepare" and second != "transaction":
        result.findings.append(
            Finding(
                "prepare",
                stmt,
                "SQL prepared statements live on one "
                "server connection; EXECUTE may run on another (protocol-"
                "level prepared statements work)",
            )
        )
    elif head == "declare" and _has_sequence(tokens, ("with", "hold")):
        result.findings.append(
            Finding(
                "declare_with_hold",
                stmt,
                "a WITH HOLD cursor outlives the transaction on a server other clients reuse",
            )
        )
    elif (
        head == "create"
        and _creates_temp_table(tokens)
        and not _has_sequence(tokens, ("on", "commit", "drop"))
    ):
        result.findings.append(
            Finding(
                "temp_table",
                stmt,
                "a temporary table without ON COMMIT "
                "DROP stays on the server connection; later transactions "
                "may not see it, and other clients may",
            )
        )
    for i, tok in enumerate(tokens):
        if tok in SESSION_LOCKS and i + 1 < len(tokens) and tokens[i + 1] == "(":
            result.findings.append(
                Finding(
                    "advisory_lock",
                    stmt,
                    "a session advisory lock is "
                    "held by the server connection, not this client, and "
                    "outlives the transaction",
                )
            )
            break
        if tok == "set_config" and _set_config_is_session(tokens, i) and not in_tx:
            result.findings.append(
                Finding(
                    "set_config",
                    stmt,
                    "set_config(..., false) changes the shared server connection's session",
                )
            )
            break


def _has_sequence(tokens: list[str], seq: tuple[str, ...]) -> bool:
    k = len(seq)
    return any(tuple(tokens[i : i + k]) == seq for i in range(len(tokens) - k + 1))


def _creates_temp_table(tokens: list[str]) -> bool:
    i = 1
    if i < len(tokens) and tokens[i] in ("global", "local"):
        i += 1
    return (
        i + 1 < len(tokens)
        and tokens[i] in ("temp", "temporary")
        and tokens[i + 1] in ("table", "sequence", "view")
    )
