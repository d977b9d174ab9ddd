"""Isolation checks: cancel storm, split points, kill loop, hostile inputs, admin slow headers.

The session-mode aborts live in bench/isolation_aborts.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import psycopg

from bench import admin_slow_clients
from bench.isolation_report import CheckResult
from bench.isolation_world import ProxyChild, World
from tests.support.extended import ExtendedClient, kinds
from tests.support.pgcluster import APP_DB
from tests.support.proxy import MODES, SCRAM_USER, TRUST_USER, pool_entry

CONNECT_TIMEOUT = 30.0


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


async def _asyncpg(proxy: ProxyChild, pool: str, **kwargs: Any) -> asyncpg.Connection:
    return await asyncpg.connect(proxy.dsn(pool), timeout=CONNECT_TIMEOUT, **kwargs)


async def _psycopg(proxy: ProxyChild, pool: str) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(
        proxy.dsn(pool), autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
    )


async def _close_all(conns: list[Any]) -> None:
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


# ---- 1. cancel storm ------------------------------------------------------------------------

STORM_POOL = "iso_storm"


async def cancel_storm(
    world: World, result: CheckResult, rounds: int, seconds: float, clients: int
) -> None:
    """``clients`` sleepers cancelled every 0.1 s and as many bystanders on a transaction pool
    of 4: no cancel may reach a bystander."""
    result.settings.update(
        rounds=f"{rounds} of {seconds:g} s",
        sleepers=f"{clients} psycopg clients looping SELECT pg_sleep(0.1)",
        cancels=f"{clients} concurrent cancel_safe() every 0.1 s",
        bystanders=f"{clients} asyncpg clients looping SELECT pg_sleep(0.01)",
        pool="transaction mode, size 4",
    )
    for name in (
        "rounds", "bystander_queries", "bystanders_cancelled", "bystander_other_errors",
        "sleeper_queries", "sleepers_cancelled", "sleeper_other_errors", "cancel_calls",
        "cancel_calls_failed",
    ):  # fmt: skip
        result.figures[name] = 0
    result.require("rounds", "==", rounds)
    result.require("bystander_queries", ">", 0)
    result.require("bystanders_cancelled", "==", 0)
    result.require("bystander_other_errors", "==", 0)
    result.require("sleepers_cancelled", ">", 0)
    result.require("sleeper_other_errors", "==", 0)
    result.require("cancel_calls_failed", "==", 0)
    with world.proxy([pool_entry(STORM_POOL, size=4, query_wait_timeout=30)], result) as proxy:
        for _ in range(rounds):
            await _storm_round(proxy, result, seconds, clients)
            result.add("rounds")


async def _storm_round(proxy: ProxyChild, r: CheckResult, seconds: float, clients: int) -> None:
    sleepers = [await _psycopg(proxy, STORM_POOL) for _ in range(clients)]
    bystanders = [await _asyncpg(proxy, STORM_POOL) for _ in range(clients)]
    stop = time.monotonic() + seconds

    async def sleeper(conn: psycopg.AsyncConnection) -> None:
        while time.monotonic() < stop and not conn.closed:
            try:
                await conn.execute("SELECT pg_sleep(0.1)")
                r.add("sleeper_queries")
            except psycopg.errors.QueryCanceled:
                r.add("sleepers_cancelled")
            except psycopg.Error as exc:
                r.add("sleeper_other_errors")
                r.note(f"sleeper: {_text(exc)}")

    async def canceller() -> None:
        while time.monotonic() < stop:
            outcomes = await asyncio.gather(
                *(c.cancel_safe(timeout=5) for c in sleepers), return_exceptions=True
            )
            r.add("cancel_calls", len(outcomes))
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    r.add("cancel_calls_failed")
                    r.note(f"cancel_safe(): {_text(outcome)}")
            await asyncio.sleep(0.1)

    async def bystander(conn: asyncpg.Connection) -> None:
        while time.monotonic() < stop and not conn.is_closed():
            try:
                await conn.execute("SELECT pg_sleep(0.01)")
                r.add("bystander_queries")
            except asyncpg.QueryCanceledError as exc:
                r.add("bystanders_cancelled")
                r.note(f"bystander cancelled: {_text(exc)}")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                r.add("bystander_other_errors")
                r.note(f"bystander: {_text(exc)}")

    try:
        await asyncio.gather(
            *(sleeper(c) for c in sleepers), canceller(), *(bystander(c) for c in bystanders)
        )
    finally:
        await _close_all([*sleepers, *bystanders])


# ---- 4. split points ------------------------------------------------------------------------


def split_plan(length: int, random_splits: int, rng: random.Random) -> list[tuple[int, ...]]:
    """Every 2-way cut of a ``length``-byte message stream, then ``random_splits`` random 3-way
    cuts (two distinct cut points, ascending)."""
    cuts: list[tuple[int, ...]] = [(cut,) for cut in range(1, length)]
    for _ in range(random_splits):
        cuts.append(tuple(sorted(rng.sample(range(1, length), 2))))
    return cuts


def pieces(data: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


async def split_points(world: World, result: CheckResult, random_splits: int, seed: int) -> None:
    """The mixed pipeline of the regression test, cut at every byte and at random pairs of
    bytes, in each pool mode: every reply arrives, no connection is lost."""
    from tests.integration.test_isolation import PIPELINE, PIPELINE_REPLY

    result.settings.update(
        pipeline=f"{len(PIPELINE)} bytes: Query, Parse/Bind/Describe/Execute/Sync, "
        "a two-statement Query",
        splits_per_mode=f"{len(PIPELINE) - 1} two-way, {random_splits} random three-way",
        pools="session, transaction and statement mode, size 2, one client each, in parallel",
        pause_between_pieces="3 ms",
        seed=seed,
    )
    for name in ("splits", "connections_lost", "replies_missing", "wrong_replies"):
        result.figures[name] = 0
    expected = len(MODES) * (len(PIPELINE) - 1 + random_splits)
    result.require("splits", "==", expected)
    result.require("connections_lost", "==", 0)
    result.require("replies_missing", "==", 0)
    result.require("wrong_replies", "==", 0)
    pools = [pool_entry(f"iso_split_{mode}", mode=mode, size=2) for mode in MODES]
    with world.proxy(pools, result) as proxy:
        await asyncio.gather(
            *(
                _splits(proxy, mode, split_plan(len(PIPELINE), random_splits,
                        random.Random(f"{seed}-{mode}")), PIPELINE, PIPELINE_REPLY, result)
                for mode in MODES
            )
        )  # fmt: skip


async def _splits(
    proxy: ProxyChild,
    mode: str,
    plan: list[tuple[int, ...]],
    pipeline: bytes,
    reply: str,
    r: CheckResult,
) -> None:
    pool = f"iso_split_{mode}"
    client = await ExtendedClient.connect("127.0.0.1", proxy.port, TRUST_USER, pool)
    try:
        for cuts in plan:
            try:
                for i, piece in enumerate(pieces(pipeline, cuts)):
                    if i:
                        await asyncio.sleep(0.003)  # the pieces arrive as separate reads
                    await client.send(piece)
                got = kinds(await client.read(ready=3, timeout=10))
            except (AssertionError, OSError, TimeoutError) as exc:
                lost = not isinstance(exc, TimeoutError)
                r.add("connections_lost" if lost else "replies_missing")
                r.note(f"{mode}, cut at {cuts}: {_text(exc)}")
                with contextlib.suppress(OSError):
                    await client.wire.close()
                client = await ExtendedClient.connect("127.0.0.1", proxy.port, TRUST_USER, pool)
                continue
            r.add("splits")
            if got != reply:
                r.add("wrong_replies")
                r.note(f"{mode}, cut at {cuts}: replies {got}, expected {reply}")
    finally:
        with contextlib.suppress(OSError):
            await client.close()


# ---- 5. kill loop ---------------------------------------------------------------------------

KILL_POOL = "iso_kills"


async def kill_loop(
    world: World, result: CheckResult, seconds: float, every: float = 0.05, clients: int = 8
) -> None:
    """Backends of a transaction pool of 4 terminated every ``every`` s while asyncpg (statement
    cache on) and psycopg (autocommit) clients run queries: none of them sees an error."""
    result.settings.update(
        duration=f"{seconds:g} s",
        kills=f"pg_terminate_backend of every pool backend every {every * 1000:g} ms",
        clients=f"{clients} asyncpg (statement cache on), {clients} psycopg autocommit, "
        "each looping SELECT $1::int",
        pool="transaction mode, size 4, server_login_retry 0",
    )
    for name in ("queries", "asyncpg_queries", "psycopg_queries", "servers_killed", "errors"):
        result.figures[name] = 0
    result.require("queries", ">", 0)
    result.require("servers_killed", ">", 0)
    result.require("errors", "==", 0)
    pool = pool_entry(KILL_POOL, size=4, server_login_retry=0)
    with world.proxy([pool], result) as proxy:
        drivers = [
            await _asyncpg(proxy, KILL_POOL, statement_cache_size=100) for _ in range(clients)
        ]
        psycopgs: list[psycopg.AsyncConnection] = []
        try:
            for conn in drivers:
                await conn.fetchval("SELECT $1::int", 0)  # prepared before the kills
            psycopgs = [await _psycopg(proxy, KILL_POOL) for _ in range(clients)]
            stop = time.monotonic() + seconds
            await asyncio.gather(
                _kill(world, stop, every, result),
                *(_with_asyncpg(c, stop, result) for c in drivers),
                *(_with_psycopg(c, stop, result) for c in psycopgs),
            )
        finally:
            await _close_all([*drivers, *psycopgs])


async def _kill(world: World, stop: float, every: float, r: CheckResult) -> None:
    admin = await asyncpg.connect(world.superuser_dsn())
    try:
        while time.monotonic() < stop:
            r.add(
                "servers_killed",
                await admin.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE usename = $1 AND datname = $2 "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                    SCRAM_USER,
                    APP_DB,
                ),
            )
            await asyncio.sleep(every)
    finally:
        await admin.close()


async def _with_asyncpg(conn: asyncpg.Connection, stop: float, r: CheckResult) -> None:
    i = 0
    while time.monotonic() < stop and not conn.is_closed():
        i += 1
        try:
            got = await conn.fetchval("SELECT $1::int", i)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            r.add("errors")
            r.note(f"asyncpg: {_text(exc)}")
            continue
        r.add("queries")
        r.add("asyncpg_queries")
        if got != i:
            r.add("errors")
            r.note(f"asyncpg: SELECT {i} gave {got}")


async def _with_psycopg(conn: psycopg.AsyncConnection, stop: float, r: CheckResult) -> None:
    i = 0
    while time.monotonic() < stop and not conn.closed:
        i += 1
        try:
            cur = await conn.execute("SELECT %s::int", (i,))
            got = await cur.fetchone()
        except psycopg.Error as exc:
            r.add("errors")
            r.note(f"psycopg: {_text(exc)}")
            continue
        r.add("queries")
        r.add("psycopg_queries")
        if got != (i,):
            r.add("errors")
            r.note(f"psycopg: SELECT {i} gave {got}")


# ---- 3. hostile inputs ----------------------------------------------------------------------

HOSTILE_POOL = "testpool"  # the fuzzer's sessions log in to this database name


async def hostile_inputs(
    world: World, result: CheckResult, examples: int, seed: int, good_clients: int = 10
) -> None:
    """The protocol fuzzer's generated byte streams (tests/integration/test_hostile_clients.py)
    from logged-in clients while well-behaved clients use the same pool."""
    result.settings.update(
        hostile_inputs=f"{examples} generated streams (hypothesis, seed {seed}), one session each",
        well_behaved=f"{good_clients} asyncpg clients (statement cache on) looping SELECT $1::int",
        pool="transaction mode, size 3, query_wait_timeout 60 s",
    )
    for name in ("hostile_sessions", "hostile_sessions_refused", "well_behaved_queries"):
        result.figures[name] = 0
    result.figures["well_behaved_errors"] = 0
    result.require("hostile_sessions", "==", examples)
    result.require("well_behaved_queries", ">", 0)
    result.require("well_behaved_errors", "==", 0)
    pool = pool_entry(HOSTILE_POOL, size=3, query_wait_timeout=60)
    with world.proxy([pool], result) as proxy:
        stop = asyncio.Event()
        good = [
            asyncio.ensure_future(_well_behaved(proxy, stop, result)) for _ in range(good_clients)
        ]
        halt = threading.Event()
        try:
            await asyncio.to_thread(_fuzz, proxy.port, examples, seed, halt, result)
        finally:
            halt.set()
            stop.set()
            await asyncio.gather(*good, return_exceptions=True)


def _fuzz(port: int, examples: int, seed_value: int, halt: threading.Event, r: CheckResult) -> None:
    """Run the fuzzer's strategy ``examples`` times against ``port`` (blocking sockets: this
    runs in a thread while the well-behaved clients run in the event loop)."""
    from hypothesis import HealthCheck, Phase, given, seed, settings

    from tests.integration.test_hostile_clients import STREAMS, _hostile_session

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(STREAMS)
    def hostile(case: tuple[bytes, list[int], bool]) -> None:
        if halt.is_set():
            return
        try:
            _hostile_session(port, *case)
        except (AssertionError, OSError) as exc:  # the login was refused or the connect failed
            r.add("hostile_sessions_refused")
            r.note(f"hostile session: {_text(exc)}")
        r.add("hostile_sessions")

    hostile()


async def _well_behaved(proxy: ProxyChild, stop: asyncio.Event, r: CheckResult) -> None:
    conn = await _asyncpg(proxy, HOSTILE_POOL, statement_cache_size=100)
    i = 0
    try:
        while not stop.is_set():
            i += 1
            try:
                got = await conn.fetchval("SELECT $1::int", i)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                r.add("well_behaved_errors")
                r.note(f"well-behaved client: {_text(exc)}")
                if conn.is_closed():
                    conn = await _asyncpg(proxy, HOSTILE_POOL, statement_cache_size=100)
                continue
            r.add("well_behaved_queries")
            if got != i:
                r.add("well_behaved_errors")
                r.note(f"well-behaved client: SELECT {i} gave {got}")
    finally:
        await conn.close()


# ---- 6. admin API under slow-header clients -------------------------------------------------


async def admin_slow_headers(result: CheckResult, slow: int, seconds: float) -> None:
    """bench/admin_slow_clients.py: ``slow`` connections sending a header byte a second while
    legitimate GET /v2/databases/{uuid}/pools calls run; at least 99 % must succeed."""
    args = argparse.Namespace(
        slow=slow, duration=seconds, warmup=1.0, interval=0.02, call_timeout=10.0,
        no_reconnect=False,
    )  # fmt: skip
    result.settings.update(
        slow_connections=f"{slow}, one header byte per second, reopened when closed",
        legitimate_calls=f"GET /v2/databases/{{uuid}}/pools for {seconds:g} s, a new "
        f"connection each, {args.interval * 1000:g} ms apart, {args.call_timeout:g} s timeout",
        admin_limits="the defaults",
    )
    result.require("calls", ">", 0)
    result.require("success_ratio_pct", ">=", 99.0)
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "pyproxy.toml"
        config_path.write_text(admin_slow_clients.CONFIG)
        proc, port = await asyncio.to_thread(admin_slow_clients.start_server, config_path)
        try:
            tally = await admin_slow_clients.measure(port, args)
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 15)
    calls = tally.ok + sum(tally.failed.values())
    lat = sorted(tally.latencies) or [0.0]
    result.figures.update(
        calls=calls,
        ok=tally.ok,
        success_ratio_pct=round(100 * tally.ok / max(calls, 1), 2),
        slow_connections_opened=tally.slow_opened,
        slow_connections_closed_by_pyproxy=tally.slow_closed_by_server,
        median_call_ms=round(1000 * statistics.median(lat), 1),
        p99_call_ms=round(1000 * lat[int(0.99 * (len(lat) - 1))], 1),
    )
    for why, count in sorted(tally.failed.items()):
        result.note(f"{count} calls failed: {why}")
