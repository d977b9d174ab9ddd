"""The isolation benchmark's bookkeeping: requirements, verdicts, report, command line, runner.

Also the pure pieces of the scenarios: abort plans, leak findings, split plans, the config text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from pathlib import Path

import pytest

from bench import isolation
from bench.isolation import NAMES, parse_args
from bench.isolation_aborts import ENDINGS, STATE, AbortPlan, leaks, plan_abort, state_sql
from bench.isolation_checks import pieces, split_plan
from bench.isolation_report import CheckResult, Requirement, exit_code, markdown, write_report
from bench.isolation_world import toml_text


def storm(bystanders_cancelled: int = 0, queries: int = 900) -> CheckResult:
    result = CheckResult("cancel-storm", "cancels never reach a bystander", 200.0)
    result.figures.update(bystander_queries=queries, bystanders_cancelled=bystanders_cancelled)
    result.require("bystander_queries", ">", 0)
    result.require("bystanders_cancelled", "==", 0)
    result.elapsed_s = 26.4
    return result


def test_requirements_compare_the_named_figure_and_a_missing_figure_fails() -> None:
    figures = {"leaks": 0, "success_ratio_pct": 99.4}
    assert Requirement("leaks", "==", 0).met(figures)
    assert not Requirement("leaks", ">", 0).met(figures)
    assert Requirement("success_ratio_pct", ">=", 99).met(figures)
    assert not Requirement("success_ratio_pct", ">=", 99.5).met(figures)
    assert Requirement("leaks", "<=", 0).met(figures)
    assert not Requirement("errors", "==", 0).met(figures)  # never measured: not a pass
    with pytest.raises(ValueError, match="unknown comparison"):
        Requirement("leaks", "=", 0)


def test_a_check_passes_only_when_every_requirement_holds_and_it_completed() -> None:
    assert storm().passed and storm().failures() == []
    cancelled = storm(bystanders_cancelled=2)
    assert not cancelled.passed
    assert cancelled.failures() == ["bystanders_cancelled == 0 not met: bystanders_cancelled = 2"]
    idle = storm(queries=0)  # a check that did nothing proves nothing
    assert idle.failures() == ["bystander_queries > 0 not met: bystander_queries = 0"]
    late = storm()
    late.error = "did not finish within its time bound of 200 s"
    assert late.failures() == ["did not complete: did not finish within its time bound of 200 s"]
    empty = CheckResult("x", "y", 1.0)
    empty.require("leaks", "==", 0)
    assert empty.failures() == ["leaks == 0 not met: leaks = missing"]


def test_the_exit_code_is_0_only_when_some_check_ran_and_all_passed() -> None:
    assert exit_code([storm(), storm()]) == 0
    assert exit_code([storm(), storm(bystanders_cancelled=1)]) == 1
    assert exit_code([]) == 1


def test_counters_and_notes() -> None:
    result = CheckResult("x", "y", 1.0)
    result.add("leaks")
    result.add("leaks", 2)
    assert result.figures == {"leaks": 3}
    for i in range(5):
        result.note("same text")
        result.note(f"text {i}", limit=3)
    assert result.notes == ["same text", "text 0", "text 1"]
    result.notes.clear()
    result.note("AdminShutdownError: terminating connection\nDETAIL:  pyproxy dropped it")
    assert result.notes == ["AdminShutdownError: terminating connection DETAIL: pyproxy dropped it"]


def test_the_report_shows_each_check_its_figures_and_why_it_failed(tmp_path: Path) -> None:
    failed = storm(bystanders_cancelled=2)
    failed.figures["sleepers_cancelled"] = 1234
    failed.settings["pool"] = "transaction mode, size 4"
    failed.note("bystander cancelled: QueryCanceledError: canceling statement due to user request")
    report = {
        "command": "python -m bench.isolation",
        "commit": "abc1234",
        "started": "2025-01-01T00:00:00+00:00",
        "elapsed_s": 600.0,
        "load_average": {"start": [0.5, 0.25, 1.0], "end": [2.0, 1.5, 1.25]},
    }
    text = markdown(report, [storm(), failed])
    assert "at commit abc1234" in text and "a check FAILED" in text
    assert (
        "| cancel-storm | pass | bystander_queries > 0 (900), bystanders_cancelled == 0 (0)" in text
    )
    assert "| cancel-storm | FAIL |" in text
    assert "| bystanders cancelled | 2 | == 0 | **no** |" in text
    assert "| sleepers cancelled | 1,234 |  |  |" in text
    assert "- bystanders_cancelled == 0 not met: bystanders_cancelled = 2" in text
    assert "Settings: pool transaction mode, size 4." in text
    assert "canceling statement due to user request" in text
    assert "at the start: 0.50, 0.25, 1.00; at the end: 2.00, 1.50, 1.25." in text
    md_path, json_path = write_report(report, [storm(), failed], tmp_path / "out")
    assert md_path.read_text() == text
    data = json.loads(json_path.read_text())
    assert data["passed"] is False and data["commit"] == "abc1234"
    assert [c["passed"] for c in data["checks"]] == [True, False]
    reqs = data["checks"][1]["requirements"]
    assert reqs[1] == {
        "figure": "bystanders_cancelled", "op": "==", "bound": 0,
        "text": "bystanders_cancelled == 0", "met": False,
    }  # fmt: skip
    assert data["checks"][1]["failures"] == failed.failures()
    assert "every check passed" in markdown(report, [storm()])


def test_only_picks_checks_in_the_documented_order_and_rejects_unknown_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse_args([]).only == list(NAMES)
    args = parse_args(["--only", "kill-loop,cancel-storm", "--only", "split-points"])
    assert args.only == ["cancel-storm", "split-points", "kill-loop"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "cancel_storm"])
    assert "unknown check cancel_storm" in capsys.readouterr().err


def test_the_defaults_are_the_full_sizes() -> None:
    args = parse_args([])
    assert (args.storm_rounds, args.storm_seconds, args.storm_clients) == (5, 5.0, 20)
    assert (args.aborts, args.hostile, args.random_splits) == (2000, 5000, 1000)
    assert (args.kill_seconds, args.admin_slow, args.admin_seconds) == (30.0, 200, 30.0)


def test_abort_plans_fit_their_ending_and_cover_every_state_and_ending() -> None:
    rng = random.Random(5)
    plans = [plan_abort(rng, n) for n in range(2000)]
    assert {p.ending for p in plans} == set(ENDINGS)
    assert {kind for p in plans for kind in p.state} == set(STATE)
    for p in plans:
        if p.ending in ("close_in_transaction", "idle_transaction_timeout"):
            assert "transaction" in p.state and "running_query" not in p.state
        if p.ending in ("query_timeout", "killed_mid_query"):
            assert p.state[-1] == "running_query"
        assert p.reset is False or p.ending == "killed_mid_query"
    assert plan_abort(random.Random(9), 1) == plan_abort(random.Random(9), 1)


def test_state_statements_are_named_per_abort_so_aborts_never_wait_for_each_other() -> None:
    plan = AbortPlan(17, ("listen", "transaction", "advisory_lock", "running_query"), "disconnect")
    assert state_sql(plan) == ["LISTEN leaked_17", "BEGIN", "SELECT pg_advisory_lock(7000017)"]
    assert "killed_mid_query (reset)" in AbortPlan(1, (), "killed_mid_query", True).describe()


def test_leaks_name_every_kind_of_state_left_behind() -> None:
    assert leaks(["42", "4MB", "0", "0", "0", "f"], "I", "4MB") == {}
    found = leaks(["42", "7MB", "1", "2", "3", "t"], "T", "4MB")
    assert list(found) == ["work_mem", "temp_table", "listen", "advisory_lock", "transaction"]
    assert found["listen"] == "listening on 2 channels"
    # ReadyForQuery says "in a transaction" even where now() could not tell
    assert list(leaks(["42", "4MB", "0", "0", "0", "f"], "T", "4MB")) == ["transaction"]


def test_split_plans_cover_every_cut_then_random_three_way_cuts() -> None:
    cuts = split_plan(10, 50, random.Random(1))
    assert cuts[:9] == [(i,) for i in range(1, 10)]
    assert len(cuts) == 59
    for a, b in cuts[9:]:
        assert 1 <= a < b <= 9
    data = bytes(range(10))
    for c in cuts:
        parts = pieces(data, c)
        assert b"".join(parts) == data and all(parts) and len(parts) == len(c) + 1


def test_toml_text_writes_a_config_pyproxy_reads_back() -> None:
    import tomllib

    data = {
        "proxy": {"listen": "127.0.0.1:6432", "auth_type": "trust", "shutdown_timeout": 2},
        "admin": {"enabled": False},
        "clusters": [
            {
                "id": "x", "port": 5432, "users": [{"name": "a", "password": 'p"w\\'}],
                "pools": [{"name": "p1", "size": 2, "query_timeout": 0.5}],
            }
        ],
    }  # fmt: skip
    assert tomllib.loads(toml_text(data)) == data


class FakeWorld:
    """Stands in for the PostgreSQL world: says whether PostgreSQL is still there."""

    def __init__(self, alive: list[bool]) -> None:
        self.alive = alive

    async def postgres_alive(self) -> bool:
        return self.alive.pop(0)


async def _passes(world: object, result: CheckResult, args: object) -> None:
    result.figures["leaks"] = 0
    result.require("leaks", "==", 0)


async def _hangs(world: object, result: CheckResult, args: object) -> None:
    result.figures["aborts"] = 7  # figures measured before the bound stay in the report
    await asyncio.sleep(10)


async def _crashes(world: object, result: CheckResult, args: object) -> None:
    raise RuntimeError("boom")


def _checks(*runners: object, bound: float = 5.0) -> tuple[isolation.Check, ...]:
    return tuple(
        isolation.Check(f"check-{i}", "title", run, lambda a: bound)
        for i, run in enumerate(runners)
    )


async def test_a_check_past_its_time_bound_or_crashing_fails_and_the_next_still_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(isolation, "CHECKS", _checks(_hangs, _crashes, _passes, bound=0.05))
    args = argparse.Namespace(only=["check-0", "check-1", "check-2"])
    results = await isolation.run_all(FakeWorld([True] * 3), args, lambda text: None)
    late, crashed, fine = results
    assert late.error == "did not finish within its time bound of 0 s"
    assert late.figures == {"aborts": 7} and not late.passed
    assert crashed.error == "RuntimeError: boom" and "crash:" in crashed.notes[0]
    assert fine.passed
    assert exit_code(results) == 1


async def test_checks_after_postgresql_went_away_are_reported_as_not_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(isolation, "CHECKS", _checks(_passes, _passes, _passes))
    args = argparse.Namespace(only=["check-0", "check-1", "check-2"])
    results = await isolation.run_all(FakeWorld([True, False]), args, lambda text: None)
    assert [r.error for r in results] == [
        None,
        None,
        "not run: PostgreSQL stopped during an earlier check",
    ]
    assert isolation.POSTGRES_GONE in results[1].notes
