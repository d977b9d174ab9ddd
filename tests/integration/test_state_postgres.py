"""Two `pyproxy serve` processes sharing pool state in PostgreSQL ([admin] state_dsn).

The state database is a PostgreSQL cluster of its own, so a test can stop and start it while
the test PostgreSQL behind the pools keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from pyproxy.admin.pgclient import PgClient, PgClientError, parse_dsn
from pyproxy.admin.pgstore import PgStateStore
from pyproxy.admin.store import StateStoreError
from pyproxy.errors import INVALID_PASSWORD
from pyproxy.testing.pgcluster import free_port
from tests.support.pgcluster import APP_DB, USERS, PgServer, run_sql, start_postgres
from tests.support.proxy import CLUSTER_ID

TOKEN = "dop_v1_state-test-token"
REPO = Path(__file__).resolve().parents[2]
POOLS = f"/v2/databases/{CLUSTER_ID}/pools"
USER, PASSWORD = USERS["scram"]
DIVISION_BY_ZERO = "22012"


@pytest.fixture(scope="module")
def state_pg() -> Iterator[PgServer]:
    """A PostgreSQL cluster that only holds pyproxy's state (stopped and started by tests)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def state_dsn(state_pg: PgServer) -> Iterator[str]:
    """The state database, empty: each test starts from a fresh ``pyproxy`` schema."""
    run_sql(state_pg, "DROP SCHEMA IF EXISTS pyproxy CASCADE")
    yield state_pg.dsn(state_pg.superuser, state_pg.superuser_password, "postgres")


@dataclass
class Instance:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    http: httpx.AsyncClient
    log: Path

    def dsn(self, pool: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{pool}"

    async def connect(self, pool: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn(pool), statement_cache_size=0, timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def write_config(
    path: Path, pg: PgServer, port: int, admin_port: int, state_dsn: str, workers: int = 1
) -> None:
    users = "".join(
        f'[[clusters.users]]\nname = "{name}"\npassword = "{password}"\n'
        for name, password in USERS.values()
    )
    path.write_text(
        f"""
[proxy]
listen = "127.0.0.1:{port}"
query_wait_timeout = 30
workers = {workers}

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"
state_dsn = "{state_dsn}"

[[clusters]]
id = "{CLUSTER_ID}"
host = "{pg.host}"
port = {pg.port}
max_connections = 100
{users}
"""
    )


Start = Callable[..., Awaitable[Instance]]


@pytest.fixture
async def start_instance(pg: PgServer, state_dsn: str, tmp_path: Path) -> AsyncIterator[Start]:
    """Start `pyproxy serve` processes on the shared state database; stopped at the end."""
    started: list[Instance] = []

    async def start(name: str, workers: int = 1) -> Instance:
        port, admin_port = free_port(), free_port()
        config = tmp_path / f"{name}.toml"
        write_config(config, pg, port, admin_port, state_dsn, workers)
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pyproxy", "serve", "-c", str(config)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{admin_port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=15,
        )
        inst = Instance(name, proc, port, http, log)
        started.append(inst)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"{name} exited:\n{inst.output()}"
            with contextlib.suppress(httpx.TransportError):
                # (with workers the API answers before the workers accept clients)
                if (await http.get("/healthz")).status_code == 200 and "listening" in inst.output():
                    return inst
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name} did not come up:\n{inst.output()}")

    yield start
    for inst in started:
        if inst.proc.poll() is None:
            inst.proc.send_signal(signal.SIGTERM)
    for inst in started:
        try:
            inst.proc.wait(15)
        except subprocess.TimeoutExpired:
            inst.proc.kill()
            inst.proc.wait()
        await inst.http.aclose()


async def eventually(check: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    """The first truthy result of ``check`` within ``within`` seconds (exceptions retry)."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            result = await check()
            if result:
                return result
            last = result
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {within} s (last: {last!r})")
        await asyncio.sleep(0.05)


def pool_body(name: str, size: int, mode: str = "transaction") -> dict[str, Any]:
    return {"name": name, "mode": mode, "size": size, "db": APP_DB, "user": USER}


async def backends(monitor: asyncpg.Connection) -> int:
    """Server connections of the pools' login user to appdb."""
    return int(
        await monitor.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
            APP_DB,
            USER,
        )
    )


@pytest.fixture
async def monitor(pg: PgServer) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg.dsn(pg.superuser, pg.superuser_password, "postgres"))
    try:
        yield conn
    finally:
        await conn.close()


