"""Writing a benchmark's results: results.json, a markdown report and a bar chart."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.baseline import NAME_PREFIX
from bench.plan import GATED_CLIENTS, GATED_MODES, GATED_PROTOCOLS

Row = dict[str, Any]
TARGET_LABELS = {
    "direct": "direct",
    "pyproxy": "pyproxy",
    "pgbouncer": "PgBouncer",
    "relay": "bare relay",
}
MODE_SHORT = {"transaction": "tx", "session": "session", "statement": "stmt"}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def find(
    runs: Iterable[Row], target: str, mode: str | None, protocol: str, clients: int, round_: int = 0
) -> Row | None:
    for run in runs:
        key = (run["target"], run["mode"], run["protocol"], run["clients"], run.get("round", 0))
        if key == (target, mode, protocol, clients, round_):
            return run
    return None


def rounds_of(
    runs: Iterable[Row], target: str, mode: str | None, protocol: str, clients: int
) -> dict[int, Row]:
    """The runs of one target in one cell, by round."""
    return {
        run.get("round", 0): run
        for run in runs
        if (run["target"], run["mode"], run["protocol"], run["clients"])
        == (target, mode, protocol, clients)
    }


def median(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _paired(mine: dict[int, Row], theirs: dict[int, Row], key: str) -> list[float | None]:
    """Per-round ratios of `key`: each run compared with the other target's run of its round."""
    return [ratio(run.get(key), theirs.get(r, {}).get(key)) for r, run in mine.items()]


def _bounds(values: list[float | None]) -> list[float] | None:
    """[lowest, highest] of the known values when there are at least two of them."""
    known = [v for v in values if v is not None]
    return [min(known), max(known)] if len(known) > 1 else None


def baseline_name(runs: Iterable[Row]) -> str | None:
    """The target name of pyproxy at the baseline commit (`pyproxy@<commit>`), if it ran."""
    return next((r["target"] for r in runs if r["target"].startswith(NAME_PREFIX)), None)


def label(target: str) -> str:
    return TARGET_LABELS.get(target, target)


