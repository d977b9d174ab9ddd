"""Raw extended-protocol pipelines through a transaction pool answer exactly as PostgreSQL does."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from tests.support.extended import (
    ExtendedClient,
    Reply,
    bind,
    close,
    describe,
    execute,
    kinds,
    parse,
    run_statement,
    sync,
)
from tests.support.pgcluster import APP_DB, USERS, PgServer
from tests.support.proxy import RunningProxy, pool_entry, running_proxy
from tests.support.side_by_side import TRUST_USER, both, opener
from tests.support.wire import query, typed


@pytest.fixture(scope="module")
async def proxy2(pg: PgServer) -> AsyncIterator[RunningProxy]:
    async with running_proxy(pg, [pool_entry(size=2)], proxy={"auth_type": "trust"}) as proxy:
        yield proxy


def tag() -> str:
    """Unique text so that statements are new to every server."""
    return uuid.uuid4().hex[:8]


async def test_prepared_and_unnamed_statements_mixed_in_one_pipeline(
    pg: PgServer, proxy2: RunningProxy
) -> None:
    t = tag()

    async def scenario(open_client: Callable[[], Awaitable[ExtendedClient]]) -> list[list[Reply]]:
        c = await open_client()
        first = await c.run(
            parse("s1", f"select $1::int + 1 as {'x' + t}"),
            run_statement("s1", ["1"]),
            parse("", "select 'unnamed'"),
            bind("", ""),
            execute(),
            run_statement("s1", ["41"]),
            parse("s2", "select $1::text || '!'"),
            describe("S", "s2"),
            run_statement("s2", ["hi"]),
            sync(),
        )
        again = await c.run(run_statement("s2", ["again"]), run_statement("s1", ["9"]), sync())
        await c.close()
        return [first, again]

    first, again = await both(pg, proxy2, scenario)
    assert kinds(first) == "12DC12DC2DC1tT2DCZ"
    assert [r.detail for r in first if r.kind == "D"] == ["2", "unnamed", "42", "hi!"]
    assert [r.detail for r in again if r.kind == "D"] == ["again!", "10"]


async def test_error_mid_pipeline_then_prepared_query_after_sync(
    pg: PgServer, proxy2: RunningProxy
) -> None:
    t = tag()

    async def scenario(open_client: Callable[[], Awaitable[ExtendedClient]]) -> list[list[Reply]]:
        c = await open_client()
        failed = await c.run(
            parse("div", f"select 10 / $1::int as {'d' + t}"),
            run_statement("div", ["0"]),
            parse("skipped", "select 'never prepared'"),
            run_statement("skipped"),
            sync(),
        )
        after = await c.run(run_statement("div", ["5"]), sync())
        gone = await c.run(run_statement("skipped"), sync())
        reparse = await c.run(parse("skipped", "select 'now'"), run_statement("skipped"), sync())
        await c.close()
        return [failed, after, gone, reparse]

    failed, after, gone, reparse = await both(pg, proxy2, scenario)
    # PostgreSQL folds the constant division when it plans the Bind: the error comes there.
    assert kinds(failed) == "1EZ" and failed[1].detail == "22012"
    assert kinds(after) == "2DCZ" and after[1].detail == "2"
    assert kinds(gone) == "EZ" and gone[0].detail == "26000"
    assert kinds(reparse) == "12DCZ" and reparse[2].detail == "now"


async def test_failed_parse_leaves_the_name_free(pg: PgServer, proxy2: RunningProxy) -> None:
    async def scenario(open_client: Callable[[], Awaitable[ExtendedClient]]) -> list[list[Reply]]:
        c = await open_client()
        bad = await c.run(parse("s1", "select no_such_column"), sync())
        good = await c.run(parse("s1", "select 'fixed'"), run_statement("s1"), sync())
        await c.close()
        return [bad, good]

    bad, good = await both(pg, proxy2, scenario)
    assert kinds(bad) == "EZ" and bad[0].detail == "42703"
    assert kinds(good) == "12DCZ"


async def test_sync_arriving_late(pg: PgServer, proxy2: RunningProxy) -> None:
    t = tag()

    async def scenario(open_client: Callable[[], Awaitable[ExtendedClient]]) -> list[list[Reply]]:
        c = await open_client()
        await c.send(
            parse("late", f"select $1::int * 2 as {'l' + t}"), run_statement("late", ["21"])
        )
        await asyncio.sleep(0.3)
        first = await c.run(sync())
        await c.send(run_statement("late", ["5"]))
        await asyncio.sleep(0.2)
        second = await c.run(sync())
        await c.close()
        return [first, second]

    first, second = await both(pg, proxy2, scenario)
    assert kinds(first) == "12DCZ" and first[2].detail == "42"
    assert kinds(second) == "2DCZ" and second[1].detail == "10"


async def test_parse_of_an_existing_name_is_42P05_and_not_fatal(
    pg: PgServer, proxy2: RunningProxy
) -> None:
    async def scenario(open_client: Callable[[], Awaitable[ExtendedClient]]) -> list[list[Reply]]:
        c = await open_client()
        first = await c.run(parse("dup", "select 1"), sync())
        clash = await c.run(parse("dup", "select 2"), run_statement("dup"), sync())
        after = await c.run(run_statement("dup"), sync())
        await c.close()
        return [first, clash, after]

    first, clash, after = await both(pg, proxy2, scenario)
    assert kinds(first) == "1Z"
    assert kinds(clash) == "EZ" and clash[0].detail == "42P05"
    assert kinds(after) == "2DCZ" and after[1].detail == "1"


async def test_bind_or_describe_of_an_unknown_name_is_26000_and_not_fatal(
    pg: PgServer, proxy2: RunningProxy
) -> None:
    async def scenario(open_client: Callable[[], Awaitable[ExtendedClient]]) -> list[list[Reply]]:
        c = await open_client()
        warm = await c.run(parse("known", "select 'k'"), sync())
        unknown = await c.run(run_statement("nosuch"), sync())
        ours = await c.run(run_statement("PYPROXY_1"), sync())
        described = await c.run(describe("S", "nosuch"), sync())
        after = await c.run(run_statement("known"), sync())
        await c.close()
        return [warm, unknown, ours, described, after]

    replies = await both(pg, proxy2, scenario)
    for r in replies[1:4]:
        assert kinds(r) == "EZ" and r[0].detail == "26000"
    assert kinds(replies[4]) == "2DCZ"


async def test_close_then_parse_the_same_name_with_another_query(
    pg: PgServer, proxy2: RunningProxy
) -> None:
    async def scenario(open_client: Callable[[], Awaitable[ExtendedClient]]) -> list[list[Reply]]:
        c = await open_client()
        one = await c.run(
            parse("s", "select 'one'"),
            run_statement("s"),
            close("S", "s"),
            parse("s", "select 'two'"),
            run_statement("s"),
            sync(),
        )
        closed = await c.run(close("S", "s"), sync())
        gone = await c.run(run_statement("s"), sync())
        closing_unknown = await c.run(close("S", "never"), close("P", "nope"), sync())
        await c.close()
        return [one, closed, gone, closing_unknown]

    one, closed, gone, closing_unknown = await both(pg, proxy2, scenario)
    assert kinds(one) == "12DC312DCZ"
    assert [r.detail for r in one if r.kind == "D"] == ["one", "two"]
    assert kinds(closed) == "3Z"
    assert kinds(gone) == "EZ" and gone[0].detail == "26000"
    assert kinds(closing_unknown) == "33Z"


async def test_two_clients_use_one_name_for_different_queries(proxy2: RunningProxy) -> None:
    open_client = opener(proxy2.host, proxy2.port, "testpool")
    clients = [await open_client() for _ in range(4)]
    for i, c in enumerate(clients):
        assert kinds(await c.run(parse("same", f"select {i} as n"), sync())) == "1Z"
    for _ in range(5):
        results = await asyncio.gather(*(c.run(run_statement("same"), sync()) for c in clients))
        assert [r[1].detail for r in results] == ["0", "1", "2", "3"]
    for c in clients:
        await c.close()


async def test_describe_before_bind_on_a_server_that_lacks_the_statement(
    pg: PgServer, proxy1: RunningProxy, pg_admin: asyncpg.Connection
) -> None:
    """pgJDBC style: Describe('S') first; the server has lost the statement in between."""
    t = tag()
    sql = f"select $1::int as {'v' + t}, 'x'::text as w"

    async def lose_server() -> None:
        await pg_admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE usename = $1 AND datname = $2 AND pid <> pg_backend_pid()",
            USERS["scram"][0],
            APP_DB,
        )
        await proxy1.wait_stats(sv_total=0, timeout=5)

    c = await ExtendedClient.connect(proxy1.host, proxy1.port, TRUST_USER, "testpool")
    d = await ExtendedClient.connect(pg.host, pg.port, TRUST_USER, APP_DB)
    for conn in (c, d):
        assert kinds(await conn.run(parse("jdbc1", sql), sync())) == "1Z"
    await lose_server()
    via_proxy = await c.run(describe("S", "jdbc1"), sync())
    direct = await d.run(describe("S", "jdbc1"), sync())
    assert via_proxy == direct
    assert kinds(via_proxy) == "tTZ"
    await lose_server()
    ran = await c.run(run_statement("jdbc1", ["7"]), sync())
    assert ran == await d.run(run_statement("jdbc1", ["7"]), sync())
    assert ran[1].detail == "7,x"
    await c.close()
    await d.close()


async def test_deallocate_all_from_one_client_leaves_other_clients_working(
    pg: PgServer, proxy1: RunningProxy
) -> None:
    open_client = opener(proxy1.host, proxy1.port, "testpool")
    a, b = await open_client(), await open_client()
    t = tag()
    assert kinds(await a.run(parse("a1", f"select 'a1' as {'a' + t}"), sync())) == "1Z"
    assert kinds(await b.run(parse("b1", f"select 'b1' as {'b' + t}"), sync())) == "1Z"
    for reset in ("DEALLOCATE ALL", "DISCARD ALL", "BEGIN; DEALLOCATE ALL; COMMIT"):
        assert kinds(await b.run(query(reset))).endswith("CZ")
        ran = await a.run(run_statement("a1"), sync())
        assert kinds(ran) == "2DCZ" and ran[1].detail == "a1", reset
        # b's own statements are gone, as on its own connection.
        gone = await b.run(run_statement("b1"), sync())
        assert kinds(gone) == "EZ" and gone[0].detail == "26000", reset
        assert kinds(await b.run(parse("b1", f"select 'b1' as {'b' + t}"), sync())) == "1Z"
    await a.close()
    await b.close()


async def test_pipelined_deallocate_all_then_parse_keeps_the_new_statement(
    pg: PgServer, proxy1: RunningProxy
) -> None:
    async def scenario(open_client: Callable[[], Awaitable[ExtendedClient]]) -> list[list[Reply]]:
        c = await open_client()
        old = await c.run(parse("s1", "select 'old'"), parse("s2", "select 'two'"), sync())
        simple = await c.run(
            query("DEALLOCATE ALL"),
            parse("s1", "select 'new'"),
            run_statement("s1"),
            sync(),
            ready=2,
        )
        later = await c.run(run_statement("s1"), sync())
        gone = await c.run(run_statement("s2"), sync())
        extended = await c.run(
            parse("", "DISCARD ALL"),
            bind("", ""),
            execute(),
            parse("s1", "select 'newer'"),
            run_statement("s1"),
            sync(),
        )
        final = await c.run(run_statement("s1"), sync())
        await c.close()
        return [old, simple, later, gone, extended, final]

    old, simple, later, gone, extended, final = await both(pg, proxy1, scenario)
    assert kinds(old) == "11Z"
    assert kinds(simple) == "CZ12DCZ" and simple[4].detail == "new"
    assert later[1].detail == "new"
    assert kinds(gone) == "EZ" and gone[0].detail == "26000"
    assert kinds(extended) == "12C12DCZ" and extended[5].detail == "newer"
    assert final[1].detail == "newer"


async def test_evicted_statement_survives_an_error_that_skips_its_close(
    pg: PgServer, proxy1: RunningProxy
) -> None:
    """Cap 2: a Close for an eviction that PostgreSQL skips after an error is not forgotten."""
    t = tag()

    async def scenario(open_client: Callable[[], Awaitable[ExtendedClient]]) -> list[list[Reply]]:
        c = await open_client()
        setup = await c.run(
            parse("s1", f"select 1 / $1::int as {'e' + t}"),
            parse("s2", f"select 'two' as {'e' + t}"),
            sync(),
        )
        failed = await c.run(
            run_statement("s1", ["0"]),
            parse("s3", f"select 'three' as {'e' + t}"),
            sync(),
        )
        replies = [setup, failed]
        for name in ("s2", "s1", "s2"):
            replies.append(await c.run(run_statement(name, ["1"] if name == "s1" else []), sync()))
        replies.append(await c.run(parse("s3", f"select 'three' as {'e' + t}"), sync()))
        replies.append(await c.run(run_statement("s3"), sync()))
        await c.close()
        return replies

    replies = await both(pg, proxy1, scenario)
    assert kinds(replies[1]) == "EZ" and replies[1][0].detail == "22012"
    assert [kinds(r) for r in replies[2:]] == ["2DCZ", "2DCZ", "2DCZ", "1Z", "2DCZ"]


async def test_sql_deallocate_of_a_protocol_statement_like_php_pdo(
    pg: PgServer, proxy2: RunningProxy
) -> None:
    """PDO prepares with Parse and drops with SQL ``DEALLOCATE name``."""

    async def scenario(open_client: Callable[[], Awaitable[ExtendedClient]]) -> list[list[Reply]]:
        c = await open_client()
        replies = [await c.run(parse("pdo_stmt_00000001", "select 'pdo'"), sync())]
        replies.append(await c.run(run_statement("pdo_stmt_00000001"), sync()))
        replies.append(await c.query("DEALLOCATE pdo_stmt_00000001"))
        replies.append(await c.run(run_statement("pdo_stmt_00000001"), sync()))
        replies.append(await c.query("DEALLOCATE pdo_stmt_00000001"))
        replies.append(await c.run(parse("pdo_stmt_00000001", "select 'again'"), sync()))
        replies.append(await c.query("BEGIN"))
        replies.append(await c.query("DEALLOCATE PREPARE pdo_stmt_00000001"))
        replies.append(await c.query("COMMIT"))
        replies.append(await c.query("select count(*) from pg_prepared_statements where false"))
        await c.close()
        return replies

    replies = await both(pg, proxy2, scenario)
    assert [kinds(r) for r in replies] == [
        "1Z",
        "2DCZ",
        "CZ",
        "EZ",
        "EZ",
        "1Z",
        "CZ",
        "CZ",
        "CZ",
        "TDCZ",
    ]
    assert replies[2][0].detail == "DEALLOCATE"
    assert replies[3][0].detail == "26000" and replies[4][0].detail == "26000"


async def test_malformed_parse_gets_postgresql_own_error(
    pg: PgServer, proxy2: RunningProxy
) -> None:
    async def scenario(open_client: Callable[[], Awaitable[ExtendedClient]]) -> list[list[Reply]]:
        c = await open_client()
        bad = await c.run(typed("P", b"no_terminator"), sync())
        after = await c.run(parse("ok", "select 'fine'"), run_statement("ok"), sync())
        await c.close()
        return [bad, after]

    bad, after = await both(pg, proxy2, scenario)
    assert kinds(bad) == "EZ" and bad[0].detail == "08P01"
    assert kinds(after) == "12DCZ"