async def test_changes_through_one_instance_reach_the_other(start_instance: Start) -> None:
    a, b = await start_instance("a"), await start_instance("b")
    resp = await a.http.post(POOLS, json=pool_body("shared-pool", 2))
    assert resp.status_code == 201, resp.text
    created = time.monotonic()

    async def query_via_b() -> bool:
        conn = await b.connect("shared-pool")
        try:
            return await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    await eventually(query_via_b, 2.0, "the pool created through A serving clients of B")
    assert time.monotonic() - created < 2.5

    change = {"size": 3, "mode": "session", "db": APP_DB}
    resp = await b.http.put(f"{POOLS}/shared-pool", json=change)
    assert resp.status_code == 204, resp.text

    async def seen_by_a() -> bool:
        pool = (await a.http.get(f"{POOLS}/shared-pool")).json()["pool"]
        return pool["size"] == 3 and pool["mode"] == "session"

    await eventually(seen_by_a, 2.0, "B's change applied by A")

    conn = await b.connect("shared-pool")
    assert await conn.fetchval("SELECT 2") == 2
    resp = await a.http.delete(f"{POOLS}/shared-pool")
    assert resp.status_code == 204, resp.text

    async def b_client_ended() -> bool:
        try:
            await conn.fetchval("SELECT 3")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return True
        return False

    await eventually(b_client_ended, 2.0, "B ending its clients of the pool deleted through A")
    await conn.close()
    assert (await b.http.get(f"{POOLS}/shared-pool")).status_code == 404


async def test_instances_together_keep_to_the_pool_size(
    start_instance: Start, monitor: asyncpg.Connection
) -> None:
    a, b = await start_instance("a"), await start_instance("b")
    resp = await a.http.post(POOLS, json=pool_body("sized-pool", 4))
    assert resp.status_code == 201, resp.text
    await eventually(lambda: _pool_known(b, "sized-pool"), 2.0, "the pool reaching instance B")
    peak = 0
    served = {"a": 0, "b": 0}
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await backends(monitor))
            await asyncio.sleep(0.02)

    async def client(inst: Instance, rounds: int) -> None:
        conn = await inst.connect("sized-pool")
        try:
            for _ in range(rounds):
                await conn.execute("SELECT pg_sleep(0.1)")
                served[inst.name] += 1
        finally:
            await conn.close()

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(client(a if i % 2 else b, 3) for i in range(20)))
    assert served == {"a": 30, "b": 30}
    assert 2 <= peak <= 4, f"{peak} backends for a pool of 4"

    # A dies without a word: within 10 s its share returns and B alone uses all 4.
    assert await servers_of(b, "sized-pool") <= 2  # its half while A lived
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait()
    killed = time.monotonic()
    clients = [asyncio.create_task(client(b, 1000)) for _ in range(8)]

    async def b_uses_all_four() -> bool:
        return await servers_of(b, "sized-pool") == 4

    try:
        await eventually(b_uses_all_four, 10.0, "B opening all 4 servers after A died")
        assert time.monotonic() - killed <= 10.5
        await asyncio.sleep(0.2)  # the watcher sees B's four
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        done.set()
        await watcher
    assert peak <= 4, f"{peak} backends for a pool of 4"


