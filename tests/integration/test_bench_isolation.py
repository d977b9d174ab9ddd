"""`python -m bench.isolation` end to end at tiny sizes: checks run, figures reported, exit 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.toml_config import REPO_ROOT, SUBPROCESS_ENV


@pytest.mark.timeout(300)
def test_a_tiny_run_of_two_checks_reports_their_figures(tmp_path: Path) -> None:
    out = tmp_path / "isolation"
    args = ["--only", "cancel-storm,session-aborts", "--storm-rounds", "1"]
    args += ["--storm-seconds", "1", "--storm-clients", "4", "--aborts", "20", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.isolation", *args],
        cwd=REPO_ROOT, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "isolation.json").read_text())
    assert data["passed"] is True
    assert [c["name"] for c in data["checks"]] == ["cancel-storm", "session-aborts"]
    storm, aborts = data["checks"]
    assert storm["figures"]["rounds"] == 1
    assert storm["figures"]["bystander_queries"] > 0
    assert storm["figures"]["bystanders_cancelled"] == 0
    assert aborts["figures"]["aborts"] == 20
    assert aborts["figures"]["servers_checked"] >= 20
    assert aborts["figures"]["leaks"] == 0
    assert all(c["failures"] == [] and c["error"] is None for c in data["checks"])
    text = (out / "isolation.md").read_text()
    assert "| cancel-storm | pass |" in text and "| session-aborts | pass |" in text
    assert "session-aborts: pass" in proc.stdout and "report:" in proc.stdout
