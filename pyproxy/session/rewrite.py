"""Client-to-server slow path: prepared-statement rewrites and session-state checks, per message.

The hot path in ``ClientSide.data_received`` only counts requests; it hands a chunk over to
``forward_slow`` from the first message that needs more than counting (a named statement, or a
query that mentions a session-state keyword).

Session-state checks apply to simple queries when they are sent, to unnamed (or untracked)
extended-protocol statements at their Parse, and to tracked named statements at each Bind, which
is when they run: a statement prepared once and executed often is checked every time.
"""

from __future__ import annotations

import struct

from pyproxy.errors import ACTIVE_SQL_TRANSACTION, FEATURE_NOT_SUPPORTED
from pyproxy.proto import messages as m
from pyproxy.proto.codes import BIND, CLOSE, DESCRIBE, IDLE, IN_FAILED_TRANSACTION, PARSE, QUERY
from pyproxy.session import prepared as ps
from pyproxy.session.aborted_block import starts_block
from pyproxy.session.analysis import Analysis, analyze, needs_analysis
from pyproxy.session.params import quote_literal
from pyproxy.session.peers import ClientSide, ServerSide
from pyproxy.session.sqlscan import split_statements

STATEMENT_BLOCK = (
    "transaction blocks are not allowed in statement pooling mode: use a pool in session or "
    "transaction mode"
)
STATEMENT_HINT = (
    "this transaction is aborted: every statement fails until ROLLBACK (or COMMIT), as after "
    "an error; pg_dump and pg_restore need a session or transaction pool"
)
# What rewrite_message raises for a malformed message; the caller passes such a message on as
# it came, and PostgreSQL answers it with its own error.
MALFORMED = (ValueError, IndexError, struct.error)


def rewrite_message(
    client: ClientSide,
    server: ServerSide,
    t: int,
    data: bytes,
    off: int,
    end: int,
    out: list[bytes],
) -> None:
    """One message that may need a rewrite or a check, counted and appended to ``out``: a
    Query or Parse whose text may touch session state, a message naming a prepared statement.
    A malformed one raises ValueError, IndexError or struct.error (see MALFORMED)."""
    sts = server.stmts
    if t == QUERY:
        client.copy_syncs = 0
        _query(client, server, data, off, end, out)
        return
    if t in (PARSE, BIND, DESCRIBE, CLOSE):
        client.open_ext = True  # an error in one makes PostgreSQL skip messages up to a Sync
    if t == BIND and client.track:
        _bind(client, server, data, off, end, out)
        return
    if t == PARSE:
        _parse(client, server, data[off + 5 : end], data[off:end], out)
        return
    if not client.track:
        out.append(data[off:end])
        return
    body = data[off + 5 : end]
    if t == DESCRIBE:
        if body[:1] == b"S" and len(body) > 2:
            name = body[1:-1]
            stmt = client.stmts.get(name)
            if stmt is not None:
                _ensure(server, stmt, out)
                out.append(m.describe_statement(stmt.name))
            else:  # unknown: PostgreSQL answers 26000 itself
                out.append(m.describe_statement(ps.unknown_name(name)))
            return
        out.append(data[off:end])
    elif t == CLOSE:
        if body[:1] == b"S" and len(body) > 2:
            # Answered by a Close of a name no server has; the shared statement stays.
            name = body[1:-1]
            previous = client.stmts.pop(name, None)
            undo = (client.stmts, name, previous) if previous is not None else None
            sts.queue.append((ps.FORWARD, sts.sent_seg, None, undo, None))
            out.append(m.close_statement(ps.NOOP_NAME))
            return
        sts.queue.append((ps.FORWARD, sts.sent_seg, None))
        out.append(data[off:end])
    else:
        out.append(data[off:end])


def _parse(
    client: ClientSide, server: ServerSide, body: bytes, raw: bytes, out: list[bytes]
) -> None:
    sts = server.stmts
    seg = sts.sent_seg
    name, after = m.split_name(body)
    rest = body[after:]
    if client.statement_mode and starts_block(
        rest[: rest.find(b"\x00")].decode("utf-8", "replace")
    ):
        # BEGIN inside an extended-protocol batch already under way: prepared as a refusal.
        # A named one becomes a pyproxy-wide statement like any other, so the client's name
        # never stays on a server other clients share.
        query = refusal_sql(STATEMENT_BLOCK, STATEMENT_HINT, ACTIVE_SQL_TRANSACTION).encode()
        rest = m.parse_rest_with_query(rest, query)
        if not name or not client.track:
            if client.track:
                sts.queue.append((ps.FORWARD, seg, None))
            out.append(m.frame(b"P", name + b"\x00" + rest))
            return
        _parse_named(client, server, name, rest, out)
        return
    if not name or not client.track:
        # Runs where it is sent: check it now; a refused one is prepared as the refusal.
        result = _inspect(client, server, rest)
        if result is not None:
            refusal = _decide(client, server, result)
            if refusal is not None:
                query = refusal_sql(*refusal).encode()
                raw = m.frame(b"P", name + b"\x00" + m.parse_rest_with_query(rest, query))
            else:
                _apply(client, server, result)
        if client.track:
            sts.queue.append((ps.FORWARD, seg, None))
        out.append(raw)
        return
    _parse_named(client, server, name, rest, out)


