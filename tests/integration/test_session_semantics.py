"""Every session setting follows its client across servers and never reaches another client;
what cannot be replayed pins the client to its server (session_state = "pin", the default of
transaction pools); statement mode refuses transaction blocks the way PostgreSQL aborts them."""

from __future__ import annotations

import asyncio
import subprocess

import asyncpg
import psycopg
import pytest

from tests.integration.conftest import MakeProxy
from tests.support.extended import ExtendedClient, bind, execute, kinds, parse, sync
from tests.support.pgcluster import PgServer
from tests.support.proxy import (
    SCRAM_PASSWORD,
    SCRAM_USER,
    TRUST_USER,
    pool_entry,
    superuser_conn,
)

SHOW = (
    "SELECT current_setting('check_function_bodies'), current_setting('search_path'), "
    "current_setting('TimeZone'), current_setting('app.tenant_id', true), "
    "current_setting('work_mem'), pg_backend_pid()"
)
DEFAULTS = ("on", '"$user", public', "Etc/UTC")


async def show(conn: asyncpg.Connection) -> tuple[str, ...]:
    row = await conn.fetchrow(SHOW)
    return tuple(row)


@pytest.mark.parametrize("mode", ["transaction", "statement"])
async def test_settings_of_every_form_follow_their_client_and_nobody_else(
    make_proxy: MakeProxy, mode: str
) -> None:
    """Pool of 1, two clients alternating, 100 rounds."""
    proxy = await make_proxy([pool_entry(mode=mode, size=1)])
    a = await proxy.asyncpg(server_settings={"work_mem": "3MB"})  # a startup setting
    b = await proxy.asyncpg()
    try:
        await a.execute("SET check_function_bodies = false")
        await a.fetchval("SELECT set_config('search_path', '', false)")  # as pg_dump does
        await a.execute("SET TIME ZONE 'Asia/Tokyo'")
        await a.fetchval("SELECT 1, set_config('app.tenant_id', '42', false)")
        pids = set()
        for i in range(100):
            seen_a = await show(a)
            assert seen_a[:5] == ("off", "", "Asia/Tokyo", "42", "3MB"), i
            seen_b = await show(b)
            assert seen_b[:3] == DEFAULTS and seen_b[4] == "4MB", i
            assert seen_b[3] in (None, ""), i  # never a's tenant
            pids.add(seen_a[5])
            pids.add(seen_b[5])
        assert len(pids) == 1  # one server, shared by both all along
        await a.execute("RESET search_path")
        await a.execute("RESET ALL")  # also its startup setting, as PostgreSQL does
        assert (await show(a))[:3] == DEFAULTS
    finally:
        await a.close()
        await b.close()


async def test_a_setting_in_a_committed_transaction_stays_and_a_rolled_back_one_goes(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(size=1)])
    a = await proxy.asyncpg()
    b = await proxy.asyncpg()
    try:
        async with a.transaction():
            await a.execute("SET work_mem = '5MB'")
        with pytest.raises(ZeroDivisionError):
            async with a.transaction():
                await a.execute("SET statement_timeout = 1234")
                raise ZeroDivisionError
        async with a.transaction():
            await a.execute("SET lock_timeout = 999")
            await a.execute("SAVEPOINT s")
            await a.execute("SET search_path = nothing_here")
            await a.execute("ROLLBACK TO SAVEPOINT s")
        for _ in range(3):
            assert await b.fetchval("SHOW work_mem") == "4MB"
            assert await a.fetchval("SHOW work_mem") == "5MB"
            assert await a.fetchval("SHOW statement_timeout") == "0"
            assert await a.fetchval("SHOW lock_timeout") == "999ms"
            assert await a.fetchval("SHOW search_path") == '"$user", public'
            assert await b.fetchval("SHOW lock_timeout") == "0"
    finally:
        await a.close()
        await b.close()


async def test_a_client_that_never_sets_anything_costs_no_extra_round_trip(
    make_proxy: MakeProxy, pg: PgServer
) -> None:
    """The server's own statement counter: only the client's statements reach it."""
    proxy = await make_proxy([pool_entry(size=1)])
    conn = await proxy.asyncpg()
    admin = await superuser_conn(pg)
    try:
        await admin.execute("SELECT pg_stat_reset()")
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        for i in range(20):
            assert await conn.fetchval("SELECT $1::int", i) == i
        text = await conn.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
        assert "set_config" not in text and "pg_settings" not in text
    finally:
        await admin.close()
        await conn.close()


# ---- pinning ------------------------------------------------------------------------------------


