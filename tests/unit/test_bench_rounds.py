"""The benchmark's plan repeats cells in rounds; its report takes medians of per-round figures."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.plan import FULL, QUICK, RELAY, MatrixSpec, Run, build_plan, cells
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
        "mode": None if target in ("direct", "relay") else "transaction",
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


def _results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
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
        "runs": runs,
    }


def test_report_shows_rounds_and_fails_on_a_failed_transaction_in_any_round() -> None:
    results = _results(ROUNDS)
    text = markdown(results)
    assert "3 rounds per cell" in text
    assert "0.50 to 0.96" in text
    failed = {what: passed for what, passed, _ in checks(results)}
    assert failed["0 failed transactions in every run"] is False


# The bare relay: a reference target that runs next to direct in some cells only.


def _lineup_of(plan: list[Run], index: int) -> list[Run]:
    """The back-to-back runs of one round that `plan[index]` belongs to (direct's lineup)."""
    run = plan[index]
    first_mode = next(
        r.mode for r in plan if (r.protocol, r.clients) == (run.protocol, run.clients) and r.mode
    )
    return [
        r
        for r in plan
        if (r.protocol, r.clients, r.round) == (run.protocol, run.clients, run.round)
        and r.mode in (None, first_mode)
    ]


def test_the_relay_runs_once_per_group_and_round_only_in_the_gated_cells() -> None:
    plan = build_plan(FULL, ("pyproxy", "pgbouncer"), set(), repeat=3, references=(RELAY,))
    relay = [r for r in plan if r.target == "relay"]
    groups = {(p, c) for _, p, c in cells(FULL)}
    expected = {(p, c) for p, c in groups if p in ("simple", "extended") and c in (10, 50, 200)}
    assert expected == {(p, c) for p in ("simple", "extended") for c in (10, 50, 200)}
    assert ("simple", 20) in groups  # the session-only group at the pool size: no relay there
    assert {(r.protocol, r.clients) for r in relay} == expected
    assert all(r.mode is None for r in relay)
    per_key = Counter((r.protocol, r.clients, r.round) for r in relay)
    assert set(per_key.values()) == {1}
    assert len(relay) == len(expected) * 3
    # The other runs are those of the plan without the relay (lineups may rotate differently).
    without = build_plan(FULL, ("pyproxy", "pgbouncer"), set(), repeat=3)
    assert Counter(r for r in plan if r.target != "relay") == Counter(without)


def test_the_relay_runs_back_to_back_with_direct_and_takes_its_turn_first() -> None:
    plan = build_plan(FULL, ("pyproxy", "pgbouncer"), set(), repeat=3, references=(RELAY,))
    for index, run in enumerate(plan):
        if run.target != "relay":
            continue
        lineup = _lineup_of(plan, index)
        assert sorted(r.target for r in lineup) == ["direct", "pgbouncer", "pyproxy", "relay"]
        positions = [plan.index(r) for r in lineup]
        assert max(positions) - min(positions) == len(lineup) - 1  # contiguous
    # Who goes first rotates from round to round, the relay included.
    simple_10 = [
        _lineup_of(plan, plan.index(Run("direct", None, "simple", 10, round_)))
        for round_ in range(3)
    ]
    firsts = [min(lineup, key=plan.index).target for lineup in simple_10]
    assert len(set(firsts)) == 3
    assert any(
        min(_lineup_of(plan, i), key=plan.index).target == "relay"
        for i, r in enumerate(plan)
        if r.target == "relay"
    )


def test_the_quick_plan_adds_the_relay_to_its_six_simple_and_extended_cells() -> None:
    plan = build_plan(QUICK, ("pyproxy", "pgbouncer"), set(), references=(RELAY,))
    relay = [(r.protocol, r.clients) for r in plan if r.target == "relay"]
    assert sorted(relay) == sorted((p, c) for p in ("simple", "extended") for c in (10, 50, 200))
    assert len(plan) == 3 * 7 + 6


# The relay's rounds against PgBouncer's (ROUNDS): TPS 1.2, 1.1, 1.5; CPU 0.5, 0.75, 0.6.
RELAY_ROUNDS = [
    _run("relay", 0, 30_000, 8.0),
    _run("relay", 1, 17_600, 12.0),
    _run("relay", 2, 36_000, 9.0),
]


def test_relay_ratios_are_medians_of_each_rounds_own_ratio() -> None:
    (row,) = summarize(ROUNDS + RELAY_ROUNDS)
    assert row["relay_tps"] == 30_000
    assert row["relay_cpu_us"] == 9.0
    # the median of the per-round ratios, not the ratio of the medians (30 000 / 24 000, 9 / 16)
    assert row["tps_relay_vs_pgbouncer"] == 30_000 / 25_000
    assert row["cpu_relay_vs_pgbouncer"] == 9.0 / 15.0
    # the pyproxy figures do not change
    assert row["tps_pyproxy_vs_pgbouncer"] == 15_000 / 16_000


def test_relay_figures_are_none_without_relay_runs() -> None:
    (row,) = summarize(ROUNDS)
    for key in ("relay_tps", "relay_cpu_us", "tps_relay_vs_pgbouncer", "cpu_relay_vs_pgbouncer"):
        assert key in row and row[key] is None


def test_markdown_has_the_floor_table_only_with_relay_figures() -> None:
    assert "Floor: a bare Python byte relay" not in markdown(_results(ROUNDS))
    with_relay = _results(ROUNDS + RELAY_ROUNDS)
    text = markdown(with_relay)
    assert "## Floor: a bare Python byte relay" in text
    assert "no pooling and no protocol parsing" in text
    assert "| simple | 10 | 24 000 | 30 000 | 1.20 | 0.94 | 9.0 | 20.0 | 0.60 |" in text
    assert "| 1 | bare relay | - | simple | 10 | 30 000 |" in text
    # the acceptance checks are about pyproxy and stay as they were
    assert checks(with_relay) == checks(_results(ROUNDS))


def test_the_floor_table_leaves_out_cells_without_a_transaction_mode_row() -> None:
    session = [dict(r, mode="session") if r["mode"] else r for r in ROUNDS + RELAY_ROUNDS]
    (row,) = summarize(session)
    assert row["mode"] == "session" and row["relay_tps"] == 30_000
    assert "Floor: a bare Python byte relay" not in markdown(_results(session))
