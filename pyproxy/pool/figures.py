"""A pool's running figures for /metrics: latency histograms and counters, kept as plain numbers.

The data path adds to them in place (``pyproxy.net.lane`` inlines the commonest case); nothing
here reads a clock or a socket. Each histogram is a list of bucket counts (not cumulative; the
last one is above every bound) and a sum in seconds.

Queries and transactions share one histogram for the commonest transaction, one query long
(``one``): its query's duration is its transaction's, so it is observed once and counts in
both. ``query`` then holds the other queries (those inside a longer transaction, and a longer
transaction's last one) and ``xact`` the longer transactions; the rendering adds ``one`` to
each. A transaction therefore costs one histogram observation per query it ran, plus one at
its end when it ran more than one.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from pyproxy.proto.codes import IDLE
from pyproxy.proto.messages import parse_fields

# Upper bounds in seconds, from 50 µs: a pooled round trip on loopback takes 50-500 µs.
BOUNDS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
BUCKETS = len(BOUNDS) + 1


def buckets() -> list[int]:
    return [0] * BUCKETS


class Figures:
    """Counters and histograms of one pool (per process). ``received``/``sent``: bytes from
    the pool's clients and from its servers to them; ``errors``: ErrorResponses clients got,
    by (origin, SQLSTATE class); ``cancels``: cancel requests by outcome."""

    __slots__ = (
        "cancels",
        "connect",
        "connect_failures",
        "connect_sum",
        "errors",
        "one",
        "one_sum",
        "query",
        "query_sum",
        "received",
        "sent",
        "xact",
        "xact_sum",
    )

    def __init__(self) -> None:
        self.one = buckets()
        self.one_sum = 0.0
        self.query = buckets()
        self.query_sum = 0.0
        self.xact = buckets()
        self.xact_sum = 0.0
        self.connect = buckets()
        self.connect_sum = 0.0
        self.connect_failures = 0
        self.received = 0
        self.sent = 0
        self.errors: dict[tuple[str, str], int] = {}
        self.cancels: dict[str, int] = {}

    def ready(self, status: int, now: float, query_start: float, xact_start: float) -> None:
        """A ReadyForQuery answering a client's query reached it at ``now``. ``query_start``
        and ``xact_start`` are when its query and its transaction went to the server; a query
        that waited in the queue has ``query_start`` set back to when it arrived (so that
        query_timeout counts the wait), earlier than its transaction's start: its duration
        then counts from ``xact_start``, when it was sent."""
        if status == IDLE:
            if query_start <= xact_start:  # the transaction was this one query
                d = now - xact_start
                self.one[bisect_left(BOUNDS, d)] += 1
                self.one_sum += d
                return
            d = now - xact_start
            self.xact[bisect_left(BOUNDS, d)] += 1
            self.xact_sum += d
        d = now - (query_start if query_start > xact_start else xact_start)
        self.query[bisect_left(BOUNDS, d)] += 1
        self.query_sum += d

    def connected(self, seconds: float) -> None:
        """A server connection logged in ``seconds`` after it was asked for."""
        self.connect[bisect_left(BOUNDS, seconds)] += 1
        self.connect_sum += seconds

    def error(self, sqlstate: str, origin: str) -> None:
        """A client got an ErrorResponse with ``sqlstate``, from the server or from pyproxy."""
        key = (origin, sqlstate[:2])
        self.errors[key] = self.errors.get(key, 0) + 1

    def server_error(self, data: bytes, start: int, end: int) -> None:
        """An ErrorResponse from the server (its fields at ``data[start:end]``) relayed to a
        client: counted by the class of its SQLSTATE (field C)."""
        self.error(parse_fields(data[start:end]).get("C", "XX"), "server")

    def cancel(self, outcome: str) -> None:
        self.cancels[outcome] = self.cancels.get(outcome, 0) + 1


def own_error(pool: Any, sqlstate: str) -> None:
    """pyproxy sent a client of ``pool`` (a Pool, or None before login) an error of its own."""
    if pool is not None:
        pool.figures.error(sqlstate, "pyproxy")
