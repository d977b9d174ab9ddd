"""`--baseline REF`: a commit's pyproxy source, extracted to a temporary directory, is what the
benchmark's second pyproxy and bench.hotpath's child really run."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bench import hotpath
from bench.baseline import REPO_ROOT, Baseline, BaselineError, materialise
from bench.targets import POOL_NAMES, PyproxyProcess
from tests.support.pgcluster import APP_DB, PgServer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def head() -> Iterator[Baseline]:
    """HEAD's pyproxy, extracted as a baseline."""
    with materialise("HEAD") as baseline:
        yield baseline


def test_materialise_extracts_the_commits_pyproxy_package_and_removes_it_after() -> None:
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    with materialise("HEAD") as baseline:
        assert baseline.commit == commit and commit.startswith(baseline.short)
        assert baseline.name == f"pyproxy@{baseline.short}"
        assert (baseline.package / "net" / "client.py").is_file()
        assert not (baseline.source / "bench").exists()  # only the package: bench stays ours
        source = baseline.source
    assert not source.exists()
    with pytest.raises(BaselineError, match="not a commit"), materialise("no-such-ref-anywhere"):
        pass


def _query(port: int, pg: PgServer) -> int:
    dsn = (
        f"host=127.0.0.1 port={port} user={pg.superuser} password={pg.superuser_password} "
        f"dbname={POOL_NAMES['transaction']} connect_timeout=10"
    )
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT 6 * 7").fetchone()
    assert row is not None
    return int(row[0])


def test_the_baseline_pyproxy_runs_the_extracted_source(
    head: Baseline, pg: PgServer, tmp_path: Path
) -> None:
    # A marker only the extracted copy has: the child prints it when it imports that copy.
    marker = f"baseline-marker-{uuid.uuid4().hex}"
    init = head.package / "__init__.py"
    init.write_text(init.read_text() + f"\nprint({marker!r}, flush=True)\n")
    proc = PyproxyProcess(
        tmp_path, pg.host, pg.port, pg.superuser, pg.superuser_password, 2, APP_DB,
        name=head.name, source=head.source, stem="baseline",
    )  # fmt: skip
    try:
        target = proc.start()
        assert target.name == head.name
        assert target.module == head.package.resolve()
        assert marker in (tmp_path / "baseline.log").read_text()
        assert _query(target.port, pg) == 42
    finally:
        proc.stop()


def test_the_working_trees_pyproxy_says_it_runs_the_working_tree(
    pg: PgServer, tmp_path: Path
) -> None:
    proc = PyproxyProcess(
        tmp_path, pg.host, pg.port, pg.superuser, pg.superuser_password, 2, APP_DB
    )
    try:
        target = proc.start()
        assert target.name == "pyproxy"
        assert target.module == (REPO_ROOT / "pyproxy").resolve()
    finally:
        proc.stop()


def test_a_child_that_imports_another_pyproxy_does_not_count_as_started(
    head: Baseline, pg: PgServer, tmp_path: Path
) -> None:
    proc = PyproxyProcess(
        tmp_path, pg.host, pg.port, pg.superuser, pg.superuser_password, 2, APP_DB,
        name=head.name, source=head.source,
    )  # fmt: skip
    proc.expected = tmp_path / "elsewhere" / "pyproxy"  # as if it had found the wrong package
    try:
        with pytest.raises(RuntimeError, match=f"runs the pyproxy package in {head.package}"):
            proc.start()
        assert proc.proc is not None and proc.proc.poll() is not None  # stopped, not left over
    finally:
        proc.stop()


def test_a_baseline_directory_without_pyproxy_does_not_start(pg: PgServer, tmp_path: Path) -> None:
    # The child finds whichever pyproxy is installed (or none): never good enough.
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = PyproxyProcess(
        tmp_path, pg.host, pg.port, pg.superuser, pg.superuser_password, 2, APP_DB,
        name="pyproxy@nothing", source=empty,
    )  # fmt: skip
    try:
        with pytest.raises(RuntimeError, match="pyproxy"):
            proc.start()
        assert proc.proc is not None and proc.proc.poll() is not None  # stopped, not left over
    finally:
        proc.stop()


def test_hotpath_measures_the_baseline_in_a_child_running_its_source(head: Baseline) -> None:
    module, rows = hotpath.measure_baseline(head, 100)
    assert module == head.package.resolve()
    assert len(rows) == len(hotpath.MODES) * len(hotpath.SITUATIONS) * len(hotpath.PROTOCOLS)
    assert all("error" not in r and 100 < r["instructions"] < 10_000 for r in rows), rows


def test_hotpath_says_clearly_when_the_baseline_lacks_what_it_drives(head: Baseline) -> None:
    (head.package / "net" / "state.py").unlink()
    with pytest.raises(hotpath.BaselineUnmeasurable) as caught:
        hotpath.measure_baseline(head, 100)
    text = str(caught.value)
    assert f"the baseline {head.name}" in text and "lacks something" in text
    assert "pyproxy.net.state" in text
    assert f"git show {head.short}:bench/hotpath.py" in text
