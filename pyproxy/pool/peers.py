"""What a pool needs from the connections it serves: the server and client protocols implement
these (pyproxy.net.server.ServerConn, pyproxy.net.client.ClientConn)."""

from __future__ import annotations

from typing import Any, Protocol

from pyproxy.errors import PgError


class ServerLink(Protocol):
    """What a pool needs from a server connection (pyproxy.net.server.ServerConn)."""

    place: Any  # a pyproxy.pool.pool.Place, set by the pool alone
    checked: bool  # running the health check the pool asked for
    client: Any
    created: float
    idle_since: float
    ready_at: float
    closed: bool
    stale: bool
    status: int  # the last ReadyForQuery status
    cancels: int  # cancel requests forwarded for it whose connection PostgreSQL has not closed
    reset_sql: str  # what must run on it before another client may have it ("" = nothing)

    def close(self, reason: str = "") -> None: ...

    def clean(self, sql: str) -> None:
        """Run ``sql`` unseen by any client, then ``release`` again (or close on failure)."""

    def check(self) -> None: ...

    def unlink(self) -> None: ...


class Waiter(Protocol):
    """What a pool needs from a client (pyproxy.net.client.ClientConn)."""

    id: int
    wait_since: float
    notified: bool

    def on_server(self, server: Any) -> None: ...

    def on_wait_error(self, error: PgError) -> None: ...

    def notice(self, text: str) -> None: ...

    def reclaimable(self) -> bool:
        """Between transactions, keeping its server only because nobody else needed it."""

    def give_up_server(self) -> None:
        """The pool takes back the server it keeps; its next request asks the pool again."""

    def pin_description(self) -> str: ...
