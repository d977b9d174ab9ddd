"""What /metrics costs under load (`python -m bench.run --metrics-cost`): pyproxy as usual
([proxy] metrics on, its default) beside the same tree with `metrics = false`, in the same
rounds, in the gated cells; the cost is the proxy CPU per transaction on minus off, round by
round."""

from __future__ import annotations

from typing import Any

from bench.plan import GATED_CLIENTS, GATED_MODES, GATED_PROTOCOLS, Companion
from bench.report import _num, _table, median, ratio, rounds_of

Row = dict[str, Any]
METRICS_OFF = "pyproxy-nometrics"  # the target: this tree with [proxy] metrics = false
COMPANION = Companion(METRICS_OFF, GATED_MODES, GATED_PROTOCOLS, GATED_CLIENTS)
NOTE = (
    f"{METRICS_OFF} is this tree's pyproxy with `[proxy] metrics = false` (no transaction and "
    "query histograms, no byte counters), on its own port with the same config otherwise. It "
    "runs beside pyproxy in the same rounds and cells "
    f"({'/'.join(GATED_MODES)} mode, protocols {' and '.join(GATED_PROTOCOLS)}, "
    f"{'/'.join(map(str, GATED_CLIENTS))} clients), which of the two goes first changing from "
    "round to round; the cost of the metrics is pyproxy's CPU µs/tx minus its, per round."
)


def summarize(runs: list[Row]) -> list[Row]:
    """One row per cell where both ran: CPU µs/tx on and off (medians), the cost (median of
    the per-round differences, with their range) and TPS on/off."""
    cells: list[tuple[str, str, int]] = []
    for run in runs:
        cell = (run["mode"], run["protocol"], run["clients"])
        if run["target"] == METRICS_OFF and cell not in cells:
            cells.append(cell)
    rows = []
    for mode, protocol, clients in cells:
        on = rounds_of(runs, "pyproxy", mode, protocol, clients)
        off = rounds_of(runs, METRICS_OFF, mode, protocol, clients)
        cost: list[float] = []
        tps: list[float] = []
        for r, run in on.items():
            other = off.get(r, {})
            a, b = run.get("proxy_cpu_us_per_tx"), other.get("proxy_cpu_us_per_tx")
            if a is not None and b is not None:
                cost.append(a - b)
            t = ratio(run.get("tps"), other.get("tps"))
            if t is not None:
                tps.append(t)
        rows.append(
            {
                "mode": mode,
                "protocol": protocol,
                "clients": clients,
                "rounds": len(cost),
                "on_cpu_us": median(r["proxy_cpu_us_per_tx"] for r in on.values()),
                "off_cpu_us": median(r["proxy_cpu_us_per_tx"] for r in off.values()),
                "cost_us": median(cost),
                "cost_us_range": [min(cost), max(cost)] if len(cost) > 1 else None,
                "tps_on_vs_off": median(tps),
            }
        )
    return rows


def section(results: Row) -> list[str]:
    """The report's section, when the metrics-off target ran."""
    rows = summarize(results["runs"])
    if not rows:
        return []
    out = [
        "",
        "## Cost of the metrics (`--metrics-cost`)",
        "",
        f"pyproxy (metrics on) beside {METRICS_OFF} (`[proxy] metrics = false`), same rounds. "
        "Cost = proxy CPU µs/tx on minus off, median over the rounds (range in brackets); "
        "the budget is 1 µs per transaction.",
        "",
    ]
    out += _table(
        ["mode", "protocol", "clients", "rounds", "CPU µs/tx on", "CPU µs/tx off", "cost µs/tx",
         "TPS on/off"],
        [
            [
                r["mode"],
                r["protocol"],
                str(r["clients"]),
                str(r["rounds"]),
                _num(r["on_cpu_us"], 2),
                _num(r["off_cpu_us"], 2),
                _num(r["cost_us"], 2)
                + (
                    f" [{r['cost_us_range'][0]:+.2f}, {r['cost_us_range'][1]:+.2f}]"
                    if r["cost_us_range"]
                    else ""
                ),
                _num(r["tps_on_vs_off"], 3),
            ]
            for r in rows
        ],
    )  # fmt: skip
    overall = median(r["cost_us"] for r in rows)
    if overall is not None:
        out += ["", f"Over the {len(rows)} cells: median cost {overall:+.2f} µs per transaction."]
    return out
