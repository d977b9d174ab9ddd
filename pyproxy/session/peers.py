"""What the session logic reads and changes on a client and its server (the shells in
pyproxy.net implement these): request counting, statement maps, session settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from pyproxy.session.prepared import ServerStatements, Statement, StatementRegistry


class ProxySide(Protocol):
    statements: StatementRegistry  # identical statements of every client share one name
    excluded: frozenset[str]  # replay_exclude
    tracked: frozenset[str]  # parameters reported with ParameterStatus


class ServerSide(Protocol):
    pending: int  # ReadyForQuery messages its client still expects
    status: int  # the last ReadyForQuery's transaction status
    copy_in: int  # 1 + ReadyForQuery count when it announced COPY IN, else 0
    link_gen: int  # which link (client) the current requests belong to
    max_packet: int
    stmts: ServerStatements


class ClientSide(Protocol):
    proxy: ProxySide
    pool: Any  # the pyproxy.pool.pool.Pool it belongs to
    mode: Any  # its pool's mode
    statement_mode: bool
    track: bool  # rewrite named prepared statements
    inspect: bool  # look at statements for session state
    needs: Callable[[bytes, int, int], bool]  # the pre-check of a query's text
    parse_needs: Callable[[bytes, int, int], bool]  # ... of a Parse's query, remembered
    open_ext: bool  # an extended-protocol batch not yet closed by Sync
    copy_syncs: int  # Syncs since the last Execute: void if it started a COPY IN
    stmts: dict[bytes, Statement]  # the client's statement names
    check_state: bool  # read the session state back when the transaction ends
    custom: set[str]  # custom parameter names it may have set
    pinned: tuple[str, ...]
    session_mode: bool
    shape: Any  # the learnt RequestShape (pyproxy.session.shapes)
    bind_shape: Any  # the learnt BindShape
    shape_misses: int  # requests walked since a shape was learnt
    figures: Any  # its pool's running figures (pyproxy.pool.figures), None when not kept
    query_start: float  # when its query and its transaction went to the server
    xact_start: float

    def notice_unsafe(self, statement: str, why: str, hint: str) -> None: ...
