"""Relaying between two sockets: messages cut by a read, and flow control in both directions.

A read may end inside a message. A cut message is kept (``tail``) until its rest arrives, and one
over ``LARGE_MESSAGE`` grows in place without copies; a cut CopyData or DataRow is streamed
instead, its rest forwarded as it arrives (``skip`` bytes still to pass). Both client and server
connections carry ``tail``, ``need`` and ``skip``.

Flow control (uvicorn's scheme): when one side's write buffer is full, reading stops on the
other side until it drains, so memory stays bounded with a slow peer.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from pyproxy.proto.framing import length_at

LARGE_MESSAGE = 64 * 1024  # cut messages above this size are collected without copies


class Cut(Protocol):
    """A connection whose reads may end inside a message."""

    tail: bytes | bytearray  # the start of a message cut by the last read
    need: int  # a large kept message's whole size
    skip: int  # bytes of a streamed message still to pass through


def keep(conn: Cut, data: bytes, off: int) -> None:
    """Keep the incomplete message at ``off``; a large one grows in place until it is whole."""
    rest = data[off:]
    if len(rest) >= 5:
        need = 1 + length_at(rest, 0)[0]
        if need > LARGE_MESSAGE:
            conn.tail = bytearray(rest)
            conn.need = need
            return
    conn.tail = rest


def joined(conn: Cut, data: bytes) -> bytes | None:
    """The kept incomplete message followed by ``data``; None while a large one is short."""
    tail = conn.tail
    if type(tail) is bytearray:
        tail += data
        if len(tail) < conn.need:
            return None
        conn.tail = b""
        return bytes(tail)
    conn.tail = b""
    return tail + data


def resume_cut(conn: Cut, data: bytes, transport: Any) -> bytes | None:
    """Finish what the previous read cut: stream the rest of a message, or join a kept one;
    return what is left to walk (None: nothing yet)."""
    skip = conn.skip
    if skip:
        if skip >= len(data):
            conn.skip = skip - len(data)
            transport.write(data)
            return None
        transport.write(data[:skip])
        conn.skip = 0
        return data[skip:]
    return joined(conn, data)


def stream_or_keep(conn: Cut, data: bytes, off: int, streamed: frozenset[int]) -> int:
    """The message at ``off`` is cut: if its type is ``streamed`` and its header is whole, it
    is passed on as it arrives (returns ``len(data)``: relay everything); else it is kept
    (returns ``off``)."""
    n = len(data)
    if n - off >= 5 and data[off] in streamed:
        conn.skip = off + 1 + length_at(data, off)[0] - n
        return n
    keep(conn, data, off)
    return off


# ---- flow control -------------------------------------------------------------------------------


def pause_peer(peer: Any) -> Any:
    """Our write buffer is full: stop reading from ``peer`` (returned, to resume later)."""
    transport = getattr(peer, "transport", None)
    if transport is None or getattr(peer, "reading_paused", False):
        return None
    transport.pause_reading()
    return peer


def resume_peer(peer: Any) -> None:
    """Our write buffer drained: read from ``peer`` again (unless it is gone, or stopped for
    its own reasons)."""
    if peer is None or getattr(peer, "closed", False) or getattr(peer, "reading_paused", False):
        return
    transport: asyncio.Transport | None = getattr(peer, "transport", None)
    if transport is not None and not transport.is_closing():
        transport.resume_reading()
