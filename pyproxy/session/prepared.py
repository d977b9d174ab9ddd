"""Named prepared statements shared across clients: registry, per-server LRU, message rewrites.

A client's ``Parse`` of a named statement is recorded under a pyproxy-wide name shared by every
identical statement (same query text and parameter types). Servers are asked to prepare the
pyproxy-wide name on demand; each server remembers which names it has, least recently used first.

Responses stay in the client's order because every rewrite produces exactly the server responses
the client expects, in place: a Parse the server no longer needs becomes a ``Close`` of a name that
never exists (its CloseComplete is turned into a ParseComplete), an injected Parse's ParseComplete
is swallowed. Each forwarded or injected Parse/Close leaves an entry in the server's response
queue; a server ErrorResponse drops the entries of its Sync segment, as PostgreSQL skips them, and
undoes what they promised: the name is not prepared, a client's failed Parse or skipped Close
leaves its statement map as PostgreSQL would, and a skipped Close leaves the name "unsure" (maybe
still on the server: the next Parse of it is preceded by a Close).

A statement whose result type changed under it (PostgreSQL's 0A000 "cached plan must not change
result type" on a Bind) is retired: later Parses of the same text get a fresh name, and clients
still holding the old one get PostgreSQL's error again on servers that lack it, as they would on
their own connection.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from pyproxy.proto.messages import parse_message

# Response actions for ParseComplete/CloseComplete, in the order the server will send them.
FORWARD = 0  # pass the response to the client
SKIP = 1  # pyproxy's own request: swallow the response
AS_PARSE = 2  # a CloseComplete standing in for a ParseComplete: rewrite it

PREFIX = b"PYPROXY_"
NOOP_NAME = b"PYPROXY_NOOP"
UNKNOWN_PREFIX = b"PYPROXY_?"  # a client's unknown name that looks like ours: never prepared
STALE_PLAN = b"cached plan must not change result type"
_FEATURE_NOT_SUPPORTED = b"C0A000\x00"

# A response-queue entry: (action, segment, name this Parse prepares or None) from the hot path,
# or (action, segment, prepared name, client map undo, name this Close removes) from the slow path.
Undo = tuple[dict[bytes, Any], bytes, Any]
Entry = tuple[Any, ...]


class Statement:
    """One distinct statement (query text + parameter types) and its pyproxy-wide name."""

    __slots__ = ("analyses", "name", "parse_message", "plain", "query", "rest", "retired")

    def __init__(self, name: bytes, rest: bytes) -> None:
        self.name = name
        self.rest = rest
        self.parse_message = parse_message(name, rest)
        self.query = rest[: rest.find(b"\x00")]
        self.retired = False
        self.analyses: list[Any] | None = None  # session-state analysis, outside/inside a tx
        self.plain = False  # analysed, and nothing to see in either transaction state


class StatementRegistry:
    """Process-wide: identical statements from any client share one name."""

    def __init__(self) -> None:
        self._by_text: dict[bytes, Statement] = {}
        self._next = 1

    def get(self, rest: bytes) -> Statement:
        stmt = self._by_text.get(rest)
        if stmt is None or stmt.retired:
            stmt = Statement(PREFIX + str(self._next).encode(), rest)
            self._next += 1
            self._by_text[rest] = stmt
        return stmt

    def __len__(self) -> int:
        return len(self._by_text)


class ServerStatements:
    """What one server connection has prepared (LRU) and the Parse/Close responses it owes."""

    __slots__ = ("bound", "cap", "prepared", "queue", "recv_seg", "sent_seg", "unsure")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.prepared: OrderedDict[bytes, None] = OrderedDict()
        self.unsure: set[bytes] = set()  # names the server may or may not still have
        self.queue: deque[Entry] = deque()
        self.bound: deque[tuple[int, int, Statement]] = deque()  # (link, segment, statement)
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
        self.unsure.discard(name)
        if len(self.prepared) > self.cap:
            evicted, _ = self.prepared.popitem(last=False)
            return evicted
        return None

    def note_bind(self, link: int, stmt: Statement) -> None:
        """Remember which statement a Bind in the current segment uses (for stale plans)."""
        bound = self.bound
        if bound:
            # Entries are in sending order and links only grow: when the newest is stale
            # (an earlier link, or a segment already answered), all are.
            newest = bound[-1]
            if newest[0] != link or newest[1] < self.recv_seg:
                bound.clear()
            else:
                while bound[0][0] != link or bound[0][1] < self.recv_seg:
                    bound.popleft()
        bound.append((link, self.sent_seg, stmt))

    def error(self, data: bytes = b"", start: int = 0, end: int = 0, link: int = 0) -> None:
        """The server sent an ErrorResponse (``data[start:end]``): requests up to Sync are void."""
        seg = self.recv_seg
        q = self.queue
        undo: list[Undo] = []
        while q and q[0][1] == seg:
            entry = q.popleft()
            if entry[2] is not None:
                self.prepared.pop(entry[2], None)
            if len(entry) > 3:
                if entry[3] is not None:
                    undo.append(entry[3])
                if entry[4] is not None:
                    self.prepared.pop(entry[4], None)
                    self.unsure.add(entry[4])
        for names, key, previous in reversed(undo):
            if previous is None:
                names.pop(key, None)
            else:
                names[key] = previous
        if (
            self.bound
            and data.find(_FEATURE_NOT_SUPPORTED, start, end) >= 0
            and data.find(STALE_PLAN, start, end) >= 0
        ):
            for b_link, b_seg, stmt in self.bound:
                if b_link == link and b_seg == seg:
                    stmt.retired = True

    def undo_all(self) -> None:
        """The server died with these entries unanswered: undo what they promised the client
        (its statement map as before the requests), newest first."""
        for entry in reversed(self.queue):
            if len(entry) > 3 and entry[3] is not None:
                names, key, previous = entry[3]
                if previous is None:
                    names.pop(key, None)
                else:
                    names[key] = previous
        self.queue.clear()

    def forget_all(self) -> None:
        """A client ran DEALLOCATE ALL / DISCARD ALL: nothing is known to be prepared any more."""
        self.unsure.update(self.prepared)
        self.prepared.clear()

    def clear(self) -> None:
        self.forget_all()


def unknown_name(name: bytes) -> bytes:
    """A client name unknown to it, made safe to send: never one of pyproxy's server names."""
    return UNKNOWN_PREFIX + name if name.startswith(PREFIX) else name
