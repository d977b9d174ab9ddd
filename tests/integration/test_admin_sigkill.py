"""SIGKILL of `pyproxy serve` while a client creates and deletes pools: no acknowledged loss."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pyproxy.admin.store import StateStore
from tests.support.pgcluster import APP_DB, USERS, PgServer
from tests.support.proxy import CLUSTER_ID

TOKEN = "dop_v1_sigkill-test-token"
ROUNDS = 15
TIME_BOUND = 60.0  # seconds for all rounds together
REPO = Path(__file__).resolve().parents[2]
POOLS = f"/v2/databases/{CLUSTER_ID}/pools"


def free_low_port() -> int:
    """A free port below the ephemeral range (servers must not bind 32768-60999)."""
    for _ in range(100):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below 32000")


def write_config(path: Path, pg: PgServer, admin_port: int, state: Path) -> None:
    users = "".join(
        f'[[clusters.users]]\nname = "{name}"\npassword = "{password}"\n'
        for name, password in USERS.values()
    )
    path.write_text(
        f"""
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"
state_path = "{state}"

[[clusters]]
id = "{CLUSTER_ID}"
host = "{pg.host}"
port = {pg.port}
max_connections = 5000
{users}
"""
    )


@dataclass
class Ledger:
    """What the API acknowledged, and what was in flight when the process died."""

    live: set[str] = field(default_factory=set)  # acknowledged created, not deleted
    deleted: set[str] = field(default_factory=set)  # acknowledged deleted
    uncertain: set[str] = field(default_factory=set)  # request sent, no answer
    counter: int = 0


async def churn(http: httpx.AsyncClient, ledger: Ledger, round_: int) -> None:
    """Create pools and delete some, recording each answer, until the server dies."""
    while True:
        ledger.counter += 1
        name = f"r{round_}-pool-{ledger.counter}"
        ledger.uncertain.add(name)
        try:
            body = {"name": name, "mode": "transaction", "size": 1, "db": APP_DB}
            resp = await http.post(POOLS, json=body)
        except httpx.TransportError:
            return
        assert resp.status_code == 201, resp.text
        ledger.uncertain.discard(name)
        ledger.live.add(name)
        if ledger.counter % 3 == 0:
            victim = sorted(ledger.live)[0]
            ledger.live.discard(victim)
            ledger.uncertain.add(victim)
            try:
                resp = await http.delete(f"{POOLS}/{victim}")
            except httpx.TransportError:
                return
            assert resp.status_code == 204, resp.text
            ledger.uncertain.discard(victim)
            ledger.deleted.add(victim)


async def wait_healthy(http: httpx.AsyncClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"pyproxy exited with {proc.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            if (await http.get("/healthz")).status_code == 200:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"pyproxy did not come up:\n{log.read_text()}")


async def test_sigkill_loop_keeps_every_acknowledged_pool(pg: PgServer, tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    config = tmp_path / "pyproxy.toml"
    admin_port = free_low_port()
    write_config(config, pg, admin_port, state)
    ledger = Ledger()
    rng = random.Random(1234)
    started = time.monotonic()
    rounds = 0
    headers = {"Authorization": f"Bearer {TOKEN}"}
    base = f"http://127.0.0.1:{admin_port}"
    while rounds < ROUNDS and time.monotonic() - started < TIME_BOUND:
        log = tmp_path / f"pyproxy-{rounds}.log"
        with log.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pyproxy", "serve", "-c", str(config)],
                cwd=REPO,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
                await wait_healthy(http, proc, log)
                listed = {p["name"] for p in (await http.get(POOLS)).json()["pools"]}
                assert ledger.live <= listed, f"acknowledged pools lost: {ledger.live - listed}"
                assert not (ledger.deleted & listed), "acknowledged deletes came back"
                # in-flight changes may have landed or not; from here on the server's list is
                # the truth for them
                ledger.live |= listed & ledger.uncertain
                ledger.deleted |= ledger.uncertain - listed
                ledger.uncertain.clear()

                client = asyncio.create_task(churn(http, ledger, rounds))
                await asyncio.sleep(rng.uniform(0.05, 0.6))
                os.kill(proc.pid, signal.SIGKILL)
                await asyncio.wait_for(client, 15)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        rounds += 1
    assert rounds >= 5, "too few kill rounds fit in the time bound"
    assert ledger.counter > 3 * rounds, "the client made too few changes"
    stored = {p.name for _, p in StateStore(str(state)).load()}
    assert ledger.live <= stored
    assert not (ledger.deleted & stored)
