"""A request repeated with new Bind parameters (how drivers run an unnamed statement again)
is recognised by its shape and forwarded without a message walk: it must still answer exactly
as PostgreSQL does, keep its server until its last answer and keep the statement queue right."""

from __future__ import annotations

import asyncio
import uuid

from tests.support.extended import (
    Reply,
    bind,
    describe,
    execute,
    kinds,
    parse,
    run_statement,
    sync,
)
from tests.support.pgcluster import PgServer
from tests.support.proxy import RunningProxy
from tests.support.side_by_side import Opener, both, opener
from tests.support.wire import typed


def unnamed(sql: str, value: str | None, *, with_describe: bool = True) -> bytes:
    """Parse + Bind + (Describe) + Execute + Sync of an unnamed statement, as pgbench -M
    extended and psycopg send them."""
    return (
        parse("", sql)
        + bind("", "", [value])
        + (describe("P", "") if with_describe else b"")
        + execute()
        + sync()
    )


async def test_each_repeat_answers_its_own_parameter(pg: PgServer, proxy1: RunningProxy) -> None:
    sql = "select $1::text || '!' as v"
    values = ["1", "22", None, "x" * 300, "", "33"]

    async def scenario(open_client: Opener) -> list[list[Reply]]:
        c = await open_client()
        replies = [await c.run(unnamed(sql, v)) for v in values]
        # The same Parse with another tail, then a Bind of a named portal: new shapes.
        replies.append(await c.run(unnamed(sql, "no describe", with_describe=False)))
        replies.append(await c.run(unnamed(sql, "again")))
        replies.append(
            await c.run(parse("", sql), bind("p", "", ["named portal"]), execute("p"), sync())
        )
        replies.append(await c.run(unnamed(sql, "last")))
        await c.close()
        return replies

    replies = await both(pg, proxy1, scenario)
    details = [r[3].detail for r in replies[: len(values)]]
    assert details == ["1!", "22!", "NULL", "x" * 300 + "!", "!", "33!"]
    assert [kinds(r) for r in replies[len(values) :]] == ["12DCZ", "12TDCZ", "12DCZ", "12TDCZ"]
    assert replies[-1][3].detail == "last!"


async def test_pipelined_repeats_keep_the_server_until_their_last_answer(
    proxy1: RunningProxy,
) -> None:
    """Pool of one: a queued client must not get the server while repeats are in flight."""
    open_client = opener(proxy1.host, proxy1.port, "testpool")
    a = await open_client()
    b = await open_client()
    sql = "select $1::text as v, pg_sleep(0.1)"
    first = await a.run(unnamed(sql, "0"))
    assert first[3].detail == "0,"
    for v in ("1", "2", "3"):  # separate reads, each the learnt shape
        await a.send(unnamed(sql, v))
        await asyncio.sleep(0.02)
    b_reply = asyncio.create_task(b.run(unnamed("select $1::text as w", "b")))
    a_replies = await a.read(ready=3)
    assert [r.detail for r in a_replies if r.kind == "D"] == ["1,", "2,", "3,"]
    assert [r.detail for r in await b_reply if r.kind == "D"] == ["b"]
    await a.close()
    await b.close()


async def test_repeat_followed_by_a_statement_pyproxy_prepares_again(
    pg: PgServer, proxy1: RunningProxy
) -> None:
    """The repeat's ParseComplete is the client's; the re-prepared statement's is pyproxy's."""
    t = uuid.uuid4().hex[:8]
    # Slow enough that the next request arrives before the repeat's ParseComplete.
    sql = f"select $1::int * 10 as r{t}, pg_sleep(0.2)"

    async def scenario(open_client: Opener) -> list[list[Reply]]:
        c = await open_client()
        replies = [
            await c.run(
                parse("s1", f"select $1::int + 1 as a{t}"),
                parse("s2", f"select 2 as b{t}"),
                parse("s3", f"select 3 as c{t}"),  # the cap is 2: s1 leaves the server
                sync(),
            ),
            await c.run(unnamed(sql, "4")),
        ]
        await c.send(unnamed(sql, "5"))  # the learnt shape
        await asyncio.sleep(0.05)
        await c.send(run_statement("s1", ["6"]), sync())  # s1 is prepared on the server again
        replies.append(await c.read(ready=2))
        await c.close()
        return replies

    replies = await both(pg, proxy1, scenario)
    assert kinds(replies[2]) == "12TDCZ2DCZ"
    assert [r.detail for r in replies[2] if r.kind == "D"] == ["50,", "7"]


async def test_repeated_copy_in_through_the_extended_protocol_releases_its_server(
    proxy1: RunningProxy,
) -> None:
    """PostgreSQL ignores the Sync sent with a COPY's Execute: the repeat must count that too,
    or the server would wait for one ReadyForQuery too many and never serve anyone else."""
    t = uuid.uuid4().hex[:8]
    open_client = opener(proxy1.host, proxy1.port, "testpool")
    a = await open_client()
    assert kinds(await a.query(f"create table rep_copy_{t} (v text)")) == "CZ"
    for i in range(3):
        await a.send(parse("", f"copy rep_copy_{t} from stdin"), bind("", ""), execute(), sync())
        got = []
        while not got or got[-1] != "G":
            msg = await a.wire.read_message(5.0)
            assert msg is not None
            got.append(msg[0])
        assert got == ["1", "2", "G"]
        await a.send(typed("d", f"row {i}\n".encode()), typed("c", b""), sync())
        assert kinds(await a.read()) == "CZ"
        assert kinds(await a.query("select 1")) == "TDCZ"  # between COPYs, another request
    b = await open_client()
    rows = await b.query(f"select count(*) from rep_copy_{t}")
    assert [r.detail for r in rows if r.kind == "D"] == ["3"]
    assert kinds(await b.query(f"drop table rep_copy_{t}")) == "CZ"
    await a.close()
    await b.close()


async def test_repeated_simple_queries_answer_as_postgresql_does(
    pg: PgServer, proxy1: RunningProxy
) -> None:
    """Replies that repeat the last one's shape (same columns and tag, other values) are
    recognised; rows, errors, notices and parameter changes in between still come through."""
    queries = [
        "select 1 as n",
        "select 2 as n",
        "select 33333 as n",
        "select n from generate_series(1, 3) as n",
        "select n from generate_series(4, 6) as n",
        "select 1 / 0 as n",
        "select 4 as n",
        "do $$ begin raise notice 'between'; end $$",
        "select 5 as n",
        "set application_name = 'repeated'",
        "select 6 as n",
        "select current_setting('application_name') as n",
    ]

    async def scenario(open_client: Opener) -> list[list[Reply]]:
        c = await open_client()
        replies = [await c.query(q) for q in queries]
        await c.close()
        return replies

    replies = await both(pg, proxy1, scenario)
    rows = [[r.detail for r in reply if r.kind == "D"] for reply in replies]
    assert rows == [
        ["1"], ["2"], ["33333"], ["1", "2", "3"], ["4", "5", "6"], [], ["4"], [], ["5"], [],
        ["6"], ["repeated"],
    ]  # fmt: skip
    assert replies[5][0] == Reply("E", "22012")