def summarize(runs: list[Row]) -> list[Row]:
    """One row per (mode, protocol, clients) cell with the targets side by side.

    With several rounds per cell, figures are medians over the rounds and ratios are medians of
    each round's ratio (a round's targets ran back to back, so they saw the same machine).
    Like direct, the bare relay has no pool mode: its runs serve every mode of their
    (protocol, clients), and its figures are None where it did not run. The `baseline_*`
    figures are those of pyproxy at the baseline commit (`--baseline`), None where it did not
    run; `*_pyproxy_vs_baseline` are new/baseline, with their range over the rounds.
    """
    base_name = baseline_name(runs)
    seen: list[tuple[str, str, int]] = []
    for run in runs:
        cell = (run["mode"], run["protocol"], run["clients"])
        if run["mode"] is not None and cell not in seen:
            seen.append(cell)
    rows = []
    for mode, protocol, clients in seen:
        direct = rounds_of(runs, "direct", None, protocol, clients)
        proxy = rounds_of(runs, "pyproxy", mode, protocol, clients)
        bouncer = rounds_of(runs, "pgbouncer", mode, protocol, clients)
        relay = rounds_of(runs, "relay", None, protocol, clients)
        base = rounds_of(runs, base_name, mode, protocol, clients) if base_name else {}
        vs_bouncer = [v for v in _paired(proxy, bouncer, "tps") if v is not None]
        tps_vs_base = _paired(proxy, base, "tps")
        cpu_vs_base = _paired(proxy, base, "proxy_cpu_us_per_tx")
        rows.append(
            {
                "mode": mode,
                "protocol": protocol,
                "clients": clients,
                "rounds": len(proxy),
                "direct_tps": median(r["tps"] for r in direct.values()),
                "pgbouncer_tps": median(r["tps"] for r in bouncer.values()),
                "pyproxy_tps": median(r["tps"] for r in proxy.values()),
                "tps_pyproxy_vs_pgbouncer": median(vs_bouncer),
                "tps_pyproxy_vs_pgbouncer_range": (
                    [min(vs_bouncer), max(vs_bouncer)] if len(vs_bouncer) > 1 else None
                ),
                "tps_pyproxy_vs_direct": median(_paired(proxy, direct, "tps")),
                "pgbouncer_cpu_us": median(r["proxy_cpu_us_per_tx"] for r in bouncer.values()),
                "pyproxy_cpu_us": median(r["proxy_cpu_us_per_tx"] for r in proxy.values()),
                "cpu_pyproxy_vs_pgbouncer": median(_paired(proxy, bouncer, "proxy_cpu_us_per_tx")),
                "pyproxy_failed": (sum(_failures(r) for r in proxy.values()) if proxy else None),
                "relay_tps": median(r["tps"] for r in relay.values()),
                "relay_cpu_us": median(r["proxy_cpu_us_per_tx"] for r in relay.values()),
                "tps_relay_vs_pgbouncer": median(_paired(relay, bouncer, "tps")),
                "cpu_relay_vs_pgbouncer": median(_paired(relay, bouncer, "proxy_cpu_us_per_tx")),
                "pyproxy_latency_avg_ms": median(r["latency_avg_ms"] for r in proxy.values()),
                "pyproxy_latency_p99_ms": median(r["latency_p99_ms"] for r in proxy.values()),
                "baseline_tps": median(r["tps"] for r in base.values()),
                "baseline_latency_avg_ms": median(r["latency_avg_ms"] for r in base.values()),
                "baseline_latency_p99_ms": median(r["latency_p99_ms"] for r in base.values()),
                "baseline_cpu_us": median(r["proxy_cpu_us_per_tx"] for r in base.values()),
                "baseline_failed": sum(_failures(r) for r in base.values()) if base else None,
                "tps_pyproxy_vs_baseline": median(tps_vs_base),
                "tps_pyproxy_vs_baseline_range": _bounds(tps_vs_base),
                "cpu_pyproxy_vs_baseline": median(cpu_vs_base),
                "cpu_pyproxy_vs_baseline_range": _bounds(cpu_vs_base),
            }
        )
    return rows


def _failures(run: Row) -> int:
    return (
        int(run.get("failed") or 0)
        + int(run.get("aborted_clients") or 0)
        + (1 if run.get("error") else 0)
    )


def checks(results: Row) -> list[tuple[str, bool | None, str]]:
    """The issue's acceptance figures: (what, passed or None when not measured, detail)."""
    summary = summarize(results["runs"])
    found: list[tuple[str, bool | None, str]] = []
    gated = [
        r
        for r in summary
        if r["mode"] in GATED_MODES
        and r["protocol"] in GATED_PROTOCOLS
        and r["clients"] in GATED_CLIENTS
    ]
    tps = [r["tps_pyproxy_vs_pgbouncer"] for r in gated]
    found.append(
        _check(
            "pyproxy/PgBouncer TPS >= 0.9 (transaction, simple+extended, c=10/50/200)",
            tps,
            lambda v: v >= 0.9,
        )
    )
    cpu = [r["cpu_pyproxy_vs_pgbouncer"] for r in gated]
    found.append(_check("pyproxy CPU/tx <= 1.2x PgBouncer's (same cells)", cpu, lambda v: v <= 1.2))
    measured = [r for r in results["runs"] + results.get("connection_rate", [])]
    failed = sum(_failures(r) for r in measured)
    found.append(
        (
            "0 failed transactions in every run",
            failed == 0 if measured else None,
            f"{failed} failed",
        )
    )
    big = [r for r in results["runs"] if r["target"] == "pyproxy" and r["clients"] >= 1000]
    big_ok = bool(big) and all(_failures(r) == 0 and r["transactions"] > 0 for r in big)
    found.append(
        (
            "1,000 clients through a pool of 20 with 0 errors",
            big_ok if big else None,
            f"{len(big)} runs",
        )
    )
    idle = [r for r in results.get("idle_rss", []) if r["target"] == "pyproxy"]
    per_client = [r["bytes_per_client"] for r in idle]
    found.append(
        _check("<= 3 KB RSS per idle client (pyproxy)", per_client, lambda v: v <= 3072, "{:.0f} B")
    )
    conn = {r["target"]: r for r in results.get("connection_rate", [])}
    rate = ratio(conn.get("pyproxy", {}).get("tps"), conn.get("direct", {}).get("tps"))
    found.append(
        _check("pgbench -C through pyproxy >= 5x direct", [rate], lambda v: v >= 5, "{:.1f}x")
    )
    return found


