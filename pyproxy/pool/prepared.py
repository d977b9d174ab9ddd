"""Named prepared statements shared across clients: registry, per-server LRU, message rewrites.

A client's ``Parse`` of a named statement is recorded under a pyproxy-wide name shared by every
identical statement (same query text and parameter types). Servers are asked to prepare the
pyproxy-wide name on demand; each server remembers which names it has, least recently used first.

Responses stay in the client's order because every rewrite produces exactly the server responses
the client expects, in place: a Parse the server no longer needs becomes a ``Close`` of a name that
never exists (its CloseComplete is turned into a ParseComplete), an injected Parse's ParseComplete
is swallowed. Each forwarded or injected Parse/Close leaves an entry in the server's response
queue; a server ErrorResponse drops the entries of its Sync segment, as PostgreSQL skips them.
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque

_I = struct.Struct("!I")

# Response actions for ParseComplete/CloseComplete, in the order the server will send them.
FORWARD = 0  # pass the response to the client
SKIP = 1  # pyproxy's own request: swallow the response
AS_PARSE = 2  # a CloseComplete standing in for a ParseComplete: rewrite it

PREFIX = b"PYPROXY_"
NOOP_NAME = b"PYPROXY_NOOP"
PARSE_COMPLETE = b"1\x00\x00\x00\x04"


class Statement:
    """One distinct statement (query text + parameter types) and its pyproxy-wide name."""

    __slots__ = ("name", "parse_message", "query")

    def __init__(self, name: bytes, rest: bytes) -> None:
        self.name = name
        body = name + b"\x00" + rest
        self.parse_message = b"P" + _I.pack(len(body) + 4) + body
        self.query = rest[: rest.find(b"\x00")]


class StatementRegistry:
    """Process-wide: identical statements from any client share one name."""

    def __init__(self) -> None:
        self._by_text: dict[bytes, Statement] = {}
        self._next = 1

    def get(self, rest: bytes) -> Statement:
        stmt = self._by_text.get(rest)
        if stmt is None:
            stmt = Statement(PREFIX + str(self._next).encode(), rest)
            self._next += 1
            self._by_text[rest] = stmt
        return stmt

    def __len__(self) -> int:
        return len(self._by_text)


class ServerStatements:
    """What one server connection has prepared (LRU) and the Parse/Close responses it owes."""

    __slots__ = ("cap", "prepared", "queue", "recv_seg", "sent_seg")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.prepared: OrderedDict[bytes, None] = OrderedDict()
        self.queue: deque[tuple[int, int, bytes | None]] = deque()
        self.sent_seg = 0  # Sync/Query/FunctionCall messages sent to the server
        self.recv_seg = 0  # ReadyForQuery messages received from it

    def has(self, name: bytes) -> bool:
        if name in self.prepared:
            self.prepared.move_to_end(name)
            return True
        return False

    def add(self, name: bytes) -> bytes | None:
        """Record ``name`` as prepared; return a name to evict (caller sends its Close)."""
        self.prepared[name] = None
        self.prepared.move_to_end(name)
        if len(self.prepared) > self.cap:
            evicted, _ = self.prepared.popitem(last=False)
            return evicted
        return None

    def error(self) -> None:
        """The server reported an error: requests up to the next Sync get no response."""
        seg = self.recv_seg
        q = self.queue
        while q and q[0][1] == seg:
            _, _, name = q.popleft()
            if name is not None:
                self.prepared.pop(name, None)

    def clear(self) -> None:
        self.prepared.clear()


def split_name(body: bytes, start: int = 0) -> tuple[bytes, int]:
    """The NUL-terminated name at ``start`` and the offset just after its terminator."""
    end = body.index(b"\x00", start)
    return body[start:end], end + 1


def frame(type_: bytes, body: bytes) -> bytes:
    return type_ + _I.pack(len(body) + 4) + body


def close_statement(name: bytes) -> bytes:
    return frame(b"C", b"S" + name + b"\x00")


def bind_with(portal: bytes, stmt: bytes, rest: bytes) -> bytes:
    return frame(b"B", portal + b"\x00" + stmt + b"\x00" + rest)


def describe_statement(name: bytes) -> bytes:
    return frame(b"D", b"S" + name + b"\x00")
