"""SHOW STATS' averages: rates per second over the period, times per transaction, query or wait."""

from __future__ import annotations

from typing import Any

from pyproxy.console.periods import Periods, averages, stats_line


class Source:
    def __init__(self) -> None:
        self.counters = {"xact_count": 0, "wait_count": 0, "wait_time": 0.0}

    def pool_counters(self, name: str) -> dict[str, Any]:
        return dict(self.counters)

    def live_pools(self, name: str | None = None) -> list[Any]:
        return []


def test_averages_are_rates_and_times_per_event() -> None:
    before = {"xact_count": 10, "query_count": 10, "xact_time": 1000, "query_time": 500,
              "wait_time": 0, "wait_count": 0, "received": 0, "sent": 0}  # fmt: skip
    after = {"xact_count": 30, "query_count": 50, "xact_time": 5000, "query_time": 4500,
             "wait_time": 3000, "wait_count": 3, "received": 2000, "sent": 8000}  # fmt: skip
    for key in ("server_assignment_count", "client_parse_count", "server_parse_count",
                "bind_count"):  # fmt: skip
        before[key] = after[key] = 0
    avg = averages(before, after, 2.0)
    assert (avg["xact_count"], avg["query_count"], avg["received"], avg["sent"]) == (
        10, 20, 1000, 4000,
    )  # fmt: skip
    assert (avg["xact_time"], avg["query_time"], avg["wait_time"]) == (200, 100, 1000)


def test_periods_report_nothing_before_the_second_sample() -> None:
    source, periods = Source(), Periods()
    assert periods.sample(source, ["p"], 100.0) == {}
    assert periods.of("p")["xact_count"] == 0
    source.counters = {"xact_count": 120, "wait_count": 2, "wait_time": 0.004}
    got = periods.sample(source, ["p"], 160.0)
    assert got["p"]["xact_count"] == 2 and got["p"]["wait_time"] == 2000
    assert periods.of("p") == got["p"]
    assert stats_line("p", got["p"]).startswith("stats of p: 2 xacts/s, 0 queries/s")
