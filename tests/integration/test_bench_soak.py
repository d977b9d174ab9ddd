"""`python -m bench.soak` end to end with small numbers: it runs, stops by itself and writes a
report with every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.toml_config import REPO_ROOT, SUBPROCESS_ENV

IDLE, ACTIVE, SECONDS = 50, 5, 3


def test_a_short_soak_reports_memory_fds_latency_and_a_verdict(tmp_path: Path) -> None:
    out = tmp_path / "soak"
    args = ["--duration", str(SECONDS), "--interval", "1", "--idle", str(IDLE)]
    args += ["--active", str(ACTIVE), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.soak", *args],
        cwd=REPO_ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    # 0: flat and no errors; 1: it ran but something grew (three 1 s samples can be noisy)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads((out / "soak.json").read_text())

    assert data["settings"]["idle_clients"] == IDLE
    assert data["settings"]["active_clients"] == ACTIVE
    assert data["settings"]["pool_size"] == 20
    assert data["errors"] == {"total": 0, "idle_dropped": 0, "idle_login_failed": 0, "first": []}
    samples = data["samples"]
    assert [round(s["t_s"]) for s in samples] == [0, 1, 2, 3]
    start, *loaded = samples
    assert start["idle_alive"] == IDLE and start["queries"] == 0
    # pyproxy holds at least the idle and active clients' sockets
    assert all(s["open_fds"] >= IDLE + ACTIVE and s["rss_bytes"] > 1_000_000 for s in samples)
    for s in loaded:
        assert s["queries"] > 0 and s["qps"] > 0 and s["errors"] == 0
        assert 0 < s["p50_ms"] <= s["p99_ms"]
        assert s["idle_alive"] == IDLE
    verdict = data["verdict"]
    assert verdict["flat"] in (True, False)
    assert {c["metric"] for c in verdict["checks"]} == {"rss_bytes", "open_fds", "p99_ms"}
    assert "x 1.10 for RSS" in verdict["rule"]
    text = (out / "soak.md").read_text()
    assert "## Verdict" in text and "| t (s) | RSS (MiB) | open fds |" in text
    assert "p99" in proc.stdout and "report:" in proc.stdout
