"""Worker processes ([proxy] workers = 2): one budget per pool over both workers, cancels that
reach the owning worker, SIGHUP and SIGTERM for all, a killed worker replaced."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psycopg
import pytest

from pyproxy.errors import PgError
from tests.support.console_client import ConsoleClient
from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import CLUSTER_ID, SCRAM_PASSWORD, SCRAM_USER
from tests.support.toml_config import REPO_ROOT
from tests.support.toml_config import SUBPROCESS_ENV as ENV

BOUND = 10.0
WORKER_BITS = 0x3F  # the low bits of a cancel key's process id name the worker


def config(pg: PgServer, state: Path, pools: dict[str, int], shutdown: float = 5) -> str:
    tables = "".join(
        f'\n[[clusters.pools]]\nname = "{name}"\ndb = "{APP_DB}"\nuser = "{SCRAM_USER}"\n'
        f'size = {size}\nmode = "transaction"\n'
        for name, size in pools.items()
    )
    return f"""
[proxy]
listen = "127.0.0.1:0"
shutdown_timeout = {shutdown}
workers = 2
admin_users = ["{SCRAM_USER}"]

[admin]
listen = "127.0.0.1:0"
allow_no_token = true
state_path = "{state}"

[[clusters]]
id = "{CLUSTER_ID}"
host = "{pg.host}"
port = {pg.port}
max_connections = 60

[[clusters.users]]
name = "{SCRAM_USER}"
password = "{SCRAM_PASSWORD}"
{tables}"""


@dataclass
class Supervised:
    proc: asyncio.subprocess.Process
    port: int
    admin_port: int
    path: Path
    log: Path
    pools: dict[str, int] = field(default_factory=dict)

    def dsn(self, pool: str) -> str:
        return f"postgresql://{SCRAM_USER}:{SCRAM_PASSWORD}@127.0.0.1:{self.port}/{pool}"

    async def connect(self, pool: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn(pool), statement_cache_size=0, timeout=BOUND)

    async def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.admin_port}/metrics"
        return await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )

    async def metric(self, name: str, worker: int) -> float:
        found = re.search(rf'^{name}\{{worker="{worker}"\}} (\S+)$', await self.metrics(), re.M)
        assert found is not None, name
        return float(found.group(1))

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(p) for p in children.split()]

    def worker_pid(self, index: int) -> int:
        """The process of worker ``index`` (``... pyproxy.workers.worker SOCKET INDEX LEVEL``)."""
        for pid in self.workers():
            args = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
            if args[-3:-2] == [str(index)]:
                return pid
        raise AssertionError(f"no worker {index}")

    async def wait_log(self, needle: str, count: int = 1) -> None:
        deadline = time.monotonic() + BOUND
        while self.log.read_text().count(needle) < count:
            assert time.monotonic() < deadline, f"{needle!r} not logged:\n{self.log.read_text()}"
            await asyncio.sleep(0.02)


Start = Callable[[dict[str, int]], Awaitable[Supervised]]


@pytest.fixture
async def supervise(pg: PgServer, tmp_path: Path) -> AsyncIterator[Start]:
    procs: list[asyncio.subprocess.Process] = []

    async def start(pools: dict[str, int]) -> Supervised:
        path = tmp_path / "pyproxy.toml"
        path.write_text(config(pg, tmp_path / "state.db", pools))
        log = tmp_path / "pyproxy.log"
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pyproxy", "serve", "-c", str(path),
                cwd=REPO_ROOT, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=err,
            )  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        found = re.search(r"listening on [\d.]+:(\d+), admin API on [\d.]+:(\d+)", line)
        assert found is not None, line + log.read_text()
        return Supervised(proc, int(found[1]), int(found[2]), path, log, dict(pools))

    yield start
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
            proc.kill()
            await proc.wait()


class Backends:
    """Samples how many backends the pools' user has open while a test runs."""

    def __init__(self, pg: PgServer) -> None:
        self.pg = pg
        self.counts: list[int] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Backends:
        self.conn = await asyncpg.connect(
            self.pg.dsn(self.pg.superuser, self.pg.superuser_password, APP_DB)
        )
        self._task = asyncio.create_task(self._watch())
        return self

    async def count(self, active: bool = False) -> int:
        state = " and state = 'active'" if active else ""
        sql = f"select count(*) from pg_stat_activity where usename = $1{state}"
        async with self._lock:
            return int(await self.conn.fetchval(sql, SCRAM_USER))

    async def _watch(self) -> None:
        while not self._stop.is_set():
            self.counts.append(await self.count())
            await asyncio.sleep(0.005)

    def restart(self) -> None:
        self.counts.clear()

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task
        await self.conn.close()


