"""The benchmark's plan repeats cells in rounds; its report takes medians of per-round figures."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.plan import QUICK, MatrixSpec, build_plan
from bench.report import checks, markdown, summarize

SPEC = MatrixSpec(("transaction",), ("simple",), (10, 50))


def test_every_target_of_a_cell_runs_once_per_round_and_rounds_stay_together() -> None:
    plan = build_plan(SPEC, ("pyproxy", "pgbouncer"), set(), repeat=3)
    per_key = Counter((r.target, r.clients, r.round) for r in plan)
    assert set(per_key.values()) == {1}
    assert len(plan) == 2 * 3 * 3  # cells x rounds x targets (direct, pyproxy, PgBouncer)
    # A cell's rounds run one after the other, and each round's targets run back to back.
    cells_in_order = [r.clients for r in plan]
    assert cells_in_order == [10] * 9 + [50] * 9
    rounds_in_order = [r.round for r in plan if r.clients == 10]
    assert rounds_in_order == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_who_runs_first_rotates_from_round_to_round() -> None:
    plan = build_plan(SPEC, ("pyproxy", "pgbouncer"), set(), repeat=3)
    firsts = [plan[i].target for i in range(0, 9, 3)]
    assert len(set(firsts)) == 3


def test_one_round_is_the_default_and_keeps_the_old_plan_size() -> None:
    plan = build_plan(QUICK, ("pyproxy", "pgbouncer"), set())
    assert {r.round for r in plan} == {0}
    assert len(plan) == 3 * 7  # seven cells of the quick matrix, three targets each


def _run(target: str, round_: int, tps: float, cpu: float, failed: int = 0) -> dict[str, Any]:
    return {
        "target": target,
        "mode": None if target == "direct" else "transaction",
        "protocol": "simple",
        "clients": 10,
        "round": round_,
        "tps": tps,
        "transactions": int(tps * 5),
        "failed": failed,
        "aborted_clients": 0,
        "error": None,
        "duration": 5,
        "latency_avg_ms": 0.5,
        "latency_p99_ms": 1.0,
        "proxy_cpu_us_per_tx": cpu,
        "machine_cpu_us_per_tx": 100.0,
    }


ROUNDS = [
    # round 0: the machine is fast; round 1: slow for everyone; round 2: an outlier for pyproxy.
    _run("direct", 0, 40_000, 0),
    _run("pgbouncer", 0, 25_000, 16.0),
    _run("pyproxy", 0, 24_000, 19.2),
    _run("pyproxy", 1, 15_000, 20.0),
    _run("pgbouncer", 1, 16_000, 16.0),
    _run("direct", 1, 30_000, 0),
    _run("pgbouncer", 2, 24_000, 15.0),
    _run("direct", 2, 39_000, 0),
    _run("pyproxy", 2, 12_000, 30.0, failed=2),
]


def test_ratios_are_medians_of_each_rounds_own_ratio() -> None:
    (row,) = summarize(ROUNDS)
    assert row["rounds"] == 3
    # per-round ratios 0.96, 0.9375, 0.5: the median is the middle one, not the ratio of medians
    assert row["tps_pyproxy_vs_pgbouncer"] == 15_000 / 16_000
    assert row["tps_pyproxy_vs_pgbouncer_range"] == [0.5, 24_000 / 25_000]
    assert row["pyproxy_tps"] == 15_000
    assert row["pgbouncer_tps"] == 24_000
    assert row["direct_tps"] == 39_000
    assert row["cpu_pyproxy_vs_pgbouncer"] == 20.0 / 16.0
    # failures are never averaged away
    assert row["pyproxy_failed"] == 2


def test_report_shows_rounds_and_fails_on_a_failed_transaction_in_any_round() -> None:
    results = {
        "kind": "full",
        "command": "python -m bench.run",
        "started": "2026-01-01T00:00:00",
        "elapsed_s": 60.0,
        "machine": {
            "nproc": 2,
            "cpu_model": "cpu",
            "ram_gib": 1,
            "kernel": "k",
            "postgresql": "15",
            "pgbench": "pgbench",
            "python": "3.11",
        },
        "settings": {"scale": 1, "duration_s": 5, "repeat": 3, "pool_size": 20},
        "runs": ROUNDS,
    }
    text = markdown(results)
    assert "3 rounds per cell" in text
    assert "0.50 to 0.96" in text
    failed = {what: passed for what, passed, _ in checks(results)}
    assert failed["0 failed transactions in every run"] is False
