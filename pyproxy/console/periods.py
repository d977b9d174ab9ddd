"""Counters per pool behind SHOW STATS, and their averages over the last ``stats_period`` (what
SHOW STATS_AVERAGES and the periodic stats log line report)."""

from __future__ import annotations

from typing import Any, Protocol

from pyproxy.console.columns import STATS_FIELDS

# Averages that are rates (per second over the period); the others are per transaction, query
# or wait (microseconds).
_RATES = (
    "server_assignment_count",
    "xact_count",
    "query_count",
    "received",
    "sent",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
)


class CounterSource(Protocol):
    """What the counters are read from (the pool registry)."""

    def pool_counters(self, name: str) -> dict[str, Any]: ...
    def live_pools(self, name: str | None = None) -> list[Any]: ...


def totals(source: CounterSource, name: str) -> dict[str, int]:
    """SHOW STATS_TOTALS' figures of pool ``name`` (times in microseconds), plus ``wait_count``.

    Transactions (statements in statement mode) and queue waits come from the pool's counters;
    queries, bytes and transaction and query time from its latency histograms (``figures``) in
    builds that keep them. Server assignments, parses and binds read 0: pyproxy does not count
    them.
    """
    found = source.pool_counters(name)
    out = dict.fromkeys(STATS_FIELDS, 0)
    out["xact_count"] = int(found.get("xact_count", 0))
    out["wait_time"] = int(found.get("wait_time", 0.0) * 1_000_000)
    out["wait_count"] = int(found.get("wait_count", 0))
    for pool in source.live_pools(name):
        figures = getattr(pool, "figures", None)
        if figures is None:
            continue
        # A one-query transaction is observed once, in ``one``, and counts as both.
        out["query_count"] += sum(figures.one) + sum(figures.query)
        out["received"] += figures.received
        out["sent"] += figures.sent
        out["xact_time"] += int((figures.one_sum + figures.xact_sum) * 1_000_000)
        out["query_time"] += int((figures.one_sum + figures.query_sum) * 1_000_000)
    return out


def averages(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, int]:
    """PgBouncer's averages between two samples: rates per second, times per event (µs)."""
    delta = {k: max(0, after.get(k, 0) - before.get(k, 0)) for k in after}
    out = {k: int(delta[k] / seconds) if seconds > 0 else 0 for k in _RATES}
    out["xact_time"] = delta["xact_time"] // delta["xact_count"] if delta["xact_count"] else 0
    out["query_time"] = delta["query_time"] // delta["query_count"] if delta["query_count"] else 0
    waits = delta.get("wait_count", 0)
    out["wait_time"] = delta["wait_time"] // waits if waits else 0
    return out


class Periods:
    """The last two samples of every pool's counters: SHOW STATS' averages come from them."""

    def __init__(self) -> None:
        self._last: dict[str, dict[str, int]] = {}
        self._at = 0.0
        self.averages: dict[str, dict[str, int]] = {}
        # Transactions, queries and waits counted in the last period, by pool: what each
        # average time is an average over (workers weigh their averages with them).
        self.counts: dict[str, tuple[int, int, int]] = {}

    def sample(self, source: CounterSource, names: list[str], now: float) -> dict[str, Any]:
        """Take a sample at ``now`` (monotonic seconds); return the averages since the last
        one, by pool name (empty at the first sample)."""
        seconds = now - self._at
        fresh = {name: totals(source, name) for name in names}
        if self._at:
            before = {name: self._last.get(name, dict.fromkeys(t, 0)) for name, t in fresh.items()}
            self.averages = {name: averages(before[name], t, seconds) for name, t in fresh.items()}
            self.counts = {
                name: tuple(  # type: ignore[misc]
                    max(0, t[k] - before[name].get(k, 0))
                    for k in ("xact_count", "query_count", "wait_count")
                )
                for name, t in fresh.items()
            }
        self._last, self._at = fresh, now
        return self.averages

    def of(self, name: str) -> dict[str, int]:
        return self.averages.get(name) or dict.fromkeys(STATS_FIELDS, 0)


def stats_line(name: str, avg: dict[str, int]) -> str:
    """One pool's period in PgBouncer's words (its ``stats:`` log line)."""
    return (
        f"stats of {name}: {avg['xact_count']} xacts/s, {avg['query_count']} queries/s, "
        f"{avg['client_parse_count']} client parses/s, {avg['server_parse_count']} server "
        f"parses/s, {avg['bind_count']} binds/s, in {avg['received']} B/s, out {avg['sent']} "
        f"B/s, xact {avg['xact_time']} us, query {avg['query_time']} us, wait "
        f"{avg['wait_time']} us"
    )
