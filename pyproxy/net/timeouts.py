"""Client-side timeouts checked by the maintenance timer: idle client, idle transaction, query."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyproxy.errors import (
    IDLE_IN_TRANSACTION_TIMEOUT,
    IDLE_SESSION_TIMEOUT,
    QUERY_CANCELED,
    TRANSACTION_TIMEOUT,
    PgError,
)
from pyproxy.proto.codes import IDLE
from pyproxy.proto.phases import ClientPhase

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn

C = ClientPhase


def check_client(client: ClientConn, now: float) -> None:
    """End ``client`` with a FATAL naming the timeout it exceeded, if any."""
    pool = client.pool
    if pool is None or client.phase is C.CLOSED:
        return
    s = pool.settings
    server = client.server
    if server is None or client.reclaimable():  # a kept server counts as none
        idle = now - client.last_active
        if client.phase in (C.READY, C.LINKED) and 0 < s.client_idle_timeout <= idle:
            client.kick(_idle_client(s.client_idle_timeout))
        return
    if server.pending > 0:
        if s.query_timeout > 0 and now - client.query_start >= s.query_timeout:
            client.kick(
                PgError(
                    QUERY_CANCELED,
                    f"query_timeout: query ran longer than {s.query_timeout:g} s",
                    fatal=True,
                )
            )
            return
    elif server.status != IDLE:
        if s.idle_transaction_timeout > 0 and now - server.ready_at >= s.idle_transaction_timeout:
            client.kick(
                PgError(
                    IDLE_IN_TRANSACTION_TIMEOUT,
                    "idle_transaction_timeout: "
                    f"transaction idle for more than "
                    f"{s.idle_transaction_timeout:g} s",
                    fatal=True,
                )
            )
            return
    elif client.session_mode or client.pinned:
        # A session-mode (or pinned) client keeps its server while idle between transactions.
        client.session_xact_start = 0.0
        if (
            s.client_idle_timeout > 0
            and not client.open_ext
            and now - max(client.last_active, server.ready_at) >= s.client_idle_timeout
        ):
            client.kick(_idle_client(s.client_idle_timeout))
        return
    if s.transaction_timeout <= 0:
        return
    started = client.xact_start
    if client.session_mode or client.pinned:
        # The server stays linked across transactions, so find where this one began.
        if server.status == IDLE:
            # No transaction block: the statement running now (a transaction of its own) was
            # sent at query_start, or after the last ReadyForQuery when pipelined.
            client.session_xact_start = 0.0
            started = max(client.query_start, server.ready_at)
        else:
            # Inside a block: timed from the first check that saw it (these checks run every
            # JANITOR_INTERVAL, so at most that late).
            started = client.session_xact_start or now
            client.session_xact_start = started
    if now - started >= s.transaction_timeout:
        client.kick(
            PgError(
                TRANSACTION_TIMEOUT,
                f"transaction_timeout: transaction lasted longer than {s.transaction_timeout:g} s",
                fatal=True,
            )
        )


def _idle_client(timeout: float) -> PgError:
    return PgError(
        IDLE_SESSION_TIMEOUT,
        f"client_idle_timeout: connection closed after {timeout:g} s without activity",
        fatal=True,
    )
