"""Session-mode aborts: clients that leave state and end badly; the next client checks its server.

Each aborted client leaves a random part of the session state and ends in a random way; a new
client of the same pool then checks, in one query, that the server it gets is clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from dataclasses import dataclass

import asyncpg

from bench.isolation_report import CheckResult
from bench.isolation_world import ProxyChild, World
from tests.support.extended import ExtendedClient
from tests.support.pgcluster import APP_DB
from tests.support.proxy import SCRAM_USER, TRUST_USER, pool_entry
from tests.support.wire import WireClient, error_fields, query, typed

POOL = "iso_session"
POOL_SIZE = 2
LANES = POOL_SIZE  # one client of each lane at a time: a checker never queues behind a sleeper
IDLE_TRANSACTION_TIMEOUT = 0.2
QUERY_TIMEOUT = 0.5
RUNNING_QUERY = "SELECT pg_sleep(30)"
ADVISORY_KEY_BASE = 7_000_000
READ_TIMEOUT = 10.0

STATE = ("work_mem", "temp_table", "listen", "advisory_lock", "transaction", "running_query")
ENDINGS = (
    "disconnect",  # Terminate, then close
    "close_in_transaction",  # the socket closed with a transaction open, no Terminate
    "idle_transaction_timeout",  # idle in the transaction until pyproxy ends the client
    "query_timeout",  # a query running until pyproxy ends the client
    "killed_mid_query",  # the socket closed (or reset) while a query runs
)
EXPECTED_FATAL = {"idle_transaction_timeout": "25P03", "query_timeout": "57014"}

# What the next client of the pool checks, in one query: its backend, work_mem, relations in
# its temporary schema, channels it listens on, advisory locks it holds, whether a transaction
# started before this statement (now() is the transaction's start).
CHECK_SQL = (
    "SELECT pg_backend_pid(), current_setting('work_mem'), "
    "(SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()), "
    "(SELECT count(*) FROM pg_listening_channels()), "
    "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), "
    "now() <> statement_timestamp()"
)


@dataclass(frozen=True)
class AbortPlan:
    """What one aborted client does: the state it leaves (in the order it sends it) and how
    it ends."""

    number: int
    state: tuple[str, ...]
    ending: str
    reset: bool = False  # killed_mid_query: a TCP reset instead of a FIN

    def describe(self) -> str:
        how = f"{self.ending} (reset)" if self.reset else self.ending
        return f"abort {self.number}: {how}, state [{', '.join(self.state) or 'none'}]"


def plan_abort(rng: random.Random, number: int) -> AbortPlan:
    """A random subset of the session state and a random ending that fits it: the timeouts and
    the close inside a transaction need an open transaction, the query endings a running
    query; a plain disconnect may come with either."""
    ending = rng.choice(ENDINGS)
    state = [kind for kind in STATE[:4] if rng.random() < 0.5]
    if ending in ("close_in_transaction", "idle_transaction_timeout") or rng.random() < 0.5:
        state.insert(rng.randint(0, len(state)), "transaction")
    if ending in ("query_timeout", "killed_mid_query") or (
        ending == "disconnect" and rng.random() < 0.5
    ):
        state.append("running_query")
    reset = ending == "killed_mid_query" and rng.random() < 0.5
    return AbortPlan(number, tuple(state), ending, reset)


def state_sql(plan: AbortPlan) -> list[str]:
    """The statements that leave ``plan``'s state (the running query is sent apart)."""
    n = plan.number
    sql = {
        "work_mem": "SET work_mem = '7MB'",
        "temp_table": f"CREATE TEMP TABLE leaked_{n} (x int)",
        "listen": f"LISTEN leaked_{n}",
        "advisory_lock": f"SELECT pg_advisory_lock({ADVISORY_KEY_BASE + n})",
        "transaction": "BEGIN",
    }
    return [sql[kind] for kind in plan.state if kind in sql]


def leaks(row: list[str], status: str, default_work_mem: str) -> dict[str, str]:
    """What the checker found left behind, by kind of state: ``row`` is CHECK_SQL's answer as
    text, ``status`` the ReadyForQuery status after it."""
    _pid, work_mem, temp_relations, channels, advisory, in_transaction = row
    found = {}
    if work_mem != default_work_mem:
        found["work_mem"] = f"work_mem {work_mem}"
    if temp_relations != "0":
        found["temp_table"] = f"{temp_relations} temporary relations"
    if channels != "0":
        found["listen"] = f"listening on {channels} channels"
    if advisory != "0":
        found["advisory_lock"] = f"{advisory} advisory locks held"
    if in_transaction != "f" or status != "I":
        found["transaction"] = f"inside a transaction (status {status})"
    return found


