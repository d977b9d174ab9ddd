"""`bench.run --baseline`: pyproxy at another commit runs beside pyproxy in the gated cells'
rounds, and the report sets the two side by side with per-round ratios."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from bench.baseline import MODULE_LINE, reported_module
from bench.plan import (
    FULL,
    QUICK,
    REFERENCES,
    Companion,
    Run,
    baseline_companion,
    build_plan,
    cells,
)
from bench.report import baseline_name, checks, markdown, summarize

BASE = "pyproxy@5c15793"
PROXIES = ("pyproxy", "pgbouncer")
GATED = {(p, c) for p in ("simple", "extended") for c in (10, 50, 200)}


def _plan(spec: Any = FULL, repeat: int = 3, **kwargs: Any) -> list[Run]:
    companions = (baseline_companion(BASE),)
    return build_plan(spec, PROXIES, set(), repeat, REFERENCES, companions, **kwargs)


def test_the_baseline_runs_once_per_round_in_the_gated_transaction_cells_only() -> None:
    plan = _plan()
    base = [r for r in plan if r.target == BASE]
    assert {r.mode for r in base} == {"transaction"}
    assert {(r.protocol, r.clients) for r in base} == GATED
    assert set(Counter((r.protocol, r.clients, r.round) for r in base).values()) == {1}
    assert len(base) == len(GATED) * 3
    # Every mode and group of the full matrix still runs; the baseline adds runs, never cells.
    assert {(m, p, c) for m, p, c in cells(FULL) if m == "transaction"} >= {
        ("transaction", p, c) for p, c in GATED
    }


def test_without_the_baseline_runs_the_plan_is_the_plan_without_a_baseline() -> None:
    # The baseline shares pyproxy's place in the rotation: every other run keeps its order.
    for spec, repeat in ((FULL, 3), (QUICK, 1)):
        plan = _plan(spec, repeat)
        without = build_plan(spec, PROXIES, set(), repeat, REFERENCES)
        assert [r for r in plan if r.target != BASE] == without


def _orders(plan: list[Run]) -> dict[tuple[str, int, int], str]:
    """Which of pyproxy and the baseline went first, by (protocol, clients, round)."""
    orders = {}
    for index, run in enumerate(plan):
        if run.target != BASE:
            continue
        mine = plan.index(Run("pyproxy", run.mode, run.protocol, run.clients, run.round))
        assert abs(mine - index) == 1, run  # back to back, nothing in between
        orders[(run.protocol, run.clients, run.round)] = "pyproxy" if mine < index else BASE
    return orders


def test_the_baseline_runs_right_beside_pyproxy_and_they_take_turns_going_first() -> None:
    for repeat in (2, 3):
        orders = _orders(_plan(FULL, repeat))
        # Every cell's rounds see both orders...
        for protocol, clients in GATED:
            firsts = {orders[(protocol, clients, r)] for r in range(repeat)}
            assert firsts == {"pyproxy", BASE}, (repeat, protocol, clients)
        # ...and over the whole plan each goes first about as often as the other.
        counts = Counter(orders.values())
        assert abs(counts["pyproxy"] - counts[BASE]) <= 2


def test_with_one_round_each_protocol_and_client_count_sees_both_orders() -> None:
    orders = _orders(_plan(QUICK, 1))
    for protocol in ("simple", "extended"):
        assert {o for (p, _, _), o in orders.items() if p == protocol} == {"pyproxy", BASE}
    for clients in (10, 50, 200):
        assert {o for (_, c, _), o in orders.items() if c == clients} == {"pyproxy", BASE}


def test_the_pair_takes_its_turn_at_the_head_of_the_lineup() -> None:
    plan = _plan()
    heads = set()
    for protocol, clients in GATED:
        for round_ in range(3):
            lineup = [
                r
                for r in plan
                if (r.protocol, r.clients, r.round) == (protocol, clients, round_)
                and r.mode in (None, "transaction")
            ]
            heads.add(lineup[0].target)
    assert {"direct", "relay", "pgbouncer"} <= heads
    assert heads & {"pyproxy", BASE}


def test_the_quick_plan_adds_six_baseline_runs() -> None:
    plan = _plan(QUICK, 1)
    base = [(r.protocol, r.clients) for r in plan if r.target == BASE]
    assert sorted(base) == sorted(GATED)
    assert len(plan) == 3 * 7 + 6 + 6  # targets of the 7 cells, the relay's 6, the baseline's 6


def test_skip_applies_to_a_companion_and_a_lone_companion_gets_a_place_of_its_own() -> None:
    companion = baseline_companion(BASE)
    skip = {(BASE, "transaction", "extended")}
    plan = build_plan(QUICK, PROXIES, skip, 1, (), (companion,))
    assert {r.protocol for r in plan if r.target == BASE} == {"simple"}
    alone = Companion("other", ("transaction",), ("simple",), (10,), beside="nobody")
    plan = build_plan(QUICK, PROXIES, set(), 1, (), (alone,))
    assert [r for r in plan if r.target == "other"] == [Run("other", "transaction", "simple", 10)]


def _run(target: str, round_: int, tps: float, cpu: float, **extra: Any) -> dict[str, Any]:
    return {
        "target": target,
        "mode": None if target == "direct" else "transaction",
        "protocol": "simple",
        "clients": 10,
        "round": round_,
        "tps": tps,
        "transactions": int(tps * 5),
        "failed": 0,
        "aborted_clients": 0,
        "error": None,
        "duration": 5,
        "latency_avg_ms": 1000 * 10 / tps,
        "latency_p99_ms": 2.0,
        "proxy_cpu_us_per_tx": cpu,
        "machine_cpu_us_per_tx": 100.0,
    } | extra


ROUNDS = [
    # round 0: the machine is fast; round 1: slow for everyone; round 2: the baseline stumbles.
    _run("direct", 0, 40_000, 0),
    _run("pgbouncer", 0, 25_000, 16.0),
    _run("pyproxy", 0, 20_000, 40.0),
    _run(BASE, 0, 21_000, 38.0),
    _run(BASE, 1, 10_000, 80.0),
    _run("pyproxy", 1, 10_000, 84.0),
    _run("pgbouncer", 1, 16_000, 20.0),
    _run("direct", 1, 30_000, 0),
    _run("pgbouncer", 2, 24_000, 15.0),
    _run("direct", 2, 39_000, 0),
    _run("pyproxy", 2, 19_000, 42.0),
    _run(BASE, 2, 12_000, 60.0, failed=3),
]


def _results(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "quick",
        "command": "python -m bench.run --quick --baseline 5c15793",
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
        "pyproxy_source": {"describe": "5a7881d", "module": "/srv/pyproxy-checkout/pyproxy"},
        "baseline": {
            "ref": "5c15793",
            "commit": "5c15793" + "0" * 33,
            "target": BASE,
            "module": "/tmp/bench-baseline-5c15793-x/pyproxy",
        },
        "runs": runs,
    }


def test_baseline_ratios_are_medians_of_each_rounds_own_ratio_with_their_range() -> None:
    assert baseline_name(ROUNDS) == BASE
    (row,) = summarize(ROUNDS)
    # per-round TPS ratios 20/21, 1.0, 19/12: the median is the middle one
    assert row["tps_pyproxy_vs_baseline"] == 1.0
    assert row["tps_pyproxy_vs_baseline_range"] == [20_000 / 21_000, 19_000 / 12_000]
    # per-round CPU ratios 40/38, 84/80, 42/60
    assert row["cpu_pyproxy_vs_baseline"] == 84.0 / 80.0
    assert row["cpu_pyproxy_vs_baseline_range"] == [42.0 / 60.0, 40.0 / 38.0]
    assert row["baseline_tps"] == 12_000 and row["pyproxy_tps"] == 19_000
    assert row["baseline_cpu_us"] == 60.0 and row["pyproxy_cpu_us"] == 42.0
    assert row["baseline_latency_avg_ms"] == 1000 * 10 / 12_000
    assert row["pyproxy_latency_avg_ms"] == 1000 * 10 / 19_000
    assert row["baseline_latency_p99_ms"] == row["pyproxy_latency_p99_ms"] == 2.0
    assert row["baseline_failed"] == 3 and row["pyproxy_failed"] == 0
    # the PgBouncer figures do not change: per-round 0.8, 0.625, 0.79
    assert row["tps_pyproxy_vs_pgbouncer"] == 19_000 / 24_000


def test_one_round_gives_ratios_without_a_range() -> None:
    (row,) = summarize([r for r in ROUNDS if r["round"] == 0])
    assert row["tps_pyproxy_vs_baseline"] == 20_000 / 21_000
    assert row["tps_pyproxy_vs_baseline_range"] is None
    assert row["cpu_pyproxy_vs_baseline_range"] is None


def test_baseline_figures_are_none_without_baseline_runs() -> None:
    runs = [r for r in ROUNDS if r["target"] != BASE]
    assert baseline_name(runs) is None
    (row,) = summarize(runs)
    for key, value in row.items():
        if "baseline" in key:
            assert value is None, key


def test_markdown_sets_pyproxy_beside_its_baseline() -> None:
    results = _results(ROUNDS)
    text = markdown(results)
    assert f"## pyproxy against its baseline ({BASE})" in text
    assert "- pyproxy: working tree at 5a7881d (/srv/pyproxy-checkout/pyproxy)" in text
    assert f"- {BASE}: commit 5c15793000" in text and "(`--baseline 5c15793`)" in text
    assert (
        "| transaction | simple | 10 | 12 000 | 19 000 | 1.00 | 0.95 to 1.58 | 0.833 | 0.526 "
        "| 2.000 | 2.000 | 60.0 | 42.0 | 1.05 | 0.70 to 1.05 |"
    ) in text
    assert "Over the" not in text  # one cell: its row says it all
    assert "The baseline had 3 failed transactions or aborted clients." in text
    # every run: the baseline under its own name; pyproxy's rows get their ratio to it
    assert f"| 1 | {BASE} | transaction | simple | 10 | 21 000 |" in text
    assert "pyproxy/baseline TPS | pyproxy/baseline CPU |" in text
    assert "| 0.95 | 1.05 |" in text  # round 1's pyproxy: 20 000 / 21 000, 40 / 38


def test_markdown_sums_the_ratios_up_over_the_cells() -> None:
    fifty = [dict(r, clients=50, tps=r["tps"] * 2) for r in ROUNDS if r["round"] == 0]
    fifty = [dict(r, tps=30_000) if r["target"] == "pyproxy" else r for r in fifty]
    text = markdown(_results(ROUNDS + fifty))
    # TPS: 1.00 at 10 clients, 30 000 / 42 000 at 50; CPU 1.05 and 40 / 38
    assert "Over the 2 cells: pyproxy/baseline TPS median 0.86 (0.71 to 1.00); " in text
    assert "CPU median 1.05 (1.05 to 1.05)." in text


def test_a_failed_baseline_transaction_fails_the_run_but_not_pyproxys_figures() -> None:
    failed = {what: passed for what, passed, _ in checks(_results(ROUNDS))}
    assert failed["0 failed transactions in every run"] is False
    clean = [dict(r, failed=0) for r in ROUNDS]
    without = [r for r in clean if r["target"] != BASE]
    # the acceptance checks are about pyproxy against PgBouncer: the baseline changes none
    assert checks(_results(clean)) == checks(_results(without))


def test_markdown_without_a_baseline_has_no_baseline_section_or_columns() -> None:
    results = _results([r for r in ROUNDS if r["target"] != BASE])
    del results["baseline"]
    text = markdown(results)
    assert "against its baseline" not in text
    assert "pyproxy/baseline" not in text
    assert "@" not in text.split("## Every run")[1]


def test_a_pyproxy_child_reports_the_package_it_imported(tmp_path: Path) -> None:
    log = f"{MODULE_LINE}{tmp_path}/pyproxy/__init__.py\nWARNING something else\n"
    assert reported_module(log) == (tmp_path / "pyproxy").resolve()
    assert reported_module("Traceback (most recent call last):\n") is None