def _check(
    what: str, values: list[float | None], ok: Any, fmt: str = "{:.2f}"
) -> tuple[str, bool | None, str]:
    known = [v for v in values if v is not None]
    if not known:
        return (what, None, "not measured")
    detail = ", ".join(fmt.format(v) for v in known)
    return (what, all(ok(v) for v in known) and len(known) == len(values), detail)


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}".replace(",", " ")


def _rounds_text(repeat: int) -> str:
    if repeat <= 1:
        return "one round per cell"
    return (
        f"{repeat} rounds per cell (figures are medians over the rounds; ratios are medians of "
        "each round's ratio)"
    )


def _spread(bounds: list[float] | None) -> str:
    return f"{bounds[0]:.2f} to {bounds[1]:.2f}" if bounds else "-"


def _failed_cell(run: Row) -> str:
    text = str(run.get("failed") or 0)
    if run.get("aborted_clients"):
        text += f" ({run['aborted_clients']} clients aborted)"
    if run.get("error"):
        text += " (error: " + str(run["error"]).splitlines()[-1].replace("|", "/")[:80] + ")"
    return text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown(results: Row) -> str:
    machine = results["machine"]
    settings = results["settings"]
    out = [
        f"# pyproxy benchmark ({results['kind']} mode)",
        "",
        f"Command: `{results['command']}`  ",
        f"Started {results['started']}, took {results['elapsed_s'] / 60:.1f} min.",
        "",
        "## Machine",
        "",
        f"- {machine['nproc']} CPUs: {machine['cpu_model']}; {machine['ram_gib']} GiB RAM; "
        f"kernel {machine['kernel']}; {machine.get('os') or ''}",
        f"- PostgreSQL {machine['postgresql']}; {machine['pgbench']}; "
        f"{machine.get('pgbouncer') or 'PgBouncer not installed'}",
        f"- Python {machine['python']}; uvloop {machine.get('uvloop') or 'not installed'}; "
        f"pyproxy event loop: {results.get('pyproxy_event_loop') or 'unknown'}",
        *_source_lines(results),
        "",
        "## Settings",
        "",
        f"pgbench -S (select-only), scale {settings['scale']}, -j 2, "
        f"{settings['duration_s']} s per run, {_rounds_text(settings.get('repeat', 1))}, "
        f"pool size {settings['pool_size']}; pgbench, PostgreSQL and the proxy share the "
        "machine's CPUs.",
        "",
        *[f"- {note}" for note in results.get("notes", [])],
        "",
    ]
    out += ["## Acceptance figures", ""]
    for what, passed, detail in checks(results):
        mark = {True: "PASS", False: "FAIL", None: "n/a"}[passed]
        out.append(f"- **{mark}** {what}: {detail}")
    out += ["", "## pyproxy against PgBouncer and direct", ""]
    out += _table(
        [
            "mode",
            "protocol",
            "clients",
            "direct TPS",
            "PgBouncer TPS",
            "pyproxy TPS",
            "pyproxy/PgBouncer TPS",
            "range over rounds",
            "pyproxy/direct TPS",
            "PgBouncer CPU µs/tx",
            "pyproxy CPU µs/tx",
            "pyproxy/PgBouncer CPU",
        ],
        [
            [
                r["mode"],
                r["protocol"],
                str(r["clients"]),
                _num(r["direct_tps"]),
                _num(r["pgbouncer_tps"]),
                _num(r["pyproxy_tps"]),
                _num(r["tps_pyproxy_vs_pgbouncer"], 2),
                _spread(r["tps_pyproxy_vs_pgbouncer_range"]),
                _num(r["tps_pyproxy_vs_direct"], 2),
                _num(r["pgbouncer_cpu_us"], 1),
                _num(r["pyproxy_cpu_us"], 1),
                _num(r["cpu_pyproxy_vs_pgbouncer"], 2),
            ]
            for r in summarize(results["runs"])
        ],
    )
    from bench.metrics_cost import section as metrics_cost_section  # it reads this module

    out += _baseline_section(results) + metrics_cost_section(results) + _floor_section(results)
    base_name = baseline_name(results["runs"])
    out += ["", "## Every run (in the order run)", ""]
    out += _table(
        [
            "round",
            "target",
            "mode",
            "protocol",
            "clients",
            "TPS",
            "avg ms",
            "p99 ms",
            "failed",
            "proxy CPU µs/tx",
            "machine CPU µs/tx",
            "pyproxy/PgBouncer TPS",
            "pyproxy/direct TPS",
            "pyproxy/PgBouncer CPU",
            *(["pyproxy/baseline TPS", "pyproxy/baseline CPU"] if base_name else []),
        ],
        [_run_row(run, results["runs"], base_name) for run in results["runs"]],
    )
    out += _connection_section(results) + _idle_section(results)
    if results.get("errors"):
        out += ["", "## Errors", "", *[f"- {e}" for e in results["errors"]]]
    return "\n".join(out) + "\n"