def _data_row(body: bytes) -> list[str]:
    count = struct.unpack_from("!H", body)[0]
    off, values = 2, []
    for _ in range(count):
        length = struct.unpack_from("!i", body, off)[0]
        off += 4
        values.append("NULL" if length < 0 else body[off : off + length].decode())
        off += max(length, 0)
    return values


class Aborts:
    """The check's counters and the pieces every lane shares."""

    def __init__(self, proxy: ProxyChild, result: CheckResult, default_work_mem: str) -> None:
        self.proxy = proxy
        self.result = result
        self.default_work_mem = default_work_mem
        self.last_plan: dict[int, AbortPlan] = {}  # backend pid -> the last abort that used it

    async def lane(self, numbers: range, rng: random.Random) -> None:
        for number in numbers:
            plan = plan_abort(rng, number)
            pid = await self.abort(plan, rng)
            checked = await self.check(pid)
            if "running_query" not in plan.state:
                self.result.add("aborts_without_a_running_query")
            if checked is not None and checked == pid:
                self.result.add("own_server_checked")
                if "running_query" not in plan.state:
                    self.result.add("own_server_checked_without_a_running_query")

    async def abort(self, plan: AbortPlan, rng: random.Random) -> int | None:
        """Run ``plan``; the aborted client's backend pid (None if it never got one)."""
        r = self.result
        r.add("aborts")
        r.add(f"ending_{plan.ending}")
        for kind in plan.state:
            r.add(f"with_{kind}")
        wire = await WireClient.open("127.0.0.1", self.proxy.port)
        try:
            return await self._abort(wire, plan, rng)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            r.add("aborter_errors")
            r.note(f"{plan.describe()}: {type(exc).__name__}: {exc}")
            return None
        finally:
            if plan.reset:
                with contextlib.suppress(OSError):
                    sock = wire.writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                wire.writer.transport.abort()
            else:
                await wire.close()

    async def _abort(self, wire: WireClient, plan: AbortPlan, rng: random.Random) -> int | None:
        r = self.result
        login = await wire.login(TRUST_USER, POOL)
        if not login or login[-1][0] != "Z":
            r.add("aborter_errors")
            r.note(f"{plan.describe()}: login failed: {login}")
            return None
        statements = ["SELECT pg_backend_pid()", *state_sql(plan)]
        running = "running_query" in plan.state
        await wire.send(b"".join(query(s) for s in [*statements, *([RUNNING_QUERY] * running)]))
        pid = None
        for sql in statements:
            for kind, body in await wire.read_until("Z", READ_TIMEOUT):
                if kind == "D" and pid is None:
                    pid = int(_data_row(body)[0])
                elif kind == "E":
                    r.add("aborter_errors")
                    r.note(f"{plan.describe()}: {sql!r} failed: {error_fields(body)}")
        if pid is not None:
            self.last_plan[pid] = plan
        if running:
            await asyncio.sleep(rng.uniform(0, 0.02))  # on its way, or already running
        if plan.ending == "disconnect":
            await wire.send(typed("X", b""))
        elif plan.ending in EXPECTED_FATAL:
            await self._ended_by_pyproxy(wire, plan)
        return pid

    async def _ended_by_pyproxy(self, wire: WireClient, plan: AbortPlan) -> None:
        """Wait for pyproxy to end the client: a FATAL with the timeout's SQLSTATE, then EOF."""
        started = time.monotonic()
        messages = await wire.read_until("", READ_TIMEOUT)  # "" matches no type: up to EOF
        waited = time.monotonic() - started
        errors = [error_fields(body) for kind, body in messages if kind == "E"]
        seen = [(e.get("S"), e.get("C")) for e in errors]
        if seen != [("FATAL", EXPECTED_FATAL[plan.ending])]:
            self.result.add("unexpected_endings")
            self.result.note(
                f"{plan.describe()}: expected FATAL {EXPECTED_FATAL[plan.ending]}, saw "
                f"{[m[0] for m in messages]} with errors {errors} after {waited:.2f} s"
            )
        key = f"longest_wait_for_{plan.ending}_s"
        self.result.figures[key] = round(max(self.result.figures.get(key, 0.0), waited), 3)

    async def check(self, aborted_pid: int | None) -> int | None:
        """A new client of the pool runs CHECK_SQL on the server it gets; that server's pid."""
        r = self.result
        try:
            client = await ExtendedClient.connect("127.0.0.1", self.proxy.port, TRUST_USER, POOL)
        except (OSError, AssertionError, TimeoutError) as exc:
            r.add("checker_errors")
            r.note(f"checker could not log in: {exc}")
            return None
        try:
            await client.send(query(CHECK_SQL))
            messages = await client.wire.read_until("Z", READ_TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            r.add("checker_errors")
            r.note(f"checker: {type(exc).__name__}: {exc}")
            return None
        finally:
            with contextlib.suppress(OSError):
                await client.close()
        rows = [_data_row(body) for kind, body in messages if kind == "D"]
        errors = [error_fields(body) for kind, body in messages if kind == "E"]
        status = messages[-1][1].decode() if messages and messages[-1][0] == "Z" else "none"
        if errors or len(rows) != 1:
            failed_transaction = any(e.get("C") == "25P02" for e in errors)
            r.add("leaks" if failed_transaction else "checker_errors")
            if failed_transaction:
                r.add("leaked_failed_transaction")
            before = self.last_plan.get(aborted_pid or 0)
            r.note(
                f"checker after {before.describe() if before else 'an abort'} got "
                f"{errors or 'no row'} (status {status})"
            )
            return None
        r.add("servers_checked")
        pid = int(rows[0][0])
        found = leaks(rows[0], status, self.default_work_mem)
        if found:
            r.add("leaks")
            for kind in found:
                r.add(f"leaked_{kind}")
            before = self.last_plan.get(pid)
            last = before.describe() if before else "no aborted client"
            r.note(f"server {pid}, last used by {last}: {', '.join(found.values())}")
        return pid


async def _server_view(admin: asyncpg.Connection, result: CheckResult) -> None:
    """After the run: backends of the pool still running the aborted clients' queries, idle in
    a transaction or holding advisory locks (waits up to 5 s for cancelled ones to go)."""
    deadline = time.monotonic() + 5.0
    while True:
        row = await admin.fetchrow(
            "SELECT count(*) FILTER (WHERE query = $3 AND state = 'active') AS running, "
            "count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS in_transaction, "
            "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory') AS advisory "
            "FROM pg_stat_activity WHERE usename = $1 AND datname = $2",
            SCRAM_USER,
            APP_DB,
            RUNNING_QUERY,
        )
        assert row is not None
        if not any(row.values()) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    result.figures["queries_left_running_at_the_end"] = row["running"]
    result.figures["backends_in_transaction_at_the_end"] = row["in_transaction"]
    result.figures["advisory_locks_at_the_end"] = row["advisory"]


async def session_aborts(world: World, result: CheckResult, aborts: int, seed: int) -> None:
    result.settings.update(
        aborts=aborts,
        pool=f"session mode, size {POOL_SIZE}",
        idle_transaction_timeout=f"{IDLE_TRANSACTION_TIMEOUT} s",
        query_timeout=f"{QUERY_TIMEOUT} s",
        lanes=f"{LANES} (an aborted client, then a new checking client, in a loop)",
        seed=seed,
    )
    for name in (
        "aborts", "servers_checked", "leaks", "checker_errors", "aborter_errors",
        "unexpected_endings", "own_server_checked", "aborts_without_a_running_query",
        "own_server_checked_without_a_running_query",
        *(f"ending_{e}" for e in ENDINGS), *(f"with_{s}" for s in STATE),
    ):  # fmt: skip
        result.figures[name] = 0
    result.require("aborts", "==", aborts)
    result.require("servers_checked", ">=", aborts)
    result.require("leaks", "==", 0)
    result.require("checker_errors", "==", 0)
    result.require("aborter_errors", "==", 0)
    result.require("unexpected_endings", "==", 0)
    for name in (
        "queries_left_running_at_the_end",
        "backends_in_transaction_at_the_end",
        "advisory_locks_at_the_end",
    ):
        result.require(name, "==", 0)
    pool = pool_entry(
        POOL,
        mode="session",
        size=POOL_SIZE,
        idle_transaction_timeout=IDLE_TRANSACTION_TIMEOUT,
        query_timeout=QUERY_TIMEOUT,
    )
    admin = await asyncpg.connect(world.superuser_dsn())
    try:
        default_work_mem = await admin.fetchval("SHOW work_mem")
        with world.proxy([pool], result) as proxy:
            state = Aborts(proxy, result, default_work_mem)
            bounds = [aborts * i // LANES for i in range(LANES + 1)]
            await asyncio.gather(
                *(
                    state.lane(range(bounds[i], bounds[i + 1]), random.Random(f"{seed}-{i}"))
                    for i in range(LANES)
                )
            )
            await _server_view(admin, result)
    finally:
        await admin.close()
