"""Soak samples, the rule deciding whether RSS, fds and p99 stayed flat, and the report."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


@dataclass
class Sample:
    """pyproxy and the active clients at ``t_s`` seconds into the load; the query figures cover
    the interval since the previous sample (none in the start sample, taken before the load)."""

    t_s: float
    rss_bytes: int
    open_fds: int
    idle_alive: int  # idle clients still connected
    queries: int = 0
    errors: int = 0
    interval_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    proxy_cpu_s: float = 0.0  # CPU seconds pyproxy used in the interval

    @property
    def qps(self) -> float:
        return self.queries / self.interval_s if self.interval_s else 0.0

    @property
    def proxy_cpu_pct(self) -> float:
        return 100 * self.proxy_cpu_s / self.interval_s if self.interval_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "qps": self.qps, "proxy_cpu_pct": self.proxy_cpu_pct}


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Rule:
    """Flat = the last sample is within these growths of the baseline, the first sample taken
    after ``warmup_s`` of load (pools filled, caches and allocator warm)."""

    warmup_s: float = 30.0
    rss_growth: float = 0.10
    fds_growth: float = 0.10
    p99_growth: float = 0.50  # latency on a shared machine is noisier than memory

    def describe(self) -> str:
        return (
            f"baseline = first sample after {self.warmup_s:g} s of load, end = last sample; "
            f"flat when end <= baseline x {1 + self.rss_growth:.2f} for RSS, "
            f"x {1 + self.fds_growth:.2f} for open fds, x {1 + self.p99_growth:.2f} for p99 latency"
        )


@dataclass
class Check:
    metric: str
    baseline: float | None
    end: float | None
    limit: float | None
    flat: bool | None  # None: not enough samples to say

    @property
    def change(self) -> float | None:
        if self.baseline in (None, 0) or self.end is None:
            return None
        return self.end / self.baseline - 1


@dataclass
class Verdict:
    rule: Rule
    baseline_t_s: float | None
    end_t_s: float | None
    checks: list[Check] = field(default_factory=list)

    @property
    def flat(self) -> bool | None:
        """True when every metric stayed flat, False when one grew, None when unknown."""
        if any(c.flat is False for c in self.checks):
            return False
        if not self.checks or any(c.flat is None for c in self.checks):
            return None
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.describe(),
            "rule_values": asdict(self.rule),
            "baseline_t_s": self.baseline_t_s,
            "end_t_s": self.end_t_s,
            "flat": self.flat,
            "checks": [{**asdict(c), "change": c.change} for c in self.checks],
        }


def _check(metric: str, baseline: float | None, end: float | None, growth: float) -> Check:
    if baseline is None or end is None:
        return Check(metric, baseline, end, None, None)
    limit = baseline * (1 + growth)
    return Check(metric, baseline, end, limit, end <= limit)


def flatness(samples: Sequence[Sample], rule: Rule) -> Verdict:
    """Compare the last sample with the first one taken after the warm-up (interval samples
    only: the start sample has no load yet). Needs two interval samples."""
    loaded = [s for s in samples if s.interval_s > 0]
    if len(loaded) < 2:
        return Verdict(rule, None, None)
    after_warmup = [s for s in loaded[:-1] if s.t_s >= rule.warmup_s]
    baseline = after_warmup[0] if after_warmup else loaded[0]
    end = loaded[-1]
    checks = [
        _check("rss_bytes", baseline.rss_bytes, end.rss_bytes, rule.rss_growth),
        _check("open_fds", baseline.open_fds, end.open_fds, rule.fds_growth),
        _check("p99_ms", baseline.p99_ms, end.p99_ms, rule.p99_growth),
    ]
    return Verdict(rule, baseline.t_s, end.t_s, checks)


# --- the report ----------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(s: Sample) -> str:
    return (
        f"| {s.t_s:.0f} | {s.rss_bytes / MIB:.1f} | {s.open_fds} | {s.idle_alive} | "
        f"{s.queries:,} | {s.qps:,.0f} | {_ms(s.p50_ms)} | {_ms(s.p99_ms)} | {s.errors} | "
        f"{s.proxy_cpu_pct:.0f} |"
    )


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == "rss_bytes":
        return f"{value / MIB:.1f} MiB"
    if metric == "p99_ms":
        return f"{value:.2f} ms"
    return f"{value:.0f}"


def check_line(c: Check) -> str:
    """One metric's verdict: baseline -> end (change), limit, flat or not."""
    word = {True: "flat", False: "GREW", None: "unknown"}[c.flat]
    change = "" if c.change is None else f" ({c.change:+.1%})"
    return (
        f"{c.metric}: {_value(c.metric, c.baseline)} -> {_value(c.metric, c.end)}{change}, "
        f"limit {_value(c.metric, c.limit)}: {word}"
    )


def markdown(report: dict[str, Any], samples: Sequence[Sample], verdict: Verdict) -> str:
    settings = report["settings"]
    verdict_word = {True: "stayed flat", False: "did NOT stay flat", None: "unknown"}[verdict.flat]
    lines = [
        "# pyproxy soak",
        "",
        f"`{report['command']}`, started {report['started']}, {report['elapsed_s']:.0f} s in all.",
        "",
        f"{settings['idle_clients']} idle logged-in clients and {settings['active_clients']} "
        f"active clients ({settings['workload']}) on a transaction pool of "
        f"{settings['pool_size']} for {settings['duration_s']:g} s; a sample every "
        f"{settings['interval_s']:g} s. Latency percentiles and throughput cover the interval "
        "before each sample; t = 0 is taken after every client logged in, before the load.",
        "",
        "| t (s) | RSS (MiB) | open fds | idle alive | queries | q/s | p50 (ms) | p99 (ms) "
        "| errors | pyproxy CPU % |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(_row(s) for s in samples),
        "",
        f"## Verdict: RSS, fds and p99 {verdict_word}",
        "",
        f"Rule: {verdict.rule.describe()}.",
        "",
        *(f"- {check_line(c)}" for c in verdict.checks),
        "",
        f"Errors: {report['errors']['total']} failed queries; idle clients dropped: "
        f"{report['errors']['idle_dropped']}; idle logins failed: "
        f"{report['errors']['idle_login_failed']}.",
    ]
    lines += [f"- {text}" for text in report["errors"]["first"]]
    machine = report.get("machine") or {}
    if machine:
        lines += [
            "",
            f"Machine: {machine.get('nproc')} CPUs ({machine.get('cpu_model')}), "
            f"{machine.get('ram_gib')} GiB, PostgreSQL {machine.get('postgresql')}, "
            f"Python {machine.get('python')}, uvloop {machine.get('uvloop')}, pyproxy on "
            f"{report.get('pyproxy_event_loop')}.",
        ]
    return "\n".join(lines) + "\n"


def write_report(
    report: dict[str, Any], samples: Sequence[Sample], verdict: Verdict, out_dir: Path
) -> tuple[Path, Path]:
    """soak.json and soak.md in ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {**report, "samples": [s.to_dict() for s in samples], "verdict": verdict.to_dict()}
    json_path, md_path = out_dir / "soak.json", out_dir / "soak.md"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text(markdown(report, samples, verdict))
    return md_path, json_path