def _source_lines(results: Row) -> list[str]:
    """Which pyproxy code ran: the working tree's and, with `--baseline`, the baseline's."""
    source = results.get("pyproxy_source")
    if not source:
        return []
    lines = [f"- pyproxy: working tree at {source['describe']} ({source.get('module') or '?'})"]
    base = results.get("baseline")
    if base:
        lines.append(
            f"- {base['target']}: commit {base['commit']} (`--baseline {base['ref']}`), "
            f"run from {base.get('module') or '?'}"
        )
    return lines


def _baseline_section(results: Row) -> list[str]:
    """pyproxy beside its baseline commit, in the cells where both ran."""
    base_name = baseline_name(results["runs"])
    rows = [r for r in summarize(results["runs"]) if r["baseline_tps"] is not None]
    if base_name is None or not rows:
        return []
    out = [
        "",
        f"## pyproxy against its baseline ({base_name})",
        "",
        f"{base_name} is pyproxy's source at that commit, run with the same config on its own "
        "port, beside pyproxy in the same rounds: the two run one right after the other, "
        "which goes first changing from round to round and cell to cell. Ratios are "
        "pyproxy/baseline (this tree over the baseline): TPS above 1 and CPU below 1 mean this "
        "tree does better. Each ratio is the median of the rounds' own ratios, with its range "
        "over the rounds.",
        "",
    ]
    out += _table(
        [
            "mode",
            "protocol",
            "clients",
            "baseline TPS",
            "pyproxy TPS",
            "pyproxy/baseline TPS",
            "range",
            "baseline avg ms",
            "pyproxy avg ms",
            "baseline p99 ms",
            "pyproxy p99 ms",
            "baseline CPU µs/tx",
            "pyproxy CPU µs/tx",
            "pyproxy/baseline CPU",
            "range",
        ],
        [
            [
                r["mode"],
                r["protocol"],
                str(r["clients"]),
                _num(r["baseline_tps"]),
                _num(r["pyproxy_tps"]),
                _num(r["tps_pyproxy_vs_baseline"], 2),
                _spread(r["tps_pyproxy_vs_baseline_range"]),
                _num(r["baseline_latency_avg_ms"], 3),
                _num(r["pyproxy_latency_avg_ms"], 3),
                _num(r["baseline_latency_p99_ms"], 3),
                _num(r["pyproxy_latency_p99_ms"], 3),
                _num(r["baseline_cpu_us"], 1),
                _num(r["pyproxy_cpu_us"], 1),
                _num(r["cpu_pyproxy_vs_baseline"], 2),
                _spread(r["cpu_pyproxy_vs_baseline_range"]),
            ]
            for r in rows
        ],
    )
    tps = [r["tps_pyproxy_vs_baseline"] for r in rows]
    cpu = [r["cpu_pyproxy_vs_baseline"] for r in rows]
    tail = []
    if len(rows) > 1:
        tail.append(
            f"Over the {len(rows)} cells: pyproxy/baseline TPS {_overall(tps)}; "
            f"CPU {_overall(cpu)}."
        )
    failed = sum(r["baseline_failed"] or 0 for r in rows)
    if failed:
        tail.append(f"The baseline had {failed} failed transactions or aborted clients.")
    return out + (["", " ".join(tail)] if tail else [])