async def test_forty_clients_over_two_workers_never_see_more_than_three_backends(
    supervise: Start, pg: PgServer
) -> None:
    sup = await supervise({"tpool": 3})

    async def client() -> int:
        conn = await sup.connect("tpool")
        try:
            for _ in range(5):
                await conn.fetchval("select pg_sleep(0.2)")
            return 5
        finally:
            await conn.close()

    async with Backends(pg) as backends:
        done = await asyncio.gather(*(client() for _ in range(40)))
    assert done == [5] * 40
    assert 0 < max(backends.counts) <= 3
    assert await sup.metric("pyproxy_worker_clients_accepted_total", 0) > 0
    assert await sup.metric("pyproxy_worker_clients_accepted_total", 1) > 0
    text = await sup.metrics()
    assert 'pyproxy_pool_transactions_total{pool="tpool"} 200' in text
    shares = re.findall(
        r'^pyproxy_worker_pool_share\{worker="\d",pool="tpool"\} (\d+)$', text, re.M
    )
    assert len(shares) == 2 and sum(map(int, shares)) <= 3


async def by_worker(
    sup: Supervised, pool: str, each: int
) -> dict[int, list[psycopg.AsyncConnection]]:
    """``each`` connections on each worker (the cancel key tells which worker took one)."""
    got: dict[int, list[psycopg.AsyncConnection]] = {0: [], 1: []}
    spare = []
    for _ in range(200):
        if all(len(v) >= each for v in got.values()):
            break
        conn = await psycopg.AsyncConnection.connect(sup.dsn(pool), autocommit=True)
        owner = got[conn.info.backend_pid & WORKER_BITS]
        (owner if len(owner) < each else spare).append(conn)
    for conn in spare:
        await conn.close()
    assert all(len(v) == each for v in got.values()), "the kernel never chose one worker"
    return got


async def test_idle_servers_of_one_worker_move_to_the_other_whose_clients_wait(
    supervise: Start, pg: PgServer
) -> None:
    sup = await supervise({"tpool": 3})
    conns = await by_worker(sup, "tpool", 3)
    try:
        # Worker 0 opens all three servers, then leaves them idle.
        await asyncio.gather(*(c.execute("select pg_sleep(0.3)") for c in conns[0]))
        async with Backends(pg) as backends:
            started = time.monotonic()
            await asyncio.gather(*(c.execute("select pg_sleep(1)") for c in conns[1]))
            took = time.monotonic() - started
        assert max(backends.counts) <= 3
        # The three ran side by side on worker 1: the capacity moved well within the second.
        assert took < 1.9, took  # one server fewer would take 2 s
    finally:
        for conn in conns[0] + conns[1]:
            await conn.close()


async def test_cancels_on_new_connections_reach_the_right_query_on_either_worker(
    supervise: Start,
) -> None:
    sup = await supervise({"cpool": 20})
    conns = await by_worker(sup, "cpool", 10)
    targets = conns[0][:5] + conns[1][:5]
    bystanders = conns[0][5:] + conns[1][5:]
    slowest = 0.0
    try:
        for _ in range(30):
            sleeping = [asyncio.create_task(c.execute("select pg_sleep(20)")) for c in targets]
            steady = [
                asyncio.create_task(c.execute("select 42, pg_sleep(0.4)")) for c in bystanders
            ]
            await asyncio.sleep(0.15)

            async def cancel(conn: psycopg.AsyncConnection, task: asyncio.Task[object]) -> float:
                started = time.monotonic()
                await conn.cancel_safe(timeout=2)
                with pytest.raises(psycopg.errors.QueryCanceled):
                    await asyncio.wait_for(task, 2)
                return time.monotonic() - started

            took = await asyncio.gather(*map(cancel, targets, sleeping))
            slowest = max(slowest, *took)
            assert max(took) < 1.0, took
            for task in steady:
                cur = await asyncio.wait_for(task, 5)
                assert await cur.fetchone() == (42, "")
        # The kernel spreads the cancel connections too: some reached the other worker.
        forwarded = [await sup.metric("pyproxy_worker_cancels_forwarded_total", w) for w in (0, 1)]
        assert sum(forwarded) > 0
        print(f"slowest cancel: {slowest:.3f} s; forwarded by worker 0, 1: {forwarded}")
    finally:
        for conn in targets + bystanders:
            await conn.close()


