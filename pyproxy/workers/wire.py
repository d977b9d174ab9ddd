"""Messages between the supervisor and its workers: length-prefixed pickles over a Unix socket
that only the supervisor's own children can open (a private directory, mode 0700)."""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

HEAD = struct.Struct("!I")
MAX_MESSAGE = 64 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEAD.pack(len(body)) + body


async def read(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream."""
    try:
        head = await reader.readexactly(HEAD.size)
        (length,) = HEAD.unpack(head)
        if length > MAX_MESSAGE:
            raise ValueError(f"control message of {length} bytes")
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    message = pickle.loads(body)
    if not isinstance(message, dict):
        raise ValueError("control message is not a dict")
    return message


def send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    if not writer.is_closing():
        writer.write(encode(message))
