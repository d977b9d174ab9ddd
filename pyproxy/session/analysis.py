"""Session-state analysis under transaction pooling: what a query may do to its session.

``analyze`` reads a query string and reports (a) statements whose effect outlives the
transaction and cannot be replayed on another server (LISTEN, SQL PREPARE, WITH HOLD cursors,
temporary tables, session advisory locks, SET ROLE), (b) whether it may change session settings,
which pyproxy reads back and replays on every server its client gets, and (c) whether it may undo
session state, which lets a client pinned to its server go.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pyproxy.session.sqlscan import split_statements

# Cheap pre-filter: only queries containing one of these words are tokenized.
_TRIGGER_WORDS = (
    rb"\b(set|reset|listen|unlisten|prepare|declare|close|drop|temp|temporary|pg_advisory_lock|"
    rb"pg_advisory_lock_shared|pg_try_advisory_lock|pg_try_advisory_lock_shared|set_config|"
    rb"begin|start|commit|rollback|end|abort|deallocate|discard)\b"
)
TRIGGER = re.compile(rb"(?i)" + _TRIGGER_WORDS)

_LEADING = (
    b"set",
    b"reset",
    b"listen",
    b"unlisten",
    b"prepare",
    b"declare",
    b"close",
    b"create",
    b"drop",
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
# Statement mode also looks at a query that begins with BEGIN or START (a transaction block).
_NEEDS_ANALYSIS_STATEMENT_MODE = re.compile(
    rb"(?is)(?:begin|start)|" + _NEEDS_ANALYSIS.pattern[len(rb"(?is)") :]
)


def needs_analysis(data: bytes, start: int, end: int) -> bool:
    """Cheap pre-check of a Query body ``data[start:end]``: could ``analyze`` find anything?

    Most queries are one statement starting with SELECT/INSERT/UPDATE/BEGIN/... and mention
    neither advisory locks nor set_config: those are answered by one regular-expression match.
    False positives only cost a closer look.
    """
    return _NEEDS_ANALYSIS.match(data, start, end) is not None


def needs_analysis_statement_mode(data: bytes, start: int, end: int) -> bool:
    """``needs_analysis`` for statement mode, where a transaction block is refused too."""
    return _NEEDS_ANALYSIS_STATEMENT_MODE.match(data, start, end) is not None


_PARSE_CHECKS_MAX = 4096


class _Remembered:
    """A pre-check for the query of a Parse, remembered: applications send the same
    parameterized query texts again and again."""

    __slots__ = ("check", "found")

    def __init__(self, check: Callable[[bytes, int, int], bool]) -> None:
        self.check = check
        self.found: dict[bytes, bool] = {}

    def __call__(self, data: bytes, start: int, end: int) -> bool:
        key = data[start:end]
        found = self.found.get(key)
        if found is None:
            found = self.check(key, 0, len(key))
            if len(self.found) >= _PARSE_CHECKS_MAX:
                self.found.clear()
            self.found[key] = found
        return found


parse_needs_analysis = _Remembered(needs_analysis)
parse_needs_analysis_statement_mode = _Remembered(needs_analysis_statement_mode)


SESSION_LOCKS = frozenset(
    {
        "pg_advisory_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared",
    }
)
UNLOCKS = frozenset({"pg_advisory_unlock", "pg_advisory_unlock_shared", "pg_advisory_unlock_all"})
ROLE_PARAMETERS = frozenset({"role", "session_authorization"})
# SET forms that are not "SET parameter ...": the parameter they set.
_SET_ALIASES = {"schema": "search_path", "names": "client_encoding", "time": "timezone"}


@dataclass(frozen=True)
class Finding:
    """A statement that leaves state behind which cannot be replayed on another server: what it
    is, why it breaks under transaction pooling, and what to do instead."""

    kind: str
    statement: str
    why: str
    hint: str


@dataclass
class Analysis:
    """What a query may do to its session.

    ``settings``: it may change session settings (SET, RESET, set_config(..., false), DISCARD
    ALL, inside a transaction or not), so they are read back from the server when the
    transaction is over; ``custom`` names the custom (dotted) parameters it may set, which the
    server does not list. ``undo``: it may remove session state (UNLISTEN, DEALLOCATE, CLOSE,
    DISCARD, an advisory unlock, DROP, RESET ROLE), so a client pinned to its server is checked
    again. ``deallocate``: names given to SQL DEALLOCATE (None = ALL or DISCARD ALL).
    """

    findings: list[Finding] = field(default_factory=list)
    settings: bool = False
    custom: set[str] = field(default_factory=set)
    undo: bool = False
    deallocate: list[str | None] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.findings or self.settings or self.undo or self.deallocate)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _setting_name(tokens: list[str], start: int) -> str:
    """A possibly dotted parameter name starting at ``tokens[start]``."""
    name = tokens[start] if start < len(tokens) else ""
    i = start + 1
    while i + 1 < len(tokens) and tokens[i] == ".":
        name += "." + tokens[i + 1]
        i += 2
    return name


def _call_arguments(tokens: list[str], at: int) -> list[list[str]] | None:
    """The top-level arguments of the call whose name is ``tokens[at]``, as token lists."""
    if at + 1 >= len(tokens) or tokens[at + 1] != "(":
        return None
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
    return args


_LITERAL = re.compile(r"(?is)\bset_config\s*\(\s*'((?:[^']|'')*)'")


def analyze(
    sql: str,
    in_transaction: bool,
    excluded: frozenset[str] = frozenset(),
    tracked: frozenset[str] = frozenset(),
) -> Analysis:
    """Classify every statement of ``sql``; ``in_transaction`` is the state before it runs.

    ``excluded``: parameters never replayed (a SET of one is a finding); ``tracked``: parameters
    the server reports with ParameterStatus, which follow their client without a read-back.
    """
    result = Analysis()
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
        _classify(result, original, tokens, in_tx, excluded, tracked)
    return result


def _classify(
    result: Analysis,
    original: str,
    tokens: list[str],
    in_tx: bool,
    excluded: frozenset[str],
    tracked: frozenset[str],
) -> None:
    head = tokens[0]
    second = tokens[1] if len(tokens) > 1 else ""
    stmt = _short(original)
    if head == "set":
        _set(result, stmt, tokens, excluded, tracked)
    elif head == "reset":
        if second == "all":
            result.settings = True
        elif second in ROLE_PARAMETERS or second == "session":
            result.undo = True
        else:
            _touch(result, _setting_name(tokens, 1), stmt, excluded, tracked, "reset")
    elif head == "discard":
        result.undo = True
        if second == "all":
            result.settings = True
            result.deallocate.append(None)
    elif head == "deallocate":
        name_at = 2 if second == "prepare" else 1
        target = tokens[name_at] if len(tokens) > name_at else ""
        result.deallocate.append(None if target == "all" else target)
        result.undo = True
    elif head in ("unlisten", "close", "drop"):
        result.undo = True
    elif head == "listen":
        result.findings.append(_finding("listen", stmt))
    elif head == "prepare" and second != "transaction":
        result.findings.append(_finding("prepare", stmt))
    elif head == "declare" and _has_sequence(tokens, ("with", "hold")):
        result.findings.append(_finding("declare_with_hold", stmt))
    elif (
        head == "create"
        and _creates_temp_table(tokens)
        and not _has_sequence(tokens, ("on", "commit", "drop"))
    ):
        result.findings.append(_finding("temp_table", stmt))
    _calls(result, original, tokens, stmt, excluded, tracked)


def _set(
    result: Analysis,
    stmt: str,
    tokens: list[str],
    excluded: frozenset[str],
    tracked: frozenset[str],
) -> None:
    second = tokens[1] if len(tokens) > 1 else ""
    if second in ("local", "transaction", "constraints"):
        return  # lasts for the transaction only
    if second == "session":
        third = tokens[2] if len(tokens) > 2 else ""
        if third == "characteristics":  # the default_transaction_* parameters
            result.settings = True
            return
        if third == "authorization":
            _role(result, stmt, tokens[3:4] == ["default"])
            return
        name = _setting_name(tokens, 2)
    else:
        name = _setting_name(tokens, 1)
    if name == "role":
        value = tokens[2:3] if tokens[2:3] not in (["="], ["to"]) else tokens[3:4]
        _role(result, stmt, value == ["none"] or value == ["default"])
        return
    name = _SET_ALIASES.get(name, name)
    _touch(result, name, stmt, excluded, tracked, "set")


def _role(result: Analysis, stmt: str, back_to_login_user: bool) -> None:
    if back_to_login_user:
        result.undo = True
    else:
        result.findings.append(_finding("role", stmt))


def _touch(
    result: Analysis,
    name: str,
    stmt: str,
    excluded: frozenset[str],
    tracked: frozenset[str],
    kind: str,
) -> None:
    """A SET or RESET of ``name``: replayed, unless the configuration excludes it."""
    if name in excluded:
        result.findings.append(_finding("excluded", stmt))
        return
    if name in tracked:
        return  # reported by the server with ParameterStatus and re-applied per client already
    if name in ROLE_PARAMETERS:
        _role(result, stmt, kind == "reset")
        return
    result.settings = True
    if "." in name:
        result.custom.add(name)


def _calls(
    result: Analysis,
    original: str,
    tokens: list[str],
    stmt: str,
    excluded: frozenset[str],
    tracked: frozenset[str],
) -> None:
    """Function calls that change the session: advisory locks, set_config(..., false)."""
    locked = False
    literals = iter(_LITERAL.findall(original))
    for i, tok in enumerate(tokens):
        if i + 1 >= len(tokens) or tokens[i + 1] != "(":
            continue
        if tok in SESSION_LOCKS and not locked:
            result.findings.append(_finding("advisory_lock", stmt))
            locked = True
        elif tok in UNLOCKS:
            result.undo = True
        elif tok == "set_config":
            literal = next(literals, None)
            args = _call_arguments(tokens, i) or []
            if len(args) >= 3 and args[2] in (["true"], ["on"]):
                continue  # set_config(..., true) lasts for the transaction
            if literal is None:  # a name given by an expression: read back what we know
                result.settings = True
                continue
            _touch(result, literal.replace("''", "'").lower(), stmt, excluded, tracked, "set")


def _finding(kind: str, stmt: str) -> Finding:
    why, hint = _WHY[kind]
    return Finding(kind, stmt, why, hint)


_PIN = 'or session_state = "pin", which keeps this client\'s server until it disconnects'
_WHY = {
    "listen": (
        "notifications arrive on the server connection, which is handed to other clients "
        "after this transaction",
        f"use a session-mode pool, {_PIN} or runs UNLISTEN *",
    ),
    "prepare": (
        "SQL prepared statements live on one server connection; EXECUTE may run on another",
        "use protocol-level prepared statements (your driver's, which work in every pool "
        f"mode), a session-mode pool, {_PIN} or runs DEALLOCATE",
    ),
    "declare_with_hold": (
        "a WITH HOLD cursor outlives the transaction on a server other clients reuse",
        f"use a cursor without WITH HOLD inside a transaction, a session-mode pool, {_PIN} "
        "or runs CLOSE",
    ),
    "temp_table": (
        "a temporary table without ON COMMIT DROP stays on the server connection; later "
        "transactions may not see it, and other clients may",
        f"add ON COMMIT DROP, use a session-mode pool, {_PIN} or runs DISCARD TEMP",
    ),
    "advisory_lock": (
        "a session advisory lock is held by the server connection, not this client, and "
        "outlives the transaction",
        f"use pg_advisory_xact_lock, a session-mode pool, {_PIN} or unlocks",
    ),
    "role": (
        "the role would be replayed on other server connections without PostgreSQL checking "
        "it again",
        f"use SET LOCAL ROLE inside a transaction, a session-mode pool, {_PIN} or runs RESET ROLE",
    ),
    "excluded": (
        "this parameter is in replay_exclude, so it is not re-applied when this client's next "
        "transaction runs on another server connection",
        "use SET LOCAL inside a transaction, or a session-mode pool",
    ),
}


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
