"""The fast lane: requests and replies the pooler has seen the like of, passed with a check and
a write.

It applies to a client linked to its server (transaction or statement mode keeping it between
transactions while nobody waits, session mode always) when nothing is cut mid-message and the
bytes match what the general path learnt: a single simple Query that the session-state
pre-check passes; an extended-protocol request that repeats a learnt shape but for its Bind's
parameters — an unnamed statement, or a named one the server has prepared, whose Bind only needs
its pyproxy-wide name (``pyproxy.session.shapes``); a reply that repeats the client's learnt
reply shape but for its rows, whose ParseCompletes answer the client's own statement-queue
entries. The lane applies exactly the effects the general path would (requests owed,
statement-queue entries, the ReadyForQuery's status, timestamps) and ends the transaction the
same way; where the transaction's end needs a decision (a queue, a session to read back, a pin,
a stale server) it hands that to the client shell. Anything else — a first request, a cut
message, a notice, an error, a ParameterStatus, COPY — goes to the general path
(``pyproxy.session.accounting``), which stays the complete reference. It reads no transport
state, so it applies over TLS as well.
"""

from __future__ import annotations

import struct
import time
from bisect import bisect_left
from typing import Any

from pyproxy.pool.figures import BOUNDS
from pyproxy.proto.codes import BIND, DATA_ROW, IDLE, QUERY
from pyproxy.proto.framing import length_at
from pyproxy.proto.phases import ClientPhase

_length = length_at
READY, WAITING, LINKED = ClientPhase.READY, ClientPhase.WAITING, ClientPhase.LINKED
_pack = struct.Struct("!I").pack


def request(client: Any, data: bytes) -> bool:
    """Send ``data`` to the client's server if it is a request the lane knows; False when the
    general path must take it."""
    if client.tail or client.skip:
        return False
    server = client.server
    n = len(data)
    kind = data[0]
    if kind == QUERY:
        if (
            n <= 5
            or _length(data, 0)[0] != n - 1
            or n > server.max_packet
            or (client.inspect and client.needs(data, 5, n))
        ):
            return False
        # begin() inlined: this is the commonest request
        pending = server.pending
        if not pending:
            now = client.query_start = time.monotonic()
            if server.status == IDLE:
                client.xact_start = now
                client.retry = data if client.retry_ok and not client.open_ext else None
            else:
                client.retry = None
        elif client.retry is not None:
            client.retry = None
        server.pending = pending + 1
        server.stmts.sent_seg += 1
        client.copy_syncs = 0
        server.transport.write(data)
        return True
    if kind == BIND:
        if n < 7 or data[5]:  # cut, or a named portal
            return False
        if data[6]:
            return _named(client, server, data, n)
    shape = client.shape
    if shape is None or not data.startswith(shape.head):
        return False
    b = shape.bind_at
    if not (
        n - shape.tail_len - b > 6
        and data[b] == BIND
        and not data[b + 5]
        and not data[b + 6]
        and b + 1 + _length(data, b)[0] + shape.tail_len == n
        and n <= server.max_packet
        and data.endswith(shape.tail)
    ):
        return False
    begin(client, server, data)
    syncs = shape.syncs
    server.pending += syncs
    sts = server.stmts
    seg = sts.sent_seg
    if shape.entries:
        queue = sts.queue
        for k in shape.entries:
            queue.append((0, seg + k, None))
    sts.sent_seg = seg + syncs
    client.open_ext = False
    client.copy_syncs = shape.copy_syncs
    server.transport.write(data)
    return True


def _named(client: Any, server: Any, data: bytes, n: int) -> bool:
    """A Bind of a named statement the server has prepared, to the unnamed portal, then the
    learnt rest of the request: the Bind gets the statement's pyproxy-wide name."""
    shape = client.bind_shape
    if shape is None or not data.startswith(shape.names, 5):
        return False
    bind_end = 1 + _length(data, 0)[0]
    stmt = shape.stmt
    sts = server.stmts
    prepared = sts.prepared
    if (
        bind_end + shape.tail_len != n
        or stmt.retired
        or stmt.name not in prepared
        or client.stmts.get(shape.names[1:-1]) is not stmt
        or n + shape.delta > server.max_packet
        or not data.endswith(shape.tail)
    ):
        return False
    begin(client, server, data)
    prepared.move_to_end(stmt.name)
    sts.note_bind(server.link_gen, stmt)
    syncs = shape.syncs
    server.pending += syncs
    sts.sent_seg += syncs
    client.open_ext = False
    client.copy_syncs = shape.copy_syncs
    names_end = 5 + len(shape.names)
    server.transport.write(
        b"B" + _pack(bind_end - 1 + shape.delta) + shape.server_names + data[names_end:]
    )
    return True


