"""Request and reply accounting (sans-IO): what a server owes its client, message by message.

Requests (``forward_request``): every Query, Sync and FunctionCall is answered by one
ReadyForQuery; Syncs sent during a COPY IN the server announced are void; an extended-protocol
batch stays open until its Sync (an error in any of its messages makes PostgreSQL skip to the
Sync). Messages that need more than counting go to ``pyproxy.session.rewrite``; a message type
no frontend may send, an impossible length, a Terminate or (statement mode) a transaction block
stop the walk with an outcome for the shell.

Replies (``relay_reply``): each ReadyForQuery settles one expected answer; ParameterStatus,
ParseComplete/CloseComplete, ErrorResponse and CopyInResponse update the link; the ReadyForQuery
that ends the link (every request answered, the pool mode says so) stops the walk.
"""

from __future__ import annotations

from typing import Any

from pyproxy.proto import messages as m
from pyproxy.proto.codes import (
    BIND,
    CLOSE,
    CLOSE_COMPLETE,
    COPY_DONE,
    COPY_FAIL,
    COPY_IN_RESPONSE,
    DESCRIBE,
    ERROR_RESPONSE,
    EXECUTE,
    FATAL_SEVERITIES,
    FLUSH,
    FRONTEND_TYPES,
    FUNCTION_CALL,
    IDLE,
    PARAMETER_STATUS,
    PARSE,
    PARSE_COMPLETE,
    QUERY,
    READY_FOR_QUERY,
    STATEMENT,
    SYNC,
    TERMINATE,
)
from pyproxy.proto.framing import length_at
from pyproxy.session.aborted_block import opens_block
from pyproxy.session.peers import ClientSide, ServerSide
from pyproxy.session.prepared import AS_PARSE
from pyproxy.session.rewrite import MALFORMED, rewrite_message
from pyproxy.session.shapes import LEARN_EVERY, learn_bind, learn_reply, learn_request

# What stopped ``forward_request``.
FORWARDED, TERMINATED, VIOLATION, BAD_LENGTH, BLOCK = range(5)
# What stopped ``relay_reply``.
RELAYED, LINK_ENDS, FATAL_WHILE_KEPT = range(3)


def forward_request(
    client: ClientSide, server: ServerSide, data: bytes
) -> tuple[list[bytes], int, int, int]:
    """Count and rewrite the whole messages of ``data`` for ``server``.

    Returns (bytes to send, where the walk stopped, outcome, detail): FORWARDED stops at a cut
    message (or the end); TERMINATED, VIOLATION (detail: the type), BAD_LENGTH (detail: the
    length) and BLOCK (statement mode: a transaction block opens there) stop at that message.
    Nothing is sent of a walk that ends in VIOLATION or BAD_LENGTH.
    """
    out: list[bytes] = []
    run = 0  # start of the bytes passed on unchanged, not yet in ``out``
    off = 0
    n = len(data)
    limit = server.max_packet
    sts = server.stmts
    start_seg = sts.sent_seg
    queued = len(sts.queue)
    track = client.track
    inspect = client.inspect
    bind_at = -1  # where the request's only Bind starts (-2: more than one)
    executes = False
    odd = False  # a message whose effect depends on earlier state: no shape learnt
    renamed = -1  # the end of a first message that is a Bind of a named statement, renamed
    kind = 0
    while n - off >= 5:
        kind = data[off]
        ln = length_at(data, off)[0]
        end = off + 1 + ln
        if ln < 4 or ln > limit:
            return [], off, BAD_LENGTH, ln
        if end > n:
            break
        if kind not in FRONTEND_TYPES:
            return [], off, VIOLATION, kind
        if kind == TERMINATE or (
            client.statement_mode
            and (kind == QUERY or (kind == PARSE and not client.open_ext))
            and _opens_block(client, data, kind, off, end)
        ):
            if off > run:
                out.append(data[run:off])
            return out, off, TERMINATED if kind == TERMINATE else BLOCK, 0
        if _counted(client, server, kind, data, off, end, track, inspect):
            if kind == BIND:
                bind_at = off if bind_at == -1 else -2
            elif kind == EXECUTE:
                executes = True
            elif kind == QUERY:
                odd = True
        else:
            if off > run:
                out.append(data[run:off])
            try:
                rewrite_message(client, server, kind, data, off, end, out)
            except MALFORMED:
                out.append(data[off:end])  # PostgreSQL answers it with its own error
            if off == 0 and kind == BIND and len(sts.queue) == queued:
                renamed = end  # the first message, renamed with nothing prepared for it
            else:
                odd = True
            run = end
        off = end
    if off > run:
        out.append(data[run:off])
    if off == n and kind == SYNC and executes and not odd:
        misses = client.shape_misses
        client.shape_misses = misses + 1
        if not misses % LEARN_EVERY:
            if renamed >= 0:
                _learn_bind(client, server, data, renamed, start_seg)
            elif bind_at >= 0:
                entries = [e[1] for e in list(sts.queue)[queued:]]
                client.shape = learn_request(
                    data, bind_at, start_seg, sts.sent_seg, entries, client.copy_syncs
                )
    return out, off, FORWARDED, 0