def _parse_named(
    client: ClientSide, server: ServerSide, name: bytes, rest: bytes, out: list[bytes]
) -> None:
    """A client's named statement: prepared on the server under its pyproxy-wide name."""
    sts = server.stmts
    seg = sts.sent_seg
    stmt = client.proxy.statements.get(rest)
    if name in client.stmts:
        # PostgreSQL's own 42P05: have the server refuse a Parse of a name it holds.
        _ensure(server, stmt, out)
        sts.queue.append((ps.FORWARD, sts.sent_seg, None))
        out.append(stmt.parse_message)
        return
    client.stmts[name] = stmt
    undo = (client.stmts, name, None)
    if sts.has(stmt.name):
        sts.queue.append((ps.AS_PARSE, seg, None, undo, None))
        out.append(m.close_statement(ps.NOOP_NAME))
        return
    _close_unsure(server, stmt.name, out)
    sts.queue.append((ps.FORWARD, seg, stmt.name, undo, None))
    out.append(stmt.parse_message)
    _evict(server, sts.add(stmt.name), out)


def _bind(
    client: ClientSide, server: ServerSide, data: bytes, off: int, end: int, out: list[bytes]
) -> None:
    """The Bind ``data[off:end]``: a named statement's gets the server-side name."""
    portal_end = data.index(0, off + 5, end)
    name_end = data.index(0, portal_end + 1, end)
    if name_end == portal_end + 1:  # the unnamed statement
        out.append(data[off:end])
        return
    portal = data[off + 5 : portal_end]
    name = data[portal_end + 1 : name_end]
    rest = data[name_end + 1 : end]
    stmt = client.stmts.get(name)
    if stmt is None:  # unknown: PostgreSQL answers 26000 itself
        out.append(m.bind_with(portal, ps.unknown_name(name), rest))
        return
    sts = server.stmts
    if stmt.retired and stmt.name not in sts.prepared:
        # The result type changed since this client prepared it: PostgreSQL's own answer.
        _bind_refusal(
            client, server, portal, raise_sql(FEATURE_NOT_SUPPORTED, ps.STALE_PLAN.decode()), out
        )
        return
    result = _statement_analysis(client, server, stmt)
    if result is not None:
        refusal = _decide(client, server, result)
        if refusal is not None:
            _bind_refusal(client, server, portal, refusal_sql(*refusal), out)
            return
    _ensure(server, stmt, out)
    out.append(m.bind_with(portal, stmt.name, rest))
    sts.note_bind(server.link_gen, stmt)
    if result is not None:
        _apply(client, server, result)


def _bind_refusal(
    client: ClientSide, server: ServerSide, portal: bytes, sql: str, out: list[bytes]
) -> None:
    """Bind ``portal`` to a statement whose execution raises the error in ``sql``."""
    stmt = client.proxy.statements.get(sql.encode() + b"\x00\x00\x00")
    _ensure(server, stmt, out)
    out.append(m.bind_no_parameters(portal, stmt.name))


def _ensure(server: ServerSide, stmt: ps.Statement, out: list[bytes]) -> None:
    """Prepare ``stmt`` on ``server`` first if it lacks it (the ParseComplete is swallowed)."""
    sts = server.stmts
    if sts.has(stmt.name):
        return
    _close_unsure(server, stmt.name, out)
    sts.queue.append((ps.SKIP, sts.sent_seg, stmt.name))
    out.append(stmt.parse_message)
    _evict(server, sts.add(stmt.name), out)


def _close_unsure(server: ServerSide, name: bytes, out: list[bytes]) -> None:
    """The server may still hold an old ``name``: close it before preparing it again."""
    sts = server.stmts
    if name in sts.unsure:
        sts.unsure.discard(name)
        sts.queue.append((ps.SKIP, sts.sent_seg, None, None, name))
        out.append(m.close_statement(name))


def _evict(server: ServerSide, name: bytes | None, out: list[bytes]) -> None:
    if name is not None:
        sts = server.stmts
        sts.queue.append((ps.SKIP, sts.sent_seg, None, None, name))
        out.append(m.close_statement(name))


# ---- session state ---------------------------------------------------------------------------


def _inspect(client: ClientSide, server: ServerSide, rest: bytes) -> Analysis | None:
    """The analysis of a Parse's query text, or None when it cannot touch session state."""
    if not client.inspect:
        return None
    end = rest.find(b"\x00")
    if not needs_analysis(rest, 0, end):
        return None
    sql = rest[:end].decode("utf-8", "replace")
    return _relevant(
        analyze(sql, server.status != IDLE, client.proxy.excluded, client.proxy.tracked)
    )


