"""Request and reply shapes: what a client's repeated requests and their replies look like, so
that a repeat is recognised by comparing bytes instead of walking every message (sans-IO).

Drivers repeat themselves: an unnamed statement is sent again with only its Bind's parameters
changed, and its reply differs only in its rows. The general path learns a shape from one walked
request or reply in eight (so that traffic which never repeats costs little); the fast lane
(``pyproxy.net.lane``) takes a request or reply that matches it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pyproxy.proto.codes import (
    BIND,
    CLOSE_COMPLETE,
    COPY_IN_RESPONSE,
    DATA_ROW,
    ERROR_RESPONSE,
    PARAMETER_STATUS,
    PARSE_COMPLETE,
    READY_FOR_QUERY,
)
from pyproxy.proto.framing import message_end, walk

LEARN_EVERY = 8  # one walk in this many may learn a new shape


class RequestShape(NamedTuple):
    """An extended-protocol request of whole messages with one unnamed Bind, ending in Sync.

    A repeat starts with ``head`` (the bytes before the Bind), has an unnamed Bind at
    ``bind_at`` and ends with ``tail`` (``tail_len`` bytes after the Bind); its effects are the
    first one's: ``syncs`` Syncs, statement-queue entries at these Sync counts from the request's
    start, ``copy_syncs`` Syncs after its last Execute.
    """

    head: bytes
    bind_at: int
    tail: bytes
    tail_len: int
    syncs: int
    entries: tuple[int, ...]
    copy_syncs: int


class BindShape(NamedTuple):
    """A request starting with a Bind of a named statement to the unnamed portal (how drivers
    run a prepared statement again), whose other messages (Describe, Execute, Sync) repeat
    ``tail`` exactly. ``names`` is the Bind's portal and statement names as the client sends
    them (``b"\\0name\\0"``), ``server_names`` the same with the statement's pyproxy-wide name
    (``delta`` bytes longer); its effects are ``syncs`` Syncs and ``copy_syncs`` Syncs after its
    last Execute."""

    names: bytes
    stmt: Any  # the client's pyproxy.session.prepared.Statement
    server_names: bytes
    delta: int
    tail: bytes
    tail_len: int
    syncs: int
    copy_syncs: int


class ReplyShape(NamedTuple):
    """A whole reply ending in its only ReadyForQuery: ``head`` (the bytes before its first run
    of DataRows, ``rows_at`` long), ``tail`` (``tail_len`` bytes after that run), how many
    ParseComplete/CloseComplete it has (each answers the client's own statement-queue entry),
    and its final transaction status."""

    head: bytes
    tail: bytes
    rows_at: int
    tail_len: int
    pops: int
    status: int


def learn_request(
    data: bytes, bind_at: int, start_seg: int, seg: int, entries: list[int], copy_syncs: int
) -> RequestShape | None:
    """The shape of ``data`` (walked: its Syncs took the segment count from ``start_seg`` to
    ``seg``; ``entries`` are the segments of the statement-queue entries it added), or None
    when its Bind names a portal or a statement (only unnamed ones are matched)."""
    bind_end = message_end(data, bind_at)
    if data[bind_at] != BIND or bind_end - bind_at < 7 or data[bind_at + 5] or data[bind_at + 6]:
        return None
    return RequestShape(
        data[:bind_at],
        bind_at,
        data[bind_end:],
        len(data) - bind_end,
        seg - start_seg,
        tuple(e - start_seg for e in entries),
        copy_syncs,
    )


def learn_bind(
    data: bytes, stmt: Any, bind_end: int, syncs: int, copy_syncs: int
) -> BindShape | None:
    """The shape of ``data``, a request whose first message (up to ``bind_end``) is a Bind of
    the named statement ``stmt`` to the unnamed portal, renamed and nothing else."""
    names_end = data.find(0, 6, bind_end) + 1
    if data[5] != 0 or names_end <= 6:
        return None
    names = data[5:names_end]
    server_names = b"\x00" + stmt.name + b"\x00"
    return BindShape(
        names,
        stmt,
        server_names,
        len(server_names) - len(names),
        data[bind_end:],
        len(data) - bind_end,
        syncs,
        copy_syncs,
    )


def learn_reply(data: bytes) -> ReplyShape | None:
    """The shape of a whole reply ending in its only ReadyForQuery, if it holds nothing but
    plain messages, ParseComplete/CloseComplete and DataRows."""
    n = len(data)
    messages, _ = walk(data, 0)
    pops = 0
    rows_at = rows_end = n - 6  # no rows: an empty run just before the ReadyForQuery
    for kind, off, end in messages[:-1]:
        if kind == DATA_ROW:
            if rows_at == n - 6:
                rows_at = off
                rows_end = end
            elif rows_end == off:  # the first run goes on; later rows are in the tail
                rows_end = end
        elif kind in (PARSE_COMPLETE, CLOSE_COMPLETE):
            pops += 1
        elif kind in _NOT_PLAIN:
            return None  # a ReadyForQuery before the last, a ParameterStatus or an error
    return ReplyShape(data[:rows_at], data[rows_end:], rows_at, n - rows_end, pops, data[n - 1])


_NOT_PLAIN = frozenset((READY_FOR_QUERY, PARAMETER_STATUS, ERROR_RESPONSE, COPY_IN_RESPONSE))
