"""A client's session carried across the servers it gets: aligned on a server before its request
there, read back from the server after a transaction that may have changed it, and pinned to the
server when what it holds cannot be replayed (see pyproxy.session.settings)."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

from pyproxy.proto.codes import IDLE
from pyproxy.session import params as P
from pyproxy.session import settings as S

if TYPE_CHECKING:
    from pyproxy.net.client import ClientConn
    from pyproxy.net.server import ServerConn

log = logging.getLogger("pyproxy.client")


def needs_alignment(client: ClientConn, server: ServerConn) -> bool:
    return (
        client.params != server.tracked_values
        or client.settings != server.settings
        or bool(client.options)
    )


def alignment(client: ClientConn, server: ServerConn) -> tuple[str, bool]:
    """What makes ``server``'s session the client's: SETs of tracked parameters, then its other
    settings; and whether to wait for the answer before sending the client's request (values
    PostgreSQL has not checked yet: an error ends the client)."""
    parts = []
    wait = False
    if client.params != server.tracked_values:
        diff = P.differences(client.params, server.params, client.proxy.tracked)
        if diff:
            parts.append(P.set_statements(diff))
            wait = not client.checked
        else:  # equal but spelled differently: adopt the server's spelling
            client.params.update(server.tracked_values)
    if client.options:
        parts.append(S.apply_sql({}, server.settings))
        parts.append(S.startup_sql(client.options))
        parts.append(state_sql(client, server))
        wait = True
    elif client.settings != server.settings:
        parts.append(S.apply_sql(client.settings, server.settings))
        server.settings = dict(client.settings)
    return ";".join(p for p in parts if p), wait


def state_sql(client: ClientConn, server: ServerConn) -> str:
    custom = client.custom | {name for name in client.options if "." in name}
    return S.state_query(custom, client.proxy.excluded, server.pool_login_user())


def aligned(client: ClientConn, rows: list[list[str | None]]) -> None:
    """PostgreSQL took the client's values; ``rows`` read back its settings if its startup
    options were applied."""
    client.checked = True
    if client.options:
        client.options = {}
        adopt(client, S.parse_state(rows, client.proxy.tracked))


def adopt(client: ClientConn, state: S.SessionState) -> None:
    """The session state read back from the linked server: its settings are the client's, and
    under session_state = "pin" what cannot be replayed keeps the server."""
    server = client.server
    assert server is not None
    client.settings = state.settings
    server.settings = dict(state.settings)
    client.custom &= set(state.settings)
    pool = client.pool
    if pool is None:
        return
    if state.kept and pool.session_policy == "pin":
        if not client.pinned:
            pool.pinned.add(client)
            log.info("[c%d] pinned to s%d: %s", client.id, server.id, ", ".join(state.kept))
        client.pinned = state.kept
    elif client.pinned and not state.kept:
        client.pinned = ()
        pool.pinned.discard(client)
        log.info("[c%d] no longer pinned", client.id)


def state_first(client: ClientConn, server: ServerConn, reply: bytes) -> None:
    """The transaction is over, but more than the pool mode decides what happens to the
    server: its session state must be read back first (settings may have changed, a pin may
    hold or end), the client is pinned to it, or a deferred BEGIN waits."""
    if reply:
        client.transport.write(reply)
    client.last_active = server.ready_at
    if client.check_state and server.status == IDLE:
        client.check_state = False
        server.read_state(state_sql(client, server), partial(_state_read, client, server))
    elif client.pinned:
        client.refuse_deferred()  # the client keeps its server through the block
    else:
        client.let_go(server, b"")


def _state_read(
    client: ClientConn,
    server: ServerConn,
    error: dict[str, str] | None,
    rows: list[list[str | None]],
) -> None:
    """``read_state`` answered: adopt the state, then let the server go if the client is not
    pinned and has sent nothing meanwhile."""
    if client.server is not server or client.closing():
        server.relink()  # the client left or lost the server meanwhile
        return
    if error is None:
        adopt(client, S.parse_state(rows, client.proxy.tracked))
    else:
        log.warning("[c%d] could not read the session state: %s", client.id, error.get("M"))
    server.relink()
    if server.pending > 0 or client.open_ext or client.check_state:
        return  # the client sent more meanwhile: its end decides
    if client.pinned:
        client.refuse_deferred()
    else:
        client.let_go(server, b"")