async def test_sighup_with_a_smaller_size_is_honoured_by_both_workers_under_load(
    supervise: Start, pg: PgServer
) -> None:
    sup = await supervise({"tpool": 3})
    stop = asyncio.Event()

    async def client() -> int:
        conn = await sup.connect("tpool")
        runs = 0
        try:
            while not stop.is_set():
                await conn.fetchval("select pg_sleep(0.05)")
                runs += 1
        finally:
            await conn.close()
        return runs

    async with Backends(pg) as backends:
        clients = [asyncio.create_task(client()) for _ in range(20)]
        await asyncio.sleep(1.0)
        sup.path.write_text(config(pg, sup.path.parent / "state.db", {"tpool": 1}))
        sup.proc.send_signal(signal.SIGHUP)
        await sup.wait_log("configuration reloaded by 2 workers")
        await asyncio.sleep(0.5)  # busy servers beyond the new size close as they come back
        backends.restart()
        await asyncio.sleep(1.5)
        stop.set()
        runs = await asyncio.gather(*clients)
    assert all(r > 0 for r in runs)
    assert max(backends.counts) == 1
    assert 'pyproxy_pool_size{pool="tpool",mode="transaction"} 1' in await sup.metrics()


async def test_sigterm_drains_every_worker_and_leaves_no_process(supervise: Start) -> None:
    sup = await supervise({"tpool": 3})
    workers = sup.workers()
    assert len(workers) == 2
    conn = await sup.connect("tpool")
    tx = conn.transaction()
    await tx.start()
    await conn.execute("create temp table t (x int)")
    running = asyncio.create_task(conn.fetchval("select pg_sleep(0.5)"))
    await asyncio.sleep(0.1)
    sup.proc.send_signal(signal.SIGTERM)
    await running
    await tx.commit()  # the transaction under way when SIGTERM came was let finish
    assert await asyncio.wait_for(sup.proc.wait(), BOUND) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    await conn.close()


async def test_a_killed_worker_is_replaced_and_the_pool_budget_is_whole_again(
    supervise: Start, pg: PgServer
) -> None:
    sup = await supervise({"tpool": 3})
    conns = await by_worker(sup, "tpool", 2)
    victim = conns[0]
    hung = [asyncio.create_task(c.execute("select pg_sleep(30)")) for c in victim]
    await asyncio.sleep(0.3)
    pid = sup.worker_pid(0)
    os.kill(pid, signal.SIGKILL)
    for task in hung:  # the killed worker's clients get an error, not a hang
        with pytest.raises(psycopg.OperationalError):
            await asyncio.wait_for(task, BOUND)
    await sup.wait_log("worker 0 (pid")
    await sup.wait_log("worker 0 ready", count=2)
    assert await sup.metric("pyproxy_worker_restarts_total", 0) == 1
    async with Backends(pg) as backends:
        fresh = [await sup.connect("tpool") for _ in range(3)]
        deadline = time.monotonic() + BOUND
        sleeps = [asyncio.create_task(c.fetchval("select pg_sleep(2)")) for c in fresh]
        while await backends.count(active=True) < 3:  # all three servers at once: budget whole
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.gather(*sleeps)
    assert max(backends.counts) <= 3
    for conn in fresh:
        await conn.close()
    for conn in conns[0] + conns[1]:
        await conn.close()


async def test_api_changes_reach_both_workers_before_the_answer(supervise: Start) -> None:
    import httpx

    sup = await supervise({"tpool": 3})
    pools = f"http://127.0.0.1:{sup.admin_port}/v2/databases/{CLUSTER_ID}/pools"
    body = {"name": "apipool", "mode": "transaction", "size": 2, "db": APP_DB, "user": SCRAM_USER}
    async with httpx.AsyncClient(timeout=BOUND) as http:
        resp = await http.post(pools, json=body)
        assert resp.status_code == 201, resp.text
        conns = await by_worker(sup, "apipool", 2)  # served at once by both workers
        for conn in conns[0] + conns[1]:
            cur = await conn.execute("select 1")
            assert await cur.fetchone() == (1,)
        stats = (await http.get(f"{pools[: -len('/pools')]}/stats")).json()["stats"]
        (api,) = [p for p in stats["pools"] if p["name"] == "apipool"]
        assert api["clients_total"] == 4 and 1 <= api["servers_total"] <= 2
        resp = await http.delete(f"{pools}/apipool")
        assert resp.status_code == 204
        for conn in conns[0] + conns[1]:  # both workers ended the pool's clients already
            with pytest.raises(psycopg.OperationalError, match="deleted"):
                await conn.execute("select 1")
            await conn.close()


async def test_an_admin_api_that_cannot_start_stops_the_start_before_any_worker(
    pg: PgServer, tmp_path: Path
) -> None:
    path = tmp_path / "pyproxy.toml"
    text = config(pg, tmp_path / "state.db", {"tpool": 3})
    path.write_text(text.replace("allow_no_token = true\n", ""))  # and no token either
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyproxy", "serve", "-c", str(path),
        cwd=REPO_ROOT, env=ENV, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2, err.decode()
    assert b"needs a token" in err and b"worker" not in err


