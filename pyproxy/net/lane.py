"""The fast lane: requests and replies the pooler has seen the like of, passed with a check and
a write.

It applies to a client linked to its server (transaction or statement mode keeping it between
transactions while nobody waits, session mode always) when nothing is cut mid-message and the
bytes match what the general path learnt: a single simple Query that the session-state
pre-check passes; an extended-protocol request that repeats the learnt request shape but for its
Bind's parameters (``pyproxy.session.shapes``); a reply that repeats the learnt reply shape but
for its rows, whose ParseCompletes answer the client's own statement-queue entries. The lane
applies exactly the effects the general path would (requests owed, statement-queue entries,
the ReadyForQuery's status) and ends the transaction the same way. Anything else — a first
request, a cut message, a named statement, a notice, an error, a ParameterStatus, COPY — goes
to the general path (``pyproxy.session.accounting``), which stays the complete reference.
"""

from __future__ import annotations

import time
from itertools import islice
from typing import Any

from pyproxy.proto.codes import BIND, DATA_ROW, IDLE, QUERY
from pyproxy.proto.framing import length_at, run_end


def request(client: Any, data: bytes) -> bool:
    """Send ``data`` to the client's server if it is a request the lane knows; False when the
    general path must take it."""
    server = client.server
    if client.tail or client.skip:
        return False
    n = len(data)
    if data[0] == QUERY:
        if (
            n <= 5
            or length_at(data, 0)[0] != n - 1
            or n - 1 > server.max_packet
            or (client.inspect and client.needs(data, 5, n))
        ):
            return False
        begin(client, server, data)
        server.pending += 1
        server.stmts.sent_seg += 1
        client.copy_syncs = 0
        server.transport.write(data)
        return True
    shape = client.shape
    if shape is None or not data.startswith(shape.head):
        return False
    b = shape.bind_at
    if not (
        n - shape.tail_len - b > 6
        and data[b] == BIND
        and not data[b + 5]
        and not data[b + 6]
        and b + 1 + length_at(data, b)[0] + shape.tail_len == n
        and n <= server.max_packet
        and data.endswith(shape.tail)
    ):
        return False
    begin(client, server, data)
    syncs = shape.syncs
    server.pending += syncs
    sts = server.stmts
    seg = sts.sent_seg
    for k in shape.entries:
        sts.queue.append((0, seg + k, None))
    sts.sent_seg = seg + syncs
    client.open_ext = False
    client.copy_syncs = shape.copy_syncs
    server.transport.write(data)
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
        or server.skip
        or server.tail
        or not data.startswith(shape.head)
        or not data.endswith(shape.tail)
    ):
        return False
    n = len(data)
    stop = n - shape.tail_len
    if run_end(data, shape.rows_at, stop, DATA_ROW) != stop:
        return False
    pops = shape.pops
    if pops:
        queue = server.stmts.queue
        if len(queue) < pops or any(e[0] for e in islice(queue, pops)):
            return False  # pyproxy's own entries first: the general path drops their answers
        for _ in range(pops):
            queue.popleft()
    if client.retry is not None:
        client.answered()  # a whole reply: the server answered
    status = shape.status
    server.status = status
    server.ready_at = time.monotonic()
    pending = server.pending - 1
    server.pending = pending
    server.stmts.recv_seg += 1
    if (
        pending <= 0
        and (status == IDLE or client.statement_mode)
        and not client.session_mode
        and not client.open_ext
    ):
        client.release_server(data if status == IDLE else data[: n - 6])
    else:
        client.transport.write(data)
    return True