async def test_listen_pins_the_client_and_its_notifications_arrive(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(size=2)])
    listener = await proxy.asyncpg()
    talker = await proxy.asyncpg()
    got: asyncio.Queue[str] = asyncio.Queue()
    try:
        await listener.add_listener("orders", lambda *args: got.put_nowait(args[3]))
        pid = await listener.fetchval("SELECT pg_backend_pid()")
        assert proxy.pool_stats()["cl_pinned"] == 1
        busy = [await proxy.asyncpg() for _ in range(3)]
        for i in range(5):  # other clients use the other server meanwhile
            for c in busy:
                assert await c.fetchval("SELECT pg_backend_pid()") != pid
            await talker.execute(f"NOTIFY orders, 'n{i}'")
            assert await asyncio.wait_for(got.get(), 2) == f"n{i}"
            assert await listener.fetchval("SELECT pg_backend_pid()") == pid
        await listener.remove_listener("orders", lambda *args: None)
        await listener.execute("UNLISTEN *")
        await proxy.wait_stats(cl_pinned=0)
        for c in busy:
            await c.close()
        assert proxy.app.registry.pool_counters("testpool")["session_state_pins"] == 1
    finally:
        await listener.close()
        await talker.close()


@pytest.mark.parametrize(
    ("sql", "undo"),
    [
        ("CREATE TEMP TABLE pinned_t (a int)", "DISCARD TEMP"),
        ("PREPARE pinned_p AS SELECT 1", "DEALLOCATE pinned_p"),
        ("DECLARE pinned_c CURSOR WITH HOLD FOR SELECT 1", "CLOSE pinned_c"),
        ("SELECT pg_advisory_lock(4321)", "SELECT pg_advisory_unlock_all()"),
        ("SET ROLE pyproxy_pinned_role", "RESET ROLE"),
    ],
)
async def test_state_that_cannot_be_replayed_pins_until_undone_and_never_leaks(
    make_proxy: MakeProxy, pg: PgServer, sql: str, undo: str
) -> None:
    admin = await superuser_conn(pg)
    await admin.execute(
        "DO $$BEGIN CREATE ROLE pyproxy_pinned_role; EXCEPTION WHEN duplicate_object THEN "
        f"NULL; END$$; GRANT pyproxy_pinned_role TO {SCRAM_USER}"
    )
    await admin.close()
    proxy = await make_proxy([pool_entry(size=1, query_wait_timeout=5)])
    pinned = await proxy.asyncpg()
    try:
        await pinned.execute(sql)
        await proxy.wait_stats(cl_pinned=1, sv_total=1)
        waiter = await proxy.asyncpg()
        blocked = asyncio.ensure_future(waiter.fetchval("SELECT 1"))
        await proxy.wait_stats(cl_waiting=1)
        await pinned.execute(undo)
        assert await asyncio.wait_for(blocked, 3) == 1
        await proxy.wait_stats(cl_pinned=0)
        await waiter.close()
    finally:
        await pinned.close()


async def test_a_pinned_client_that_leaves_leaves_nothing_behind(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([pool_entry(size=1)])
    for _ in range(3):
        pinned = await proxy.asyncpg()
        await pinned.execute("LISTEN leaving; CREATE TEMP TABLE left_t (a int)")
        await pinned.execute("SELECT pg_advisory_lock(77)")
        pid = await pinned.fetchval("SELECT pg_backend_pid()")
        await pinned.close()
        other = await proxy.asyncpg()
        try:
            assert await other.fetchval("SELECT pg_backend_pid()") == pid
            assert await other.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            assert await other.fetchval("SELECT to_regclass('pg_temp.left_t')") is None
            assert (
                await other.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid()"
                )
                == 0
            )
        finally:
            await other.close()


async def test_clients_waiting_behind_pins_are_told_who_pins(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([pool_entry(size=1, query_wait_notify=0.2, query_wait_timeout=0.6)])
    pinned = await psycopg.AsyncConnection.connect(
        proxy.dsn() + "?application_name=nightly-job", autocommit=True
    )
    notices: list[str] = []
    waiter = await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True)
    waiter.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    try:
        await pinned.execute("LISTEN jobs")
        with pytest.raises(psycopg.errors.CannotConnectNow):
            await waiter.execute("SELECT 1")
        assert any("pinned" in n and "nightly-job" in n and "LISTEN" in n for n in notices)
    finally:
        await pinned.close()
        await waiter.close()


# ---- statement mode -----------------------------------------------------------------------------