def begin(client: Any, server: Any, data: bytes) -> None:
    """A request goes out (on either path): time it, note a new transaction, and keep its
    bytes while its server may die unanswered (see ``ClientConn.retry``)."""
    if server.pending:
        if client.retry is not None:  # more of the request before any reply: not retried
            client.retry = None
        return
    now = time.monotonic()
    client.query_start = now
    if server.status == IDLE:  # a new transaction
        client.xact_start = now
        client.retry = data if client.retry_ok and not client.open_ext else None
    else:
        client.retry = None


def reply(server: Any, data: bytes) -> bool:
    """Relay ``data`` to the linked client if it repeats the client's learnt reply shape but
    for its rows; False when the general path must take it."""
    client = server.client
    shape = client.reply_shape
    if (
        shape is None
        or server.tail
        or server.skip
        or server.held_reply  # the start of this reply is held back: the general path joins it
        or not data.startswith(shape.head)
    ):
        return False
    n = len(data)
    stop = n - shape.tail_len
    off = shape.rows_at
    if off < stop:  # the rows: DataRows only, ending where the tail starts
        if data[off] != DATA_ROW:
            return False
        off += 1 + _length(data, off)[0]
        while off < stop and data[off] == DATA_ROW:
            off += 1 + _length(data, off)[0]
    if off != stop or not data.endswith(shape.tail):
        return False
    pops = shape.pops
    if pops:
        queue = server.stmts.queue
        if len(queue) < pops:
            return False
        for i in range(pops):
            if queue[i][0]:
                return False  # pyproxy's own entry: the general path drops its answer
        for _ in range(pops):
            queue.popleft()
    if client.retry is not None:
        client.retry = None  # a whole reply: the server answered
        client.retries = 0
        if client.session_mode:
            client.retry_ok = False
    status = shape.status
    server.status = status
    now = server.ready_at = time.monotonic()
    figures = client.figures
    if figures is not None:  # Figures.ready, its commonest case inlined
        figures.sent += n
        xact_start = client.xact_start
        if status == IDLE and client.query_start <= xact_start:
            d = now - xact_start
            figures.one[bisect_left(BOUNDS, d)] += 1
            figures.one_sum += d
        else:
            figures.ready(status, now, client.query_start, xact_start)
    pending = server.pending - 1
    server.pending = pending
    server.stmts.recv_seg += 1
    if pending > 0 or client.open_ext or client.session_mode:
        client.transport.write(data)
        return True
    if status != IDLE:
        if client.statement_mode:
            client.release_server(data[: n - 6])  # Z(T) replaced: see ClientConn.let_go
        else:
            client.transport.write(data)  # a transaction goes on
        return True
    pool = client.pool
    if (
        client.skip
        or client.check_state
        or client.pinned
        or client.deferred
        or server.stale
        or server.cancels
        or not pool.steady
        or now - server.created >= pool.max_age
        or not (pool.within or pool.fits())
    ):
        client.release_server(data)
        return True
    pool.xact_count += 1
    client.last_active = now
    if pool.waiters:
        _hand_over(client, server, pool, data, now)
        return True
    # Nobody waits: the client keeps its server until its next transaction, unless another
    # client needs it first (the pool takes it back) or it idles too long.
    client.transport.write(data)
    return True


def _hand_over(client: Any, server: Any, pool: Any, data: bytes, now: float) -> None:
    """Under load: the server goes straight to the head of the queue, whose request is sent
    before this client's reply so that PostgreSQL gets to work sooner. One pool step (the
    waiter leaves the queue; the server stays linked), one write each way."""
    client.server = None
    client.move(READY)
    waiter = pool.next_waiter(now)
    if (
        waiter.phase is WAITING
        and waiter.params == server.tracked_values
        and waiter.settings == server.settings
        and not waiter.options
        and not waiter.reading_paused
        and len(waiter.pending_data) == 1
    ):
        waiter.server = server
        server.client = waiter
        server.link_gen += 1
        server.pending = 0
        waiter.move(LINKED)
        waiting = waiter.pending_data.pop()
        if not request(waiter, waiting):
            waiter.forward(waiting)
        waiter.query_start = waiter.wait_since  # query_timeout counts the time queued
    else:
        waiter.on_server(server)  # the general way: alignment first, or the waiter left
    client.transport.write(data)