def _statement_analysis(
    client: ClientSide, server: ServerSide, stmt: ps.Statement
) -> Analysis | None:
    """A named statement's analysis, computed once per transaction state and cached on it."""
    if not client.inspect:
        return None
    cached = stmt.analyses
    if cached is None:
        if not needs_analysis(stmt.query, 0, len(stmt.query)):
            stmt.analyses = [None, None]
            stmt.plain = True
            return None
        sql = stmt.query.decode("utf-8", "replace")
        excluded, tracked = client.proxy.excluded, client.proxy.tracked
        cached = stmt.analyses = [
            _relevant(analyze(sql, False, excluded, tracked)),
            _relevant(analyze(sql, True, excluded, tracked)),
        ]
    return cached[server.status != IDLE]


def _relevant(result: Analysis) -> Analysis | None:
    return result if result else None


def _decide(client: ClientSide, server: ServerSide, result: Analysis) -> tuple[str, str] | None:
    """Apply the pool's policy to the findings: pin, warn (and count), or return a refusal
    (message, hint).

    A statement that is not refused has its effects recorded (settings to read back, pins to
    check, deallocations) by the caller, after the message that runs it. SET ROLE and SET
    SESSION AUTHORIZATION are never replayed silently: refused unless the pool pins.
    """
    if not result.findings:
        return None
    pool = client.pool
    policy = pool.session_policy if pool is not None else "allow"
    first = result.findings[0]
    role = next((f for f in result.findings if f.kind == "role"), None)
    if policy == "pin":
        client.check_state = True  # pinned at the end of the transaction if the state stays
        return None
    if policy == "error" or role is not None:
        refused = role or first
        if pool is not None:
            pool.stats["session_state_errors"] += len(result.findings)
        return (
            f"{refused.statement} is not allowed in {client.mode} pooling mode: {refused.why}",
            refused.hint,
        )
    if policy == "allow":
        return None
    if pool is not None:
        pool.stats["session_state_warnings"] += len(result.findings)
    for f in result.findings:
        client.notice_unsafe(f.statement, f.why, f.hint)
    return None


def _apply(client: ClientSide, server: ServerSide, result: Analysis) -> None:
    """Record what a statement that runs does to the client's session: settings to read back
    at the end of the transaction, a pin to check again, deallocations."""
    for target in result.deallocate:
        if target is None or target == "all":
            client.stmts.clear()
            server.stmts.forget_all()
        else:
            client.stmts.pop(target.encode(), None)
    if result.settings:
        client.check_state = True
        client.custom |= result.custom
    if result.undo and client.pinned:
        client.check_state = True


def _query(
    client: ClientSide, server: ServerSide, data: bytes, off: int, end: int, out: list[bytes]
) -> None:
    raw = data[off:end]
    if client.inspect and needs_analysis(data, off + 5, end):
        sql = data[off + 5 : end - 1].decode("utf-8", "replace")
        result = analyze(sql, server.status != IDLE, client.proxy.excluded, client.proxy.tracked)
        refusal = _decide(client, server, result)
        if refusal is not None:
            raw = m.query(refusal_sql(*refusal))
        elif client.track and _deallocate_client_statement(client, server, sql, result, out):
            raw = m.query(f"DEALLOCATE {_DEALLOCATE_NAME}")
        else:
            _apply(client, server, result)
    server.pending += 1
    server.stmts.sent_seg += 1
    out.append(raw)


_DEALLOCATE_NAME = "pyproxy_deallocate"


def _deallocate_client_statement(
    client: ClientSide, server: ServerSide, sql: str, result: Analysis, out: list[bytes]
) -> bool:
    """SQL ``DEALLOCATE name`` of a protocol-level statement (PHP PDO does this).

    The server only knows the shared name, so the client's statement is dropped here and the
    server deallocates a throwaway statement instead: the client gets PostgreSQL's own
    ``DEALLOCATE`` reply. Only done when nothing else is in flight, so that the throwaway Parse
    cannot meet an aborted transaction.
    """
    target = result.deallocate[0] if len(result.deallocate) == 1 else None
    if target is None or target == "all" or result.findings or result.settings:
        return False
    name = target.encode()
    if (
        name not in client.stmts
        or server.pending
        or client.open_ext
        or server.status == IN_FAILED_TRANSACTION
    ):
        return False
    if len(split_statements(sql)) != 1:
        return False
    client.stmts.pop(name)
    sts = server.stmts
    throwaway = _DEALLOCATE_NAME.encode()
    sts.queue.append((ps.SKIP, sts.sent_seg, None))
    sts.queue.append((ps.SKIP, sts.sent_seg, None))
    out.append(m.close_statement(throwaway))
    out.append(m.frame(b"P", throwaway + b"\x00SELECT 1\x00\x00\x00"))
    return True


def raise_sql(sqlstate: str, message: str, hint: str | None = None) -> str:
    """A statement whose execution raises ERROR ``sqlstate`` with ``message`` (and ``hint``)."""
    extra = f", HINT = {quote_literal(hint)}" if hint else ""
    return (
        f"DO $pyproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '{sqlstate}', MESSAGE = "
        f"{quote_literal(message)}{extra}; END$pyproxy$"
    )


def refusal_sql(message: str, hint: str, sqlstate: str = FEATURE_NOT_SUPPORTED) -> str:
    """A statement the server answers with ERROR ``sqlstate`` (0A000 by default) in the right
    place of the stream."""
    return raise_sql(sqlstate, message, hint)