async def test_statement_mode_psql_script_with_a_refused_block_leaves_no_row(
    make_proxy: MakeProxy, pg: PgServer
) -> None:
    admin = await superuser_conn(pg)
    await admin.execute(
        f"DROP TABLE IF EXISTS stmt_block; CREATE TABLE stmt_block (a int); "
        f"GRANT ALL ON stmt_block TO {SCRAM_USER}"
    )
    proxy = await make_proxy([pool_entry(mode="statement", size=1)])
    script = "BEGIN;\nINSERT INTO stmt_block VALUES (1);\nINSERT INTO stmt_block VALUES (2);\n"
    script += "ROLLBACK;\nINSERT INTO stmt_block VALUES (3);\n"
    result = await asyncio.to_thread(
        subprocess.run,
        ["psql", "-X", "-d", proxy.dsn(), "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PGPASSWORD": SCRAM_PASSWORD, "PATH": "/usr/bin:/bin"},
    )
    try:
        assert "transaction blocks are not allowed in statement pooling mode" in result.stderr
        assert result.stderr.count("current transaction is aborted") == 2
        assert await admin.fetch("SELECT a FROM stmt_block ORDER BY a") == [(3,)]
    finally:
        await admin.close()


async def test_statement_mode_begin_after_a_kept_server_gets_one_result(
    make_proxy: MakeProxy,
) -> None:
    """psycopg 3 raises "received 2 results" if BEGIN is answered twice."""
    proxy = await make_proxy([pool_entry(mode="statement", size=2)])
    async with await psycopg.AsyncConnection.connect(proxy.dsn(), autocommit=True) as conn:
        for _ in range(3):
            cur = await conn.execute("SELECT 1")  # the server is kept between statements
            assert await cur.fetchone() == (1,)
            with pytest.raises(psycopg.errors.ActiveSqlTransaction):
                await conn.execute("BEGIN")
            with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                await conn.execute("SELECT 2")
            await conn.execute("ROLLBACK")
    async with await psycopg.AsyncConnection.connect(proxy.dsn()) as tx:  # not autocommit
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            await tx.execute("SELECT 1")
        await tx.rollback()


async def test_statement_mode_pipelined_begin_is_refused_after_the_answers_before_it(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy([pool_entry(mode="statement", size=1)], proxy={"auth_type": "trust"})
    client = await ExtendedClient.connect(proxy.host, proxy.port, TRUST_USER, "testpool")
    try:
        replies = await client.run(
            b"Q\x00\x00\x00\x0dSELECT 1\x00"
            + b"Q\x00\x00\x00\x0aBEGIN\x00"
            + b"Q\x00\x00\x00\x0dSELECT 2\x00"
            + b"Q\x00\x00\x00\x0dROLLBACK\x00",
            ready=4,
        )
        assert kinds(replies) == "TDCZ" + "EZ" + "EZ" + "CZ"
        assert [r.detail for r in replies if r.kind in "EZC"] == [
            "SELECT 1", "I", "25001", "E", "25P02", "E", "ROLLBACK", "I",
        ]  # fmt: skip
    finally:
        await client.close()


async def test_pg_settings_reads_show_only_this_clients_settings_in_session_mode(
    make_proxy: MakeProxy,
) -> None:
    """Session mode needs no replay: the server is the session."""
    proxy = await make_proxy([pool_entry(mode="session", size=1)])
    conn = await proxy.asyncpg()
    try:
        await conn.execute("SET work_mem = '9MB'")
        assert await conn.fetchval("SHOW work_mem") == "9MB"
    finally:
        await conn.close()
    again = await proxy.asyncpg()
    try:
        assert await again.fetchval("SHOW work_mem") == "4MB"
    finally:
        await again.close()


@pytest.mark.parametrize("kept", [False, True], ids=["no-server", "kept-server"])
@pytest.mark.parametrize("first", [True, False], ids=["first", "after-a-statement"])
async def test_statement_mode_named_begin_leaves_no_statement_on_the_server(
    make_proxy: MakeProxy, kept: bool, first: bool
) -> None:
    """pgJDBC names its BEGIN (prepareThreshold=1): refused, and the name never stays on the
    shared server, so the next client using the same name gets the same refusal, not 42P05."""
    proxy = await make_proxy([pool_entry(mode="statement", size=1)], proxy={"auth_type": "trust"})
    before = b"" if first else parse("", "SELECT 1") + bind("", "") + execute()
    batch = (
        before
        + parse("S_1", "BEGIN")
        + bind("", "S_1")
        + execute()
        + parse("S_2", "SELECT 2")
        + bind("", "S_2")
        + execute()
        + sync()
    )
    for _ in range(2):
        client = await ExtendedClient.connect(proxy.host, proxy.port, TRUST_USER, "testpool")
        try:
            if kept:  # the server is kept between statements while nobody waits
                await client.run(b"Q\x00\x00\x00\x0dSELECT 1\x00", ready=1)
            replies = await client.run(batch, ready=1)
            errors = [r.detail for r in replies if r.kind == "E"]
            assert errors == ["25001"], replies
        finally:
            await client.close()
    conn = await proxy.asyncpg()  # the pool's only server
    try:
        named = "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'S\\_%'"
        assert await conn.fetchval(named) == 0
    finally:
        await conn.close()