def _learn_bind(
    client: ClientSide, server: ServerSide, data: bytes, bind_end: int, start_seg: int
) -> None:
    """Remember a request that began with a plain rename of a named statement's Bind."""
    name_end = data.find(0, 6, bind_end)
    stmt = client.stmts.get(data[6:name_end]) if data[5] == 0 and name_end > 6 else None
    if stmt is not None and stmt.plain and not stmt.retired and stmt.name in server.stmts.prepared:
        syncs = server.stmts.sent_seg - start_seg
        client.bind_shape = learn_bind(data, stmt, bind_end, syncs, client.copy_syncs)


def _opens_block(client: ClientSide, data: bytes, kind: int, off: int, end: int) -> bool:
    """Statement mode: does the Query or Parse at ``off`` open a transaction block? The
    pre-check reads the query's text (after a Parse's statement name), then the closer look."""
    if kind == QUERY:
        seen = client.needs(data, off + 5, end)
    else:
        name_end = data.find(0, off + 5, end)
        seen = name_end >= 0 and client.parse_needs(data, name_end + 1, end)
    return seen and opens_block(data, off)


def _counted(
    client: ClientSide,
    server: ServerSide,
    kind: int,
    data: bytes,
    off: int,
    end: int,
    track: bool,
    inspect: bool,
) -> bool:
    """Count a message that needs nothing more; False when it needs ``rewrite_message``."""
    sts = server.stmts
    if kind == SYNC:
        server.pending += 1
        sts.sent_seg += 1
        client.open_ext = False
        client.copy_syncs += 1
    elif kind == EXECUTE:
        client.open_ext = True
        client.copy_syncs = 0
    elif kind == BIND:
        # Unnamed portal and statement pass; a named statement is renamed when tracking.
        if track and (end < off + 7 or data[off + 5] or data[off + 6]):
            portal_end = data.find(0, off + 5, end)
            if portal_end < 0 or portal_end + 1 >= end or data[portal_end + 1] != 0:
                return False
        client.open_ext = True
    elif kind == PARSE:
        if inspect and (
            (name_end := data.find(0, off + 5, end)) < 0
            or client.parse_needs(data, name_end + 1, end)
        ):
            return False  # a Parse that may touch session state (or is malformed)
        if track:
            if data[off + 5] != 0:
                return False  # a named statement: renamed
            sts.queue.append((0, sts.sent_seg, None))
        client.open_ext = True
    elif kind == DESCRIBE:
        if track and end > off + 6 and data[off + 5] == STATEMENT and data[off + 6] != 0:
            return False  # a named statement: renamed
        client.open_ext = True
    elif kind == QUERY:
        if inspect and client.needs(data, off + 5, end):
            return False
        server.pending += 1
        sts.sent_seg += 1
        client.copy_syncs = 0
    elif kind == CLOSE:
        if track:
            if end > off + 5 and data[off + 5] == STATEMENT:
                return False  # closing a statement: answered in place of the server
            sts.queue.append((0, sts.sent_seg, None))
        client.open_ext = True
    elif kind == FUNCTION_CALL:
        server.pending += 1
        sts.sent_seg += 1
    elif kind in (COPY_DONE, COPY_FAIL):
        # PostgreSQL ignored the Syncs sent after the Execute that started the COPY IN it
        # announced; without one, it ignores this CopyDone/CopyFail instead.
        if server.copy_in == sts.recv_seg + 1:
            server.pending -= client.copy_syncs
            sts.sent_seg -= client.copy_syncs
        server.copy_in = 0
        client.copy_syncs = 0
    elif kind == FLUSH and end - off != 5:
        client.open_ext = True  # PostgreSQL refuses a Flush with a body, then skips to a Sync
    return True