def _overall(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    return f"median {statistics.median(known):.2f} ({_spread([min(known), max(known)])})"


def _floor_section(results: Row) -> list[str]:
    """The bare relay next to PgBouncer and pyproxy, in the transaction-mode cells it ran in."""
    rows = [
        r
        for r in summarize(results["runs"])
        if r["mode"] == "transaction" and r["relay_tps"] is not None
    ]
    if not rows:
        return []
    out = [
        "",
        "## Floor: a bare Python byte relay",
        "",
        "The relay (bench/relay.py) does no pooling and no protocol parsing: it opens one "
        "PostgreSQL connection per client and copies bytes, so its CPU per transaction is the "
        "lower bound of Python per-transaction work on this machine, not a competitor.",
        "",
    ]
    out += _table(
        [
            "protocol",
            "clients",
            "PgBouncer TPS",
            "relay TPS",
            "relay/PgBouncer TPS",
            "pyproxy/PgBouncer TPS",
            "relay CPU µs/tx",
            "pyproxy CPU µs/tx",
            "relay/PgBouncer CPU",
        ],
        [
            [
                r["protocol"],
                str(r["clients"]),
                _num(r["pgbouncer_tps"]),
                _num(r["relay_tps"]),
                _num(r["tps_relay_vs_pgbouncer"], 2),
                _num(r["tps_pyproxy_vs_pgbouncer"], 2),
                _num(r["relay_cpu_us"], 1),
                _num(r["pyproxy_cpu_us"], 1),
                _num(r["cpu_relay_vs_pgbouncer"], 2),
            ]
            for r in rows
        ],
    )
    return out


def _run_row(run: Row, runs: list[Row], base_name: str | None = None) -> list[str]:
    tps_b = tps_d = cpu_b = tps_base = cpu_base = None
    round_ = run.get("round", 0)
    if run["target"] == "pyproxy":
        cell = (run["protocol"], run["clients"], round_)
        bouncer = find(runs, "pgbouncer", run["mode"], *cell) or {}
        direct = find(runs, "direct", None, *cell) or {}
        tps_b, tps_d = ratio(run["tps"], bouncer.get("tps")), ratio(run["tps"], direct.get("tps"))
        cpu_b = ratio(run["proxy_cpu_us_per_tx"], bouncer.get("proxy_cpu_us_per_tx"))
        base = (find(runs, base_name, run["mode"], *cell) if base_name else None) or {}
        tps_base = ratio(run["tps"], base.get("tps"))
        cpu_base = ratio(run["proxy_cpu_us_per_tx"], base.get("proxy_cpu_us_per_tx"))
    return [
        str(round_ + 1),
        label(run["target"]),
        run["mode"] or "-",
        run["protocol"],
        str(run["clients"]),
        _num(run["tps"]),
        _num(run["latency_avg_ms"], 3),
        _num(run["latency_p99_ms"], 3),
        _failed_cell(run),
        _num(run["proxy_cpu_us_per_tx"], 1),
        _num(run["machine_cpu_us_per_tx"], 1),
        _num(tps_b, 2),
        _num(tps_d, 2),
        _num(cpu_b, 2),
        *([_num(tps_base, 2), _num(cpu_base, 2)] if base_name else []),
    ]


def _connection_section(results: Row) -> list[str]:
    runs = results.get("connection_rate", [])
    if not runs:
        return []
    direct = next((r["tps"] for r in runs if r["target"] == "direct"), None)
    title = (
        f"## Connection setup: pgbench -C -S, c=10, {runs[0]['duration']} s "
        "(a new client connection per transaction; proxies in transaction mode)"
    )
    out = ["", title, ""]
    out += _table(
        [
            "target",
            "connections/s",
            "avg connection ms",
            "failed",
            "proxy CPU µs/connection",
            "vs direct",
        ],
        [
            [
                label(r["target"]),
                _num(r["tps"]),
                _num(r["connection_avg_ms"], 3),
                _failed_cell(r),
                _num(r["proxy_cpu_us_per_tx"], 1),
                _num(ratio(r["tps"], direct), 2),
            ]
            for r in runs
        ],
    )
    return out


def _idle_section(results: Row) -> list[str]:
    rows = results.get("idle_rss", [])
    if not rows:
        return []
    out = ["", "## Idle clients: logged in, holding no server", ""]
    mib = 1024 * 1024
    out += _table(
        [
            "target",
            "clients",
            "logged in",
            "RSS before MiB",
            "RSS after MiB",
            "bytes per client",
            "login time s",
            "error",
        ],
        [
            [
                label(r["target"]),
                str(r["clients"]),
                str(r["logged_in"]),
                _num(r["rss_before"] / mib, 1),
                _num(r["rss_after"] / mib, 1),
                _num(r["bytes_per_client"]),
                _num(r["login_seconds"], 2),
                r.get("error") or "",
            ]
            for r in rows
        ],
    )
    return out


def draw_chart(results: Row, path: Path) -> None:
    """Grouped bars: TPS of each target in every (mode, protocol, clients) cell, pyproxy's
    baseline commit included when it ran; the bare relay, where it ran, as a thin dashed line
    across its cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summarize(results["runs"])
    if not rows:
        return
    series = [
        ("direct", "direct_tps", "#888888"),
        ("PgBouncer", "pgbouncer_tps", "#4c72b0"),
        ("pyproxy", "pyproxy_tps", "#dd8452"),
    ]
    base_name = baseline_name(results["runs"])
    if base_name:
        series.append((base_name, "baseline_tps", "#f2c19b"))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(rows) + 2), 5))
    for index, (name, key, color) in enumerate(series):
        xs = [i + (index - (len(series) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [r[key] or 0 for r in rows], width, label=name, color=color)
    relay = [(i, r["relay_tps"]) for i, r in enumerate(rows) if r["relay_tps"] is not None]
    if relay:
        ax.hlines(
            [tps for _, tps in relay],
            [i - 0.4 for i, _ in relay],
            [i + 0.4 for i, _ in relay],
            colors="#2f7d32",
            linestyles="dashed",
            linewidth=1.2,
            label="bare relay",
        )
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(
        [f"{MODE_SHORT[r['mode']]}\n{r['protocol']}\nc={r['clients']}" for r in rows], fontsize=8
    )
    ax.set_ylabel("TPS (pgbench -S)")
    pool = results["settings"]["pool_size"]
    ax.set_title(f"pgbench -S TPS, pool size {pool}, {results['machine']['nproc']} CPUs")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(results: Row, out_dir: Path) -> bool:
    """results.json, results.md and results.png in `out_dir`; False when there is no chart
    because matplotlib (the `bench` extra) is not installed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results["summary"] = summarize(results["runs"])
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown(results))
    try:
        draw_chart(results, out_dir / "results.png")
    except ModuleNotFoundError as exc:
        print(f"no chart: {exc} (pip install -e '.[bench]')", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Re-render results.md and results.png from a results.json: `python -m bench.report DIR`."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        print("usage: python -m bench.report RESULTS_DIR", file=sys.stderr)
        return 2
    out_dir = Path(args[0])
    write_all(json.loads((out_dir / "results.json").read_text()), out_dir)
    print((out_dir / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
