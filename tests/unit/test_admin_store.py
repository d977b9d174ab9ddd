"""The SQLite state store: round trips, order, upserts, reopening, bad files, SIGKILL safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyproxy.admin.store import StateStore, StateStoreError
from pyproxy.config import PoolConfig, PoolSettings


def pool(name: str, size: int = 5, mode: str = "transaction", user: str = "") -> PoolConfig:
    return PoolConfig(name=name, db="appdb", size=size, mode=mode, user=user, source="api")


def test_new_store_is_empty(tmp_path: Path) -> None:
    assert StateStore(str(tmp_path / "s.db")).load() == []


def test_pools_come_back_in_creation_order_with_source_api(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "s.db"))
    store.put("c1", pool("zeta", user="app"))
    store.put("c2", pool("alpha", size=3, mode="session"))
    loaded = store.load()
    assert loaded == [("c1", pool("zeta", user="app")), ("c2", pool("alpha", 3, "session"))]
    assert all(p.source == "api" for _, p in loaded)


def test_put_of_an_existing_name_updates_it_in_place(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "s.db"))
    store.put("c1", pool("first"))
    store.put("c1", pool("second"))
    store.put("c1", pool("first", size=9, mode="statement", user="u"))
    assert store.load() == [("c1", pool("first", 9, "statement", "u")), ("c1", pool("second"))]


def test_delete_removes_only_that_pool_and_ignores_unknown_names(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "s.db"))
    store.put("c1", pool("keep"))
    store.put("c1", pool("drop"))
    store.delete("drop")
    store.delete("never-existed")
    assert [p.name for _, p in store.load()] == ["keep"]


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = StateStore(path)
    store.put("c1", pool("kept"))
    store.close()
    assert [p.name for _, p in StateStore(path).load()] == ["kept"]


def test_load_applies_the_given_pool_settings(tmp_path: Path) -> None:
    store = StateStore(str(tmp_path / "s.db"))
    store.put("c1", pool("tuned"))
    settings = PoolSettings(query_wait_timeout=7.0)
    assert store.load(settings)[0][1].settings == settings


def test_a_file_that_is_not_sqlite_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateStoreError, match="cannot be used"):
        StateStore(str(path))


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(StateStoreError, match="does not exist"):
        StateStore(str(tmp_path / "nope" / "s.db"))


WRITER = """
import sys
from pyproxy.admin.store import StateStore
from pyproxy.config import PoolConfig
store = StateStore(sys.argv[1])
i = 0
while True:
    name = f"pool-{i}"
    store.put("c1", PoolConfig(name=name, db="appdb", size=1, source="api"))
    print("put", name, flush=True)
    if i % 3 == 2:
        store.delete(f"pool-{i - 1}")
        print("deleted", f"pool-{i - 1}", flush=True)
    i += 1
"""


def writer_ops() -> Iterator[tuple[str, str]]:
    """The changes WRITER makes, in order."""
    i = 0
    while True:
        yield "put", f"pool-{i}"
        if i % 3 == 2:
            yield "deleted", f"pool-{i - 1}"
        i += 1


def apply(state: set[str], op: tuple[str, str]) -> set[str]:
    verb, name = op
    return state | {name} if verb == "put" else state - {name}


def test_sigkill_during_writes_keeps_every_acknowledged_change(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    before: set[str] = set()
    for round_ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, path],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert child.stdout is not None
        acked = 0
        deadline = time.monotonic() + 0.05 + 0.03 * round_
        while time.monotonic() < deadline and child.stdout.readline():
            acked += 1
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        # Lines still in the pipe were acknowledged (committed) before the kill too.
        acked += len(child.stdout.read().splitlines())
        child.stdout.close()
        ops = writer_ops()
        state = set(before)
        for _ in range(acked):
            state = apply(state, next(ops))
        # every acknowledged change is there; at most the one write in flight went further
        found = {p.name for _, p in StateStore(path).load()}
        assert found in (state, apply(state, next(ops)))
        before = found