async def test_an_instance_with_workers_shares_pools_with_other_instances(
    start_instance: Start, monitor: asyncpg.Connection
) -> None:
    """A runs two worker processes, B one: the pool's size holds over all three processes, and
    a pool created through B reaches both of A's workers."""
    a, b = await start_instance("a", workers=2), await start_instance("b")
    resp = await a.http.post(POOLS, json=pool_body("sized-pool", 4))
    assert resp.status_code == 201, resp.text
    await eventually(lambda: _pool_known(b, "sized-pool"), 2.0, "the pool reaching instance B")
    peak = 0
    served = {"a": 0, "b": 0}
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await backends(monitor))
            await asyncio.sleep(0.01)

    async def client(inst: Instance) -> None:
        conn = await inst.connect("sized-pool")
        try:
            for _ in range(3):
                await conn.execute("SELECT pg_sleep(0.1)")
                served[inst.name] += 1
        finally:
            await conn.close()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(client(a if i % 2 else b) for i in range(20)))
    finally:
        done.set()
        await watcher
    assert served == {"a": 30, "b": 30}
    assert 2 <= peak <= 4, f"{peak} backends for a pool of 4"

    resp = await b.http.post(POOLS, json=pool_body("from-b", 4))
    assert resp.status_code == 201, resp.text
    created = time.monotonic()
    workers: set[int] = set()
    conns: list[asyncpg.Connection] = []

    async def both_workers_serve() -> bool:
        """Clients of A until each worker has answered one (the kernel picks the worker; the
        low 6 bits of the process id a client is given name it)."""
        conn = await a.connect("from-b")
        conns.append(conn)
        assert await conn.fetchval("SELECT 1") == 1
        workers.add(conn.get_server_pid() & 0x3F)
        return workers == {0, 1}

    try:
        await eventually(both_workers_serve, 2.0, "the pool created through B on A's workers")
        assert time.monotonic() - created < 2.5
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def test_state_database_outage_keeps_serving_and_loses_nothing(
    start_instance: Start, state_pg: PgServer
) -> None:
    a, b = await start_instance("a"), await start_instance("b")
    acknowledged = []
    for i, inst in enumerate((a, b, a)):
        # kept-0 and kept-1 (one server) follow their one client; kept-2 has one on each
        resp = await inst.http.post(POOLS, json=pool_body(f"kept-{i}", 1 + i // 2))
        assert resp.status_code == 201, resp.text
        acknowledged.append(f"kept-{i}")
    await all_known((a, b), acknowledged)
    held = [await a.connect("kept-0"), await b.connect("kept-1")]

    state_pg.stop()
    try:
        for conn in held:
            assert await conn.fetchval("SELECT 40 + 2") == 42
        fresh = await b.connect("kept-2")  # definitions still known
        assert await fresh.fetchval("SELECT 1") == 1
        await fresh.close()
        for inst in (a, b):
            resp = await inst.http.post(POOLS, json=pool_body("during-outage", 1))
            assert resp.status_code == 503, resp.text
            assert "state database" in resp.json()["message"]
            resp = await inst.http.delete(f"{POOLS}/kept-0")
            assert resp.status_code == 503, resp.text
        assert await held[0].fetchval("SELECT 7") == 7
    finally:
        state_pg.start()

    async def create_again() -> bool:
        resp = await a.http.post(POOLS, json=pool_body("after-outage", 1))
        return resp.status_code == 201

    await eventually(create_again, 10.0, "API writes working once the state database is back")
    acknowledged.append("after-outage")
    await all_known((a, b), acknowledged)
    listed = {p["name"] for p in (await b.http.get(POOLS)).json()["pools"]}
    assert listed == set(acknowledged)
    stored = run_sql(state_pg, "SELECT name FROM pyproxy.pools ORDER BY name").split()
    assert stored == sorted(acknowledged)
    for conn in held:
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()


async def servers_of(inst: Instance, pool: str) -> int:
    """Server connections ``inst`` holds for ``pool`` (its stats endpoint)."""
    stats = (await inst.http.get(f"/v2/databases/{CLUSTER_ID}/stats")).json()["stats"]
    (found,) = [p for p in stats["pools"] if p["name"] == pool]
    return int(found["servers_total"])


async def _pool_known(inst: Instance, name: str) -> bool:
    return (await inst.http.get(f"{POOLS}/{name}")).status_code == 200


async def all_known(instances: tuple[Instance, ...], names: list[str]) -> None:
    """Every instance lists every pool of ``names`` within 2 s."""

    async def known() -> bool:
        for inst in instances:
            listed = {p["name"] for p in (await inst.http.get(POOLS)).json()["pools"]}
            if not set(names) <= listed:
                return False
        return True

    await eventually(known, 2.0, f"{names} on every instance")


# ---- the state database's client and schema, in this process ----------------------------------


@pytest.mark.parametrize("kind", ["scram", "md5", "trust"])
async def test_state_client_logs_in_queries_and_hears_notifications(
    state_pg: PgServer, kind: str
) -> None:
    user, password = USERS[kind]
    heard: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    dsn = parse_dsn(state_pg.dsn(user, password, "postgres"))
    listener = await PgClient.connect(dsn, lambda c, p: heard.put_nowait((c, p)))
    talker = await PgClient.connect(dsn)
    try:
        rows = await talker.execute("SELECT $1::text || '!', $2::text, 42", "it's", None)
        assert rows == [["it's!", None, "42"]]
        await listener.simple("LISTEN state_test")
        async with talker.transaction():
            await talker.execute("SELECT pg_notify('state_test', $1)", "hello")
        assert await asyncio.wait_for(heard.get(), 2) == ("state_test", "hello")
        with pytest.raises(PgClientError) as caught:
            await talker.execute("SELECT 1/0")
        assert caught.value.sqlstate == DIVISION_BY_ZERO
        assert await talker.simple("SELECT 1; SELECT 2") == [["2"]]  # still in step
    finally:
        listener.close()
        talker.close()


async def test_state_client_wrong_password_is_refused(state_pg: PgServer) -> None:
    dsn = parse_dsn(state_pg.dsn(USER, "not-the-password", "postgres"))
    with pytest.raises(PgClientError) as caught:
        await PgClient.connect(dsn)
    assert caught.value.sqlstate == INVALID_PASSWORD


async def test_schema_is_created_once_and_a_newer_one_is_refused(state_dsn: str) -> None:
    store = PgStateStore(state_dsn)
    await store.open()
    store.close()
    again = PgStateStore(state_dsn)
    await again.open()  # the migrations are not applied twice
    again.close()
    dsn = parse_dsn(state_dsn)
    client = await PgClient.connect(dsn)
    try:
        assert await client.simple("SELECT version FROM pyproxy.migrations") == [["1"]]
        await client.simple("INSERT INTO pyproxy.migrations (version) VALUES (99)")
    finally:
        client.close()
    with pytest.raises(StateStoreError, match="version 99"):
        await PgStateStore(state_dsn).open()
