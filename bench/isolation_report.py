"""Isolation check results: figures, the requirements they must meet, the verdict, the report."""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

Number = int | float

_OPS: dict[str, Callable[[Number, Number], bool]] = {
    "==": operator.eq,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
}


@dataclass(frozen=True)
class Requirement:
    """``figure op bound``, e.g. ``bystanders_cancelled == 0``; a missing figure fails it."""

    figure: str
    op: str
    bound: Number

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"unknown comparison {self.op!r}; use one of {sorted(_OPS)}")

    def met(self, figures: dict[str, Number]) -> bool:
        value = figures.get(self.figure)
        return value is not None and _OPS[self.op](value, self.bound)

    def describe(self) -> str:
        return f"{self.figure} {self.op} {_number(self.bound)}"


@dataclass
class CheckResult:
    """One check: its settings, the figures it measured (filled in while it runs, so a check
    stopped by its time bound still shows how far it got) and what they must satisfy."""

    name: str
    title: str
    time_bound_s: float
    settings: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Number] = field(default_factory=dict)
    requirements: list[Requirement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what clients saw, first few of each kind
    elapsed_s: float = 0.0
    error: str | None = None  # the check did not complete: time bound, crash

    def require(self, figure: str, op: str, bound: Number) -> None:
        self.requirements.append(Requirement(figure, op, bound))

    def add(self, figure: str, amount: Number = 1) -> None:
        self.figures[figure] = self.figures.get(figure, 0) + amount

    def note(self, text: str, limit: int = 10) -> None:
        """Keep ``text`` (on one line) unless it is already kept or ``limit`` notes are."""
        text = " ".join(text.split())
        if text not in self.notes and len(self.notes) < limit:
            self.notes.append(text)

    def failures(self) -> list[str]:
        """Why the check failed, one line per reason; empty when it passed."""
        out = [f"did not complete: {self.error}"] if self.error else []
        for req in self.requirements:
            if not req.met(self.figures):
                value = self.figures.get(req.figure)
                shown = "missing" if value is None else _number(value)
                out.append(f"{req.describe()} not met: {req.figure} = {shown}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["requirements"] = [
            {**asdict(r), "text": r.describe(), "met": r.met(self.figures)}
            for r in self.requirements
        ]
        data["passed"] = self.passed
        data["failures"] = self.failures()
        return data


def exit_code(results: Sequence[CheckResult]) -> int:
    """0 when at least one check ran and every check passed, else 1."""
    return 0 if results and all(r.passed for r in results) else 1


def _number(value: Number) -> str:
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def _shown(value: Number | None) -> str:
    return "missing" if value is None else _number(value)


def verdict_word(result: CheckResult) -> str:
    return "pass" if result.passed else "FAIL"


def summary_line(result: CheckResult) -> str:
    """``name: pass (figure = value, ...) in 12 s`` with the figures its requirements name."""
    named = dict.fromkeys(r.figure for r in result.requirements)
    shown = ", ".join(f"{name} = {_shown(result.figures.get(name))}" for name in named)
    return f"{result.name}: {verdict_word(result)} ({shown}) in {result.elapsed_s:.0f} s"


def _figure_rows(result: CheckResult) -> list[str]:
    reqs: dict[str, list[Requirement]] = {}
    for req in result.requirements:
        reqs.setdefault(req.figure, []).append(req)
    names = list(result.figures) + [n for n in reqs if n not in result.figures]
    rows = []
    for name in names:
        needed = "; ".join(f"{r.op} {_number(r.bound)}" for r in reqs.get(name, []))
        met = ""
        if name in reqs:
            met = "yes" if all(r.met(result.figures) for r in reqs[name]) else "**no**"
        shown = _shown(result.figures.get(name))
        rows.append(f"| {name.replace('_', ' ')} | {shown} | {needed} | {met} |")
    return rows


def markdown(report: dict[str, Any], results: Sequence[CheckResult]) -> str:
    overall = "every check passed" if exit_code(results) == 0 else "a check FAILED"
    lines = [
        "# pyproxy isolation checks",
        "",
        f"`{report['command']}` at commit {report.get('commit') or 'unknown'}, started "
        f"{report['started']}, {report['elapsed_s']:.0f} s in all: {overall}.",
        "",
        "| check | verdict | figures that decide | time (s) | bound (s) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        deciding = ", ".join(
            f"{req.describe()} ({_shown(r.figures.get(req.figure))})" for req in r.requirements
        )
        lines.append(
            f"| {r.name} | {verdict_word(r)} | {deciding} | {r.elapsed_s:.0f} | "
            f"{r.time_bound_s:.0f} |"
        )
    for r in results:
        lines += ["", f"## {r.name}: {r.title}", ""]
        if r.settings:
            lines.append(
                "Settings: "
                + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in r.settings.items())
                + "."
            )
            lines.append("")
        lines += ["| figure | value | must be | met |", "|---|---|---|---|", *_figure_rows(r)]
        failures = r.failures()
        if failures:
            lines += ["", "Failed:", *(f"- {text}" for text in failures)]
        if r.notes:
            lines += ["", "What clients saw (first of each kind):", *(f"- {n}" for n in r.notes)]
    machine = report.get("machine") or {}
    if machine:
        lines += [
            "",
            f"Machine: {machine.get('nproc')} CPUs ({machine.get('cpu_model')}), "
            f"{machine.get('ram_gib')} GiB, PostgreSQL {machine.get('postgresql')}, "
            f"Python {machine.get('python')}, uvloop {machine.get('uvloop')}.",
        ]
    load = report.get("load_average")
    if load:
        lines += [
            "",
            "Load average (1, 5, 15 min) at the start: "
            + ", ".join(f"{v:.2f}" for v in load["start"])
            + "; at the end: "
            + ", ".join(f"{v:.2f}" for v in load["end"])
            + ".",
        ]
    return "\n".join(lines) + "\n"


def write_report(
    report: dict[str, Any], results: Sequence[CheckResult], out_dir: Path
) -> tuple[Path, Path]:
    """isolation.md and isolation.json in ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {
        **report,
        "passed": exit_code(results) == 0,
        "checks": [r.to_dict() for r in results],
    }
    md_path, json_path = out_dir / "isolation.md", out_dir / "isolation.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    md_path.write_text(markdown(report, results))
    return md_path, json_path
