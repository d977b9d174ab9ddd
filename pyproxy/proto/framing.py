"""Framing of v3 messages with length limits (sans-IO): the framers and the one message walk.

Two framers: ``StartupFramer`` for the untyped first packet(s) of a client connection and
``MessageFramer`` for typed messages. Both accept bytes in any chunking and return whole
messages; a declared length over the limit raises ``ProtocolError`` at once, before any of
the body is buffered.

``walk`` is the one walk over the whole messages of a buffer the data path uses (the framers
copy bodies out; the data path forwards slices), with the same single length check; ``run_end``
skips a run of one message type (a reply's DataRows) and ``message_end`` finds where one message
ends.
"""

from __future__ import annotations

import struct

from pyproxy.errors import PROGRAM_LIMIT_EXCEEDED, PgError, ProtocolError
from pyproxy.proto.codes import FUNCTION_CALL, QUERY, SYNC

MAX_STARTUP_PACKET = 10_000
_unpack_len = struct.Struct("!I").unpack_from
_unpack_code = struct.Struct("!I").unpack_from
# ``length_at(data, off)[0]``: the length field of the typed message whose type byte is at
# ``off`` (the data path reads it without adding 1 to the offset first).
length_at = struct.Struct("!xI").unpack_from


class StartupFramer:
    """Collects one untyped packet: int32 length (including itself), int32 code, payload."""

    __slots__ = ("_buf", "limit")

    def __init__(self, limit: int = MAX_STARTUP_PACKET) -> None:
        self._buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> tuple[int, bytes, bytes] | None:
        """Add bytes; return (code, payload, trailing bytes) once a packet is whole."""
        self._buf += data
        if len(self._buf) < 8:
            if len(self._buf) >= 4:
                self._check(_unpack_len(self._buf, 0)[0])
            return None
        length = _unpack_len(self._buf, 0)[0]
        self._check(length)
        if len(self._buf) < length:
            return None
        code = _unpack_code(self._buf, 4)[0]
        payload = bytes(self._buf[8:length])
        rest = bytes(self._buf[length:])
        self._buf.clear()
        return code, payload, rest

    def _check(self, length: int) -> None:
        if length < 8:
            raise ProtocolError(f"invalid startup packet length {length}")
        if length > self.limit:
            raise PgError(
                PROGRAM_LIMIT_EXCEEDED,
                f"startup packet of {length} bytes exceeds the limit of {self.limit} bytes",
                fatal=True,
            )


class MessageFramer:
    """Splits a byte stream into typed messages: (type byte as int, body bytes)."""

    __slots__ = ("_buf", "limit")

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, bytes]] = []
        off = 0
        n = len(buf)
        while n - off >= 5:
            length = _unpack_len(buf, off + 1)[0]
            check_length(buf[off], length, self.limit)
            end = off + 1 + length
            if end > n:
                break
            out.append((buf[off], bytes(buf[off + 5 : end])))
            off = end
        if off:
            del buf[:off]
        return out

    def take_rest(self) -> bytes:
        """Hand over bytes not yet framed (used when switching to the fast path)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    @property
    def buffered(self) -> int:
        return len(self._buf)


def check_length(type_: int, length: int, limit: int) -> None:
    """Refuse a message whose declared length is impossible or over the limit."""
    if length < 4:
        raise ProtocolError(f"invalid length {length} in message of type {chr(type_)!r}")
    if length > limit:
        raise PgError(
            PROGRAM_LIMIT_EXCEEDED,
            f"message of type {chr(type_)!r} with {length} bytes exceeds max_packet_size "
            f"({limit} bytes)",
            fatal=True,
        )


def walk(data: bytes, off: int = 0, limit: int = 1 << 30) -> tuple[list[tuple[int, int, int]], int]:
    """The whole messages of ``data`` from ``off`` as (type, start, end), and where the first
    message that is cut (or the end) starts; a length under 4 or over ``limit`` raises."""
    found: list[tuple[int, int, int]] = []
    n = len(data)
    while n - off >= 5:
        ln = length_at(data, off)[0]
        if ln < 4 or ln > limit:
            check_length(data[off], ln, limit)
        end = off + 1 + ln
        if end > n:
            break
        found.append((data[off], off, end))
        off = end
    return found, off


def run_end(data: bytes, off: int, stop: int, kind: int) -> int:
    """Where a run of messages of type ``kind`` starting at ``off`` ends (``stop`` at most:
    a result past ``stop`` means the run does not end exactly there)."""
    while off < stop and data[off] == kind:
        off += 1 + length_at(data, off)[0]
    return off


def message_end(data: bytes, off: int = 0) -> int:
    """Where the message whose type byte is at ``off`` ends (its length field must be there)."""
    return off + 1 + length_at(data, off)[0]


def count_ready(data: bytes) -> int:
    """How many ReadyForQuery a run of client messages would produce (Query, Sync, FunctionCall)."""
    found, _ = walk(data)
    return sum(1 for kind, _, _ in found if kind in (QUERY, SYNC, FUNCTION_CALL))
