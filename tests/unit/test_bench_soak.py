"""The soak benchmark's arithmetic: percentiles, the flatness rule on synthetic samples, the
report it writes, and the open-file limit check."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from bench.soak import SoakError, ensure_fd_limit, parse_args
from bench.soak_report import Rule, Sample, flatness, markdown, percentile, write_report

MIB = 1024 * 1024


def series(
    rss_mib: list[float], fds: list[int], p99: list[float], every: float = 30.0
) -> list[Sample]:
    """A start sample (t = 0, no load) followed by one interval sample per value."""
    out = [Sample(0.0, int(rss_mib[0] * MIB), fds[0], idle_alive=5000)]
    for i, (rss, fd, p) in enumerate(zip(rss_mib[1:], fds[1:], p99, strict=True), start=1):
        out.append(
            Sample(
                t_s=i * every, rss_bytes=int(rss * MIB), open_fds=fd, idle_alive=5000,
                queries=90_000, errors=0, interval_s=every, p50_ms=p / 4, p99_ms=p,
                proxy_cpu_s=every / 2,
            )
        )  # fmt: skip
    return out


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100..1, unsorted on purpose
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_steady_figures_are_flat_and_warm_up_growth_does_not_count() -> None:
    # RSS jumps while the pool fills (t = 30), then stays within a few percent.
    samples = series(
        rss_mib=[30, 48, 50, 51, 50, 52],
        fds=[5110, 5130, 5130, 5131, 5130, 5130],
        p99=[9.0, 6.0, 6.5, 5.8, 7.0],
    )
    verdict = flatness(samples, Rule(warmup_s=60))
    assert verdict.baseline_t_s == 60 and verdict.end_t_s == 150
    assert verdict.flat is True
    assert {c.metric: c.flat for c in verdict.checks} == {
        "rss_bytes": True,
        "open_fds": True,
        "p99_ms": True,
    }
    rss = verdict.checks[0]
    assert rss.baseline == 50 * MIB and rss.end == 52 * MIB
    assert rss.change == pytest.approx(0.04)


@pytest.mark.parametrize(
    ("rss", "fds", "p99", "grew"),
    [
        ([30, 40, 42, 44, 46, 48], [100] * 6, [5.0] * 5, "rss_bytes"),  # +14 % after warm-up
        ([30] * 6, [100, 100, 100, 105, 110, 120], [5.0] * 5, "open_fds"),  # a leak: +20 %
        ([30] * 6, [100] * 6, [5.0, 5.0, 6.0, 7.0, 9.0], "p99_ms"),  # 5 -> 9 ms: +80 %
    ],
)
def test_growth_beyond_the_rule_is_reported_for_that_metric(
    rss: list[float], fds: list[int], p99: list[float], grew: str
) -> None:
    verdict = flatness(series(rss, fds, p99), Rule(warmup_s=30))
    assert verdict.flat is False
    assert [c.metric for c in verdict.checks if c.flat is False] == [grew]


def test_the_limits_come_from_the_rule() -> None:
    samples = series([30, 40, 43], [100, 100, 100], [5.0, 5.0])  # RSS +7.5 %
    assert flatness(samples, Rule(warmup_s=30, rss_growth=0.10)).flat is True
    assert flatness(samples, Rule(warmup_s=30, rss_growth=0.05)).flat is False
    assert "x 1.05 for RSS" in Rule(rss_growth=0.05).describe()


def test_too_few_samples_give_no_verdict() -> None:
    assert flatness(series([30, 40], [100, 100], [5.0]), Rule()).flat is None
    assert flatness([], Rule()).flat is None


def test_a_run_shorter_than_the_warm_up_compares_with_its_first_interval() -> None:
    verdict = flatness(series([30, 40, 41], [100, 100, 100], [5.0, 5.0]), Rule(warmup_s=300))
    assert (verdict.baseline_t_s, verdict.end_t_s, verdict.flat) == (30, 60, True)


def test_an_interval_without_queries_makes_p99_unknown_not_flat() -> None:
    samples = series([30, 40, 40], [100, 100, 100], [5.0, 5.0])
    samples[-1].p99_ms = None
    verdict = flatness(samples, Rule(warmup_s=30))
    assert verdict.checks[2].flat is None and verdict.flat is None


def test_the_report_has_every_sample_and_the_verdict(tmp_path: Path) -> None:
    samples = series([30, 48, 50, 51], [5110, 5130, 5130, 5131], [6.0, 6.5, 5.8])
    verdict = flatness(samples, Rule(warmup_s=30))
    report = {
        "command": "python -m bench.soak",
        "started": "2025-01-01T00:00:00+00:00",
        "elapsed_s": 130.0,
        "settings": {
            "idle_clients": 5000, "active_clients": 100, "pool_size": 20,
            "duration_s": 90, "interval_s": 30, "workload": "select1: SELECT 1",
        },
        "errors": {"total": 0, "idle_dropped": 0, "idle_login_failed": 0, "first": []},
    }  # fmt: skip
    text = markdown(report, samples, verdict)
    assert text.count("\n| ") == 1 + len(samples)  # the header and one row per sample
    assert "| 60 | 50.0 | 5130 | 5000 | 90,000 | 3,000 | 1.62 | 6.50 | 0 | 50 |" in text
    assert "Verdict: RSS, fds and p99 stayed flat" in text
    md_path, json_path = write_report(report, samples, verdict, tmp_path / "out")
    assert md_path.read_text() == text
    data = json.loads(json_path.read_text())
    assert [s["t_s"] for s in data["samples"]] == [0, 30, 60, 90]
    assert data["samples"][1]["qps"] == 3000 and data["samples"][1]["proxy_cpu_pct"] == 50
    assert data["verdict"]["flat"] is True and data["verdict"]["baseline_t_s"] == 30
    assert {c["metric"] for c in data["verdict"]["checks"]} == {"rss_bytes", "open_fds", "p99_ms"}


def test_the_fd_limit_is_kept_when_high_enough_and_refused_clearly_beyond_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert ensure_fd_limit(16) == soft
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files here")
    with pytest.raises(SoakError, match=r"hard limit \(ulimit -Hn\) is \d+.*fewer --idle"):
        ensure_fd_limit(hard + 1)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


def test_the_warm_up_defaults_to_one_interval_and_at_most_half_the_run() -> None:
    assert parse_args([]).warmup == 30
    assert parse_args(["--duration", "3", "--interval", "1"]).warmup == 1
    assert parse_args(["--duration", "10", "--interval", "30"]).warmup == 5
