"""A server that dies under a client: its request sent again on a new server when that is safe,
else the error the client can act on."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pyproxy.errors import PgError
from pyproxy.pool.figures import own_error
from pyproxy.proto import messages as m
from pyproxy.proto.codes import IDLE, TERMINATE
from pyproxy.proto.phases import ClientPhase

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn
    from pyproxy.net.server import ServerConn

log = logging.getLogger("pyproxy.client")
C = ClientPhase
# A request whose server died without answering is sent again only if it was this recent (a
# long-running statement whose backend was terminated may have been ended on purpose), and at
# most this many times.
RETRY_WINDOW = 1.0
MAX_RETRIES = 3


def answered(client: ClientConn) -> None:
    """The first reply byte of the request kept in ``client.retry`` has come."""
    client.retry = None
    client.retries = 0
    if client.session_mode:
        client.retry_ok = False


def server_failed(client: ClientConn, err: PgError, mid_message: bool = False) -> None:
    """The linked server died or could not be prepared for us (``mid_message``: while part of
    one of its messages had been relayed, so the client's stream is cut)."""
    server = client.server
    client.server = None
    if client.phase is C.CLOSED:
        return
    if _send_elsewhere(client, server):
        return
    fatal = PgError(err.sqlstate, err.message, fatal=True, detail=err.detail)
    if client.phase is C.WAITING or server is None:
        client.fatal(fatal)
        return
    pending = server.pending
    if (pending <= 0 and server.status != IDLE) or client.open_ext or client.tail or mid_message:
        # The client believes it is inside a transaction that no longer exists, waits for
        # replies to an extended-protocol batch not yet closed by Sync, or got part of a message
        # whose rest will never come.
        client.fatal(fatal)
        return
    client.move(C.READY)
    client.open_ext = False
    client.tail = b""
    client.discard, client.skip = client.skip, 0
    if pending > 0:
        own_error(client.pool, err.sqlstate)
        out = [m.error_response(err.sqlstate, err.message, detail=err.detail)]
        out.extend([m.READY_IDLE] * pending)
        client.transport.write(b"".join(out))


def _send_elsewhere(client: ClientConn, server: ServerConn | None) -> bool:
    """The server died before answering a request that started outside a transaction (see
    ``ClientConn.retry``), or while it was being prepared for a queued request: send the request
    on a new server (an idle one may have died with it), at most ``MAX_RETRIES`` times and only
    within ``RETRY_WINDOW`` of its arrival."""
    pool = client.pool
    if client.retries >= MAX_RETRIES or pool is None:
        return False
    if client.phase is C.WAITING:
        if server is not None and not server.closed:
            return False  # the server refused to be prepared: no use trying another
        # The server died while being prepared for us: nothing was sent yet.
        client.retries += 1
        pool.acquire(client)
        return True
    data = client.retry
    # The window counts from when the request could reach the server (a queued request: from
    # the hand-over, the server's last ReadyForQuery), not from its arrival: time spent queued
    # says nothing about a statement that was killed on purpose.
    sent = client.query_start if server is None else max(client.query_start, server.ready_at)
    if data is None or time.monotonic() - sent > RETRY_WINDOW:
        return False
    client.retry = None
    client.retries += 1
    if server is not None:
        server.stmts.undo_all()  # the client's statement names as before the request
    client.open_ext = False
    client.tail = b""
    client.skip = 0
    client.copy_syncs = 0
    client.move(C.READY)
    log.info("[c%d] server died before answering; request sent again", client.id)
    if data[0] == TERMINATE or not pool.open_for(client):
        client.data_received(data)
        return True
    client.pending_data.append(data)
    client.move(C.WAITING)
    client.wait_since = client.query_start
    return True