async def test_the_consoles_shutdown_on_any_worker_stops_them_all(supervise: Start) -> None:
    sup = await supervise({"tpool": 3})
    workers = sup.workers()
    env = dict(ENV, PGPASSWORD=SCRAM_PASSWORD)
    psql = await asyncio.create_subprocess_exec(
        "psql", "-h", "127.0.0.1", "-p", str(sup.port), "-U", SCRAM_USER, "-d", "pgbouncer",
        "-c", "SHUTDOWN", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.wait_for(psql.communicate(), BOUND)
    assert await asyncio.wait_for(sup.proc.wait(), BOUND) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def local_port(conn: psycopg.AsyncConnection) -> int:
    """The client side's port: the ``port`` column of the console's SHOW CLIENTS."""
    with socket.fromfd(conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM) as sock:
        return int(sock.getsockname()[1])


async def until_pool(pool: Callable[[], Awaitable[dict[str, str | None]]], **want: str) -> None:
    """Wait until the console's SHOW POOLS row has the figures ``want``."""
    deadline = time.monotonic() + BOUND
    while True:
        found = await pool()
        if all(found[k] == v for k, v in want.items()):
            return
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)


async def test_the_console_adds_up_and_acts_on_both_workers(supervise: Start) -> None:
    sup = await supervise({"tpool": 4})
    conns = await by_worker(sup, "tpool", 2)
    console = await ConsoleClient.open("127.0.0.1", sup.port, SCRAM_USER, SCRAM_PASSWORD)

    async def show(what: str) -> list[dict[str, str | None]]:
        return (await console.run(f"SHOW {what}")).dicts()

    async def pool() -> dict[str, str | None]:
        (found,) = [p for p in await show("POOLS") if p["database"] == "tpool"]
        return found

    try:
        for conn in conns[0] + conns[1]:  # a transaction each: two servers held on each worker
            await conn.execute("begin")
            await conn.execute("select 1")
        # Whichever worker answers the console, it reports both workers' clients and servers
        # (the spare connections by_worker closed may take a moment to leave).
        await until_pool(pool, cl_active="4", sv_active="4")
        servers = [s for s in await show("SERVERS") if s["database"] == "tpool"]
        assert len(servers) == 4 and {s["state"] for s in servers} == {"active"}
        ids = {int(c["port"] or 0): int(c["id"] or 0) for c in await show("CLIENTS")
               if c["database"] == "tpool"}  # fmt: skip
        for worker in (0, 1):  # every client is listed, its id names its worker
            assert [ids[local_port(c)] % 2 for c in conns[worker]] == [worker, worker], ids

        # KILL_CLIENT reaches the worker that has the client, whichever has the console.
        victims = [conns[0].pop(), conns[1].pop()]
        for victim in victims:
            answer = await console.run(f"KILL_CLIENT {ids[local_port(victim)]}")
            assert answer.tag == "KILL_CLIENT"
            with pytest.raises(psycopg.OperationalError):
                await victim.execute("select 1")
            await victim.close()
        with pytest.raises(PgError) as err:  # (not max + 2: that may be the console's own id)
            await console.run(f"KILL_CLIENT {10**9 + 1}")
        assert err.value.sqlstate == "3D000"
        for conn in conns[0] + conns[1]:
            await conn.execute("commit")
        left = [c for c in await show("CLIENTS") if c["database"] == "tpool"]
        assert sorted(int(c["port"] or 0) for c in left) == sorted(
            local_port(c) for c in conns[0] + conns[1]
        )

        # PAUSE holds new queries on both workers until RESUME.
        assert (await console.run("PAUSE tpool")).tag == "PAUSE"
        held = [asyncio.ensure_future(c.execute("select 1")) for c in conns[0] + conns[1]]
        await until_pool(pool, cl_waiting="2")
        assert not any(task.done() for task in held)
        (db,) = [d for d in await show("DATABASES") if d["name"] == "tpool"]
        assert db["paused"] == "1"
        assert (await console.run("RESUME tpool")).tag == "RESUME"
        await asyncio.wait_for(asyncio.gather(*held), BOUND)
        # Two commits and two queries after RESUME, on two workers: counted together.
        (totals,) = [t for t in await show("STATS_TOTALS") if t["database"] == "tpool"]
        assert int(totals["xact_count"] or 0) >= 4, totals
    finally:
        await console.close()
        for conn in conns[0] + conns[1]:
            await conn.close()
