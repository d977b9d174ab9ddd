"""Leftovers of a COPY FROM STDIN the server already ended: CopyData/CopyDone/CopyFail to drop.

When PostgreSQL rejects a row in the middle of a COPY started by a simple Query, it answers
ErrorResponse and ReadyForQuery at once, while the client may still be sending CopyData. The
server is then released (or gone), and what the client sends until its CopyDone or CopyFail
belongs to no server: PostgreSQL would ignore it anyway, so pyproxy drops it instead of taking a
server for it. A CopyData the server got only the start of is completed with zero bytes, which
PostgreSQL reads and ignores, so that the server's input is at a message boundary again.
"""

from __future__ import annotations

import struct

from pyproxy.proto.codes import COPY_IN_TYPES

_unpack_len = struct.Struct("!I").unpack_from

PAD_LIMIT = 1 << 20  # a longer cut message closes the server instead


def complete_cut_copy_data(missing: int) -> bytes | None:
    """The ``missing`` bytes of a cut CopyData (zeros PostgreSQL reads and ignores); None if
    so much is missing that the server must be closed instead."""
    if missing > PAD_LIMIT:
        return None
    return bytes(missing)


def is_copy_leftover(first: bytes, discard: int) -> bool:
    """Does data starting with ``first`` (or a pending ``discard``) begin with leftovers?"""
    return discard > 0 or (first[:1] != b"" and first[0] in COPY_IN_TYPES)


def drop_copy_leftovers(data: bytes, discard: int) -> tuple[bytes, int, bytes]:
    """Drop ``discard`` bytes, then the CopyData/CopyDone/CopyFail messages ``data`` starts with.

    Returns ``(rest, discard, tail)``: the bytes from the first other message on, the bytes of a
    cut copy message still to drop from the next data, and a cut header (< 5 bytes) of a copy
    message to look at again with the next data.
    """
    if discard:
        if discard >= len(data):
            return b"", discard - len(data), b""
        data = data[discard:]
    n = len(data)
    off = 0
    while off < n and data[off] in COPY_IN_TYPES:
        if n - off < 5:
            return b"", 0, data[off:]
        end = off + 1 + _unpack_len(data, off + 1)[0]
        if end > n:
            return b"", end - n, b""
        off = end
    return data[off:], 0, b""
