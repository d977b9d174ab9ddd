"""Client-to-server slow path: prepared-statement rewrites and session-state checks, per message.

The hot path in ``ClientConn._forward`` only counts requests; it hands a chunk over to
``forward_slow`` from the first message that needs more than counting (a named statement, or a
query that mentions a session-state keyword).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pyproxy.pool import prepared as ps
from pyproxy.pool.params import quote_literal
from pyproxy.pool.session_state import analyze, needs_analysis
from pyproxy.proto import messages as m

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn
    from pyproxy.net.server import ServerConn

_unpack_len = struct.Struct("!I").unpack_from


def forward_slow(client: ClientConn, server: ServerConn, data: bytes, off: int) -> None:
    """Forward ``data[off:]`` message by message; ``data[:off]`` was already counted."""
    st = server.transport
    out: list[bytes] = [data[:off]] if off else []
    n = len(data)
    limit = server.max_packet
    while n - off >= 5:
        t = data[off]
        ln = _unpack_len(data, off + 1)[0]
        end = off + 1 + ln
        if ln < 4 or ln > limit:
            if out:
                st.write(b"".join(out))
            client._bad_length(t, ln)
            return
        if end > n:
            break
        if t == 88:  # Terminate
            if out:
                st.write(b"".join(out))
            client.transport.close()
            return
        _message(client, server, t, data, off, end, out)
        off = end
    if off < n:
        client._tail = data[off:]
    if out:
        st.write(b"".join(out))


def _message(
    client: ClientConn,
    server: ServerConn,
    t: int,
    data: bytes,
    off: int,
    end: int,
    out: list[bytes],
) -> None:
    sts = server.stmts
    track = client.track
    if t == 81:  # Query
        _query(client, server, data, off, end, out)
        return
    if t == 83 or t == 70:  # Sync, FunctionCall
        server.pending += 1
        sts.sent_seg += 1
        if t == 83:
            client.open_ext = False
        out.append(data[off:end])
        return
    if t in (80, 66, 68, 69, 67):
        client.open_ext = True
    if not track:
        out.append(data[off:end])
        return
    body = data[off + 5 : end]
    seg = sts.sent_seg
    if t == 80:  # Parse
        name, after = ps.split_name(body)
        if not name:
            sts.queue.append((ps.FORWARD, seg, None))
            out.append(data[off:end])
            return
        stmt = client.proxy.statements.get(body[after:])
        if name in client.stmts:
            # PostgreSQL's own 42P05: have the server refuse a Parse of a name it holds.
            _ensure(server, stmt, out)
            sts.queue.append((ps.FORWARD, seg, None))
            out.append(stmt.parse_message)
            return
        client.stmts[name] = stmt
        if sts.has(stmt.name):
            sts.queue.append((ps.AS_PARSE, seg, None))
            out.append(ps.close_statement(ps.NOOP_NAME))
        else:
            sts.queue.append((ps.FORWARD, seg, stmt.name))
            out.append(stmt.parse_message)
            _evict(server, sts.add(stmt.name), out)
        return
    if t == 66:  # Bind
        portal, i = ps.split_name(body)
        name, j = ps.split_name(body, i)
        stmt = client.stmts.get(name) if name else None
        if stmt is None:
            out.append(data[off:end])  # unnamed, or unknown: PostgreSQL answers 26000 itself
            return
        _ensure(server, stmt, out)
        out.append(ps.bind_with(portal, stmt.name, body[j:]))
        return
    if t == 68:  # Describe
        if body[:1] == b"S" and len(body) > 2:
            stmt = client.stmts.get(body[1:-1])
            if stmt is not None:
                _ensure(server, stmt, out)
                out.append(ps.describe_statement(stmt.name))
                return
        out.append(data[off:end])
        return
    if t == 67:  # Close: answered by the server for a name it does not have; mapping dropped
        if body[:1] == b"S" and len(body) > 2:
            client.stmts.pop(body[1:-1], None)
        sts.queue.append((ps.FORWARD, seg, None))
        out.append(data[off:end])
        return
    out.append(data[off:end])


def _ensure(server: ServerConn, stmt: ps.Statement, out: list[bytes]) -> None:
    """Prepare ``stmt`` on ``server`` first if it lacks it (the ParseComplete is swallowed)."""
    sts = server.stmts
    if sts.has(stmt.name):
        return
    sts.queue.append((ps.SKIP, sts.sent_seg, stmt.name))
    out.append(stmt.parse_message)
    _evict(server, sts.add(stmt.name), out)


def _evict(server: ServerConn, name: bytes | None, out: list[bytes]) -> None:
    if name is not None:
        server.stmts.queue.append((ps.SKIP, server.stmts.sent_seg, None))
        out.append(ps.close_statement(name))


def _query(
    client: ClientConn, server: ServerConn, data: bytes, off: int, end: int, out: list[bytes]
) -> None:
    server.pending += 1
    server.stmts.sent_seg += 1
    raw = data[off:end]
    if not client.inspect or not needs_analysis(data, off + 5, end):
        out.append(raw)
        return
    sql = data[off + 5 : end - 1].decode("utf-8", "replace")
    result = analyze(sql, server.status != 73, client.proxy.replayable, client.proxy.tracked)
    for target in result.deallocate:
        if target is None or target == "all":
            client.stmts.clear()
            if server.status == 73:
                server.stmts.clear()
        else:
            client.stmts.pop(target.encode(), None)
    for action, name, value in result.replay:
        if action == "set" and value is not None:
            client.replay[name] = value
            server.replayed[name] = value
        elif action == "reset":
            client.replay.pop(name, None)
            server.replayed.pop(name, None)
        else:
            client.replay.clear()
            server.replayed.clear()
    if not result.findings:
        out.append(raw)
        return
    pool = client.pool
    policy = pool.settings.session_state if pool is not None else "allow"
    if policy == "allow":
        out.append(raw)
        return
    first = result.findings[0]
    if policy == "error":
        if pool is not None:
            pool.stats["session_state_errors"] += len(result.findings)
        text = f"{first.statement} is not allowed in {client.mode} pooling mode: {first.why}"
        hint = "Use a session-mode pool for this, or SET LOCAL inside a transaction."
        out.append(m.query(refusal_sql(text, hint)))
        return
    if pool is not None:
        pool.stats["session_state_warnings"] += len(result.findings)
    for f in result.findings:
        client.notice_unsafe(f.statement, f.why)
    out.append(raw)


def refusal_sql(message: str, hint: str) -> str:
    """A statement the server answers with ERROR 0A000 in the right place of the stream."""
    return (
        "DO $pyproxy$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = "
        f"{quote_literal(message)}, HINT = {quote_literal(hint)}; END$pyproxy$"
    )
