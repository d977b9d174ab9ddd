"""Pool modes: session, transaction, statement — when a ReadyForQuery ends a client's link."""

from __future__ import annotations

from enum import IntEnum

from pyproxy.proto.codes import IDLE


class Mode(IntEnum):
    SESSION = 0  # a client keeps its server from its first request to disconnect
    TRANSACTION = 1  # ... until each transaction is over
    STATEMENT = 2  # ... until each statement is over (transaction blocks are refused)


MODES = {"session": Mode.SESSION, "transaction": Mode.TRANSACTION, "statement": Mode.STATEMENT}


def ends_link(mode: Mode, status: int) -> bool:
    """Does a ReadyForQuery with transaction ``status``, every request answered, end the link?

    Session mode: never. Transaction mode: when no transaction is open. Statement mode: after
    every statement (a transaction left open is rolled back by the pool's release path).
    """
    if mode is Mode.TRANSACTION:
        return status == IDLE
    return mode is Mode.STATEMENT