# ---- replies ------------------------------------------------------------------------------------


def ready(client: ClientSide, server: Any, status: int) -> bool:
    """Note a ReadyForQuery with ``status``: is the link over (every request answered, no batch
    open, the pool mode releases here)?"""
    server.status = status
    pending = server.pending - 1
    server.pending = pending
    server.stmts.recv_seg += 1
    figures = client.figures
    if figures is not None:
        figures.ready(status, server.ready_at, client.query_start, client.xact_start)
    return (
        pending <= 0
        and (status == IDLE or client.statement_mode)
        and not client.session_mode
        and not client.open_ext
    )


def relay_reply(client: Any, server: Any, data: bytes) -> tuple[list[bytes], int, int]:
    """Walk a server's whole messages for its client.

    Returns (bytes to relay, where the walk stopped, event): RELAYED stops at a cut message
    (or the end); LINK_ENDS stops after the ReadyForQuery that ends the link (in statement
    mode with a transaction left open, the relayed bytes leave that ReadyForQuery out);
    FATAL_WHILE_KEPT: the server is dying while its client keeps it between transactions.
    A FATAL is held back (``server.fatal``) until the connection drops.
    """
    out: list[bytes] = []
    start = 0  # start of the bytes relayed unchanged, not yet in ``out``
    off = 0
    n = len(data)
    limit = server.max_packet
    while n - off >= 5:
        kind = data[off]
        ln = length_at(data, off)[0]
        end = off + 1 + ln
        if ln < 4 or ln > limit:
            server.protocol_error(f"bad message length {ln}")
            return [], n, RELAYED
        if end > n:
            break
        if kind == READY_FOR_QUERY:
            status = data[end - 1]
            if end == n:  # a whole reply: its shape may repeat
                misses = client.reply_misses
                client.reply_misses = misses + 1
                if not misses % LEARN_EVERY:
                    client.reply_shape = learn_reply(data)
            if ready(client, server, status):
                upto = end if status == IDLE else off  # statement mode: Z(T) replaced
                if upto > start:
                    out.append(data[start:upto])
                return out, end, LINK_ENDS
        elif kind == PARAMETER_STATUS:
            name, value = m.parse_parameter_status(data[off + 5 : end])
            key = server.set_param(name, value)
            if key in server.tracked_keys:
                client.params[key] = value
        elif kind in (PARSE_COMPLETE, CLOSE_COMPLETE):  # ours or the client's?
            queue = server.stmts.queue
            if queue:
                action = queue.popleft()[0]
                if action:
                    if off > start:
                        out.append(data[start:off])
                    if action == AS_PARSE:
                        out.append(m.PARSE_COMPLETE)
                    start = end
        elif kind == ERROR_RESPONSE:
            server.stmts.error(data, off + 5, end, server.link_gen)
            if client.pool is not None:
                client.pool.figures.server_error(data, off + 5, end)
            if data[off + 6 : off + 11] in FATAL_SEVERITIES:
                server.fatal = m.parse_fields(data[off + 5 : end])
                if off > start:
                    out.append(data[start:off])
                start = end
                if client.reclaimable():
                    return out, end, FATAL_WHILE_KEPT
        elif kind == COPY_IN_RESPONSE:
            server.copy_in = server.stmts.recv_seg + 1
        off = end
    if off > start:
        out.append(data[start:off])
    return out, off, RELAYED
