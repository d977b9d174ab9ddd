"""Connection phases of clients and servers, each with one transition table and one transition
function: a move the table does not allow is one ProtocolError, raised from one place."""

from __future__ import annotations

from enum import IntEnum

from pyproxy.errors import ProtocolError


class ClientPhase(IntEnum):
    """Where an application connection is in its life."""

    STARTUP = 0  # reading the startup packet (or an SSLRequest, a CancelRequest)
    AUTH = 1  # authenticating
    LOGIN = 2  # authenticated, waiting for its pool to learn the server's parameters
    READY = 3  # logged in, no server linked
    WAITING = 4  # a request waits for a server (queued, or a server is being opened)
    LINKED = 5  # a server is linked: requests go to it
    BLOCKED = 6  # statement mode: in a refused transaction block, answered by pyproxy
    CLOSED = 7


class ServerPhase(IntEnum):
    """Where a server connection is in its life."""

    LOGIN = 0  # connecting and logging in
    IDLE = 1  # logged in, linked to no client
    LINKED = 2  # relaying to its client
    SYNC = 3  # running pyproxy's own query to align the session before the client's request
    RESET = 4  # running the reset query before the pool may reuse it
    CHECK = 5  # running the health check
    ROLLBACK = 6  # rolling back what a departed client left open
    READBACK = 7  # reading the session state back for its client
    CLOSED = 8


C, S = ClientPhase, ServerPhase
_CLIENT_MOVES: dict[ClientPhase, frozenset[ClientPhase]] = {
    C.STARTUP: frozenset({C.STARTUP, C.AUTH, C.CLOSED}),
    C.AUTH: frozenset({C.LOGIN, C.CLOSED}),
    C.LOGIN: frozenset({C.READY, C.CLOSED}),
    C.READY: frozenset({C.WAITING, C.LINKED, C.BLOCKED, C.CLOSED}),
    C.WAITING: frozenset({C.LINKED, C.READY, C.CLOSED}),
    C.LINKED: frozenset({C.READY, C.WAITING, C.BLOCKED, C.CLOSED}),
    C.BLOCKED: frozenset({C.READY, C.LINKED, C.CLOSED}),
    C.CLOSED: frozenset({C.CLOSED}),
}
_SERVER_MOVES: dict[ServerPhase, frozenset[ServerPhase]] = {
    S.LOGIN: frozenset({S.IDLE, S.CLOSED}),
    S.IDLE: frozenset({S.IDLE, S.LINKED, S.SYNC, S.RESET, S.CHECK, S.ROLLBACK, S.CLOSED}),
    S.LINKED: frozenset({S.IDLE, S.LINKED, S.SYNC, S.RESET, S.ROLLBACK, S.READBACK, S.CLOSED}),
    S.SYNC: frozenset({S.LINKED, S.IDLE, S.CLOSED}),
    S.RESET: frozenset({S.IDLE, S.CLOSED}),
    S.CHECK: frozenset({S.IDLE, S.CLOSED}),
    S.ROLLBACK: frozenset({S.IDLE, S.CLOSED}),
    S.READBACK: frozenset({S.LINKED, S.IDLE, S.CLOSED}),
    S.CLOSED: frozenset({S.CLOSED}),
}
del C, S
# The tables as one set of (from << 4 | to) each: a move is checked with one lookup.
_CLIENT_LEGAL = frozenset(a << 4 | b for a, tos in _CLIENT_MOVES.items() for b in tos)
_SERVER_LEGAL = frozenset(a << 4 | b for a, tos in _SERVER_MOVES.items() for b in tos)


def client_moves(now: ClientPhase, to: ClientPhase) -> ClientPhase:
    """The client's next phase, if ``now`` may move to ``to``."""
    if now << 4 | to not in _CLIENT_LEGAL:
        raise ProtocolError(f"internal error: client cannot go from {now.name} to {to.name}")
    return to


def server_moves(now: ServerPhase, to: ServerPhase) -> ServerPhase:
    """The server's next phase, if ``now`` may move to ``to``."""
    if now << 4 | to not in _SERVER_LEGAL:
        raise ProtocolError(f"internal error: server cannot go from {now.name} to {to.name}")
    return to
