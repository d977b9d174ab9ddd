"""The fast lane is a shortcut of the general path: any byte stream from any clients, cut
anywhere, must give the same client-visible bytes and the same pool state through the lane
(``pyproxy.net.lane``) as with the lane switched off (its ``request`` and ``reply`` declining
everything, so that every byte goes through the client shell, the accounting and the relay).

The world is the fake one of ``tests.support.fakes`` (real pool, client and server objects),
with servers that answer message by message as PostgreSQL would (transaction status, errors
that skip to Sync, prepared statements, fatal protocol violations); no event loop turns, so
both runs take exactly the same steps.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyproxy.net import lane
from pyproxy.proto.phases import ClientPhase
from tests.support import fakes
from tests.support.extended import bind, close, describe, execute, flush, parse, sync
from tests.support.fakepg import KILLED, Client, Pg
from tests.support.recording import plain
from tests.support.wire import query, typed

EXAMPLES = int(os.environ.get("PYPROXY_FUZZ_EXAMPLES", "200"))
MODES = ["transaction", "session", "statement"]

# ---- two runs of one script -------------------------------------------------------------------

Step = tuple[str, int, Any]  # ("c", client, bytes), ("s", server, most bytes or a reply: None),
# ("kill", server, 0): PostgreSQL ends it, ("pause", 0, 1 or 0): the pool pauses or resumes,
# ("bye", client, 0): the client disconnects


@contextmanager
def lane_switch(on: bool, hits: list[int]) -> Iterator[None]:
    """The lane as it is (counting the requests and replies it took and its hand-overs), or
    declining everything (then its hand-over, called only from its ``reply``, never runs)."""
    request, reply, hand_over = lane.request, lane.reply, lane._hand_over

    def counting_request(client: Any, data: bytes) -> bool:
        took = request(client, data)
        hits[0] += took
        return took

    def counting_reply(server: Any, data: bytes) -> bool:
        took = reply(server, data)
        hits[1] += took
        return took

    def counting_hand_over(*args: Any) -> None:
        hits[2] += 1
        hand_over(*args)

    def off(*_: Any) -> bool:
        return False

    lane.request = counting_request if on else off  # type: ignore[assignment]
    lane.reply = counting_reply if on else off  # type: ignore[assignment]
    lane._hand_over = counting_hand_over
    try:
        yield
    finally:
        lane.request, lane.reply = request, reply  # type: ignore[assignment]
        lane._hand_over = hand_over


def run(
    script: list[Step], mode: str, size: int, clients: int, on: bool, metrics: bool = True
) -> tuple[Any, list[int]]:
    hits = [0, 0, 0]

    async def go() -> Any:
        size_was, fakes.POOL_SIZE = fakes.POOL_SIZE, size
        try:
            servers, conns = fakes.world(clients, mode, metrics)
        finally:
            fakes.POOL_SIZE = size_was
        pool = servers[0].pool
        for server in servers:
            server.transport = Pg()  # type: ignore[assignment]
        for conn in conns:
            conn.transport = Client()  # type: ignore[assignment]
        for kind, who, arg in script:
            if kind == "c":
                if conns[who].phase is not ClientPhase.CLOSED:
                    conns[who].data_received(arg)
            elif kind == "kill":
                servers[who].transport.die(KILLED)  # type: ignore[attr-defined]
            elif kind == "bye":
                conns[who].transport.close()
            elif kind == "pause":
                pool.set_paused(bool(arg))
            elif who < len(servers):
                deliver(servers[who], arg)
            settle(servers, conns)
        for _ in range(500):  # the rest of every answer, and what it sets going
            if not any(s.transport.out for s in servers):  # type: ignore[attr-defined]
                break
            for server in servers:
                deliver(server, None)
                settle(servers, conns)
        return snapshot(pool, servers, conns)

    with lane_switch(on, hits):
        return asyncio.run(go()), hits


def deliver(server: Any, most: int | None) -> None:
    """The next ``most`` bytes the server has to say, or (None) its next reply: up to and
    including a ReadyForQuery, as PostgreSQL flushes its output."""
    pg = server.transport
    if not isinstance(pg, Pg) or not pg.out or server.closed:
        return
    if most is None:
        most = 0
        while most < len(pg.out):
            kind, most = pg.out[most], most + 1 + int.from_bytes(pg.out[most + 1 : most + 5])
            if kind == ord("Z"):
                break
    data, pg.out = pg.out[:most], pg.out[most:]
    server.data_received(data)


def settle(servers: list[Any], conns: list[Any]) -> None:
    """Closed transports report it, as asyncio's do on the next turn of the loop."""
    for server in servers:
        pg = server.transport
        if isinstance(pg, Pg) and pg.closed and not pg.out and not pg.lost:
            pg.lost = True
            server.connection_lost(None)
    for conn in conns:
        if conn.transport.closed and conn.phase is not ClientPhase.CLOSED:
            conn.connection_lost(None)


def snapshot(pool: Any, servers: list[Any], conns: list[Any]) -> dict[str, Any]:
    sid = {id(s): j for j, s in enumerate(servers)}
    cid = {id(c): i for i, c in enumerate(conns)}
    places = {"idle": pool.idle, "linked": pool.linked, "cleaning": pool.cleaning}
    places["canceling"] = pool.canceling

    def where(s: Any) -> str:
        return next((k for k, v in places.items() if s in v), "out")

    figures = {k: getattr(pool.figures, k) for k in pool.figures.__slots__}
    figures = {k: sum(v) if isinstance(v, list) else v for k, v in figures.items()}
    figures = {k: v for k, v in figures.items() if not isinstance(v, float)}  # times
    return {
        "to_clients": [b"".join(c.transport.written) for c in conns],
        "closed": [c.transport.closed for c in conns],
        "clients": [
            (
                c.phase.name,
                sid.get(id(c.server)),
                c.open_ext,
                c.skip,
                bytes(c.tail),
                c.retry,
                c.retries,
                c.copy_syncs,
            )
            for c in conns
        ],
        "servers": [
            (
                where(s),
                s.phase.name,
                cid.get(id(s.client)),
                s.pending,
                s.status,
                [tuple(map(plain, e)) for e in s.stmts.queue],
                s.stmts.sent_seg,
                s.stmts.recv_seg,
                s.link_gen,
                s.transport.inbuf,  # what reached PostgreSQL but is not whole yet
            )
            for s in servers
        ],
        "waiters": [cid.get(id(c)) for c in pool.waiters],
        "opening": (pool.servers, pool.opener.connecting, len(pool.opener.tasks)),
        "counts": (pool.xact_count, pool.wait_count, pool.stats, figures),
    }


def same(script: list[Step], mode: str, size: int, clients: int, metrics: bool = True) -> list[int]:
    """Run ``script`` both ways, assert the outcomes are equal; the lane's hits."""
    with_lane, hits = run(script, mode, size, clients, True, metrics)
    general, none = run(script, mode, size, clients, False, metrics)
    assert none == [0, 0, 0]
    assert with_lane == general
    return hits


def turns(*sends: tuple[int, bytes]) -> list[Step]:
    """Each client's request answered in full before the next is sent."""
    script: list[Step] = []
    for who, data in sends:
        script.append(("c", who, data))
        script += [("s", j, None) for j in range(2)]
    return script


def cut(data: bytes, at: int) -> list[bytes]:
    return [data[:at], data[at:]] if 0 < at < len(data) else [data]


# ---- (1) the shapes of the shape tests, repeated so that the lane learns them ---------------

SQL = "select $1::int as v"
EXTENDED = parse("", SQL) + bind("", "", ["12345"]) + describe("P", "") + execute() + sync()
NAMED = bind("", "s", ["7"]) + execute() + sync()
SIMPLE = query("select abalance from pgbench_accounts where aid = 1")
SHAPES = {
    "simple": SIMPLE,
    "extended": EXTENDED,
    "longer parameter": EXTENDED.replace(bind("", "", ["12345"]), bind("", "", ["123456789"])),
    "named statement": NAMED,
    "extended without describe": parse("", SQL) + bind("", "", ["1"]) + execute() + sync(),
}
REPEATS = 24


def shape_script(data: bytes, clients: int) -> list[Step]:
    setup = turns(*((i, parse("s", SQL) + sync()) for i in range(clients)))
    return setup + turns(*((k % clients, data) for k in range(REPEATS * clients)))


def overlapping(data: bytes, at: int = 0) -> list[Step]:
    """Two clients, one server: the second queues while the first's request runs (the lane
    hands the server over), its request cut ``at`` a byte (0: whole)."""
    script = turns((0, parse("s", SQL) + sync()), (1, parse("s", SQL) + sync()))
    for _ in range(REPEATS):
        script += [("c", 0, data), *(("c", 1, piece) for piece in cut(data, at))]
        script += [("s", 0, None), ("s", 0, None)]
    return script


def engaged(hits: list[int], mode: str, name: str) -> None:
    """The lane took most of the requests and replies; in session mode no statement queue
    is kept, so a reply with a ParseComplete is the general path's, and a named statement's
    Bind is not renamed, so its request is too."""
    requests = not (mode == "session" and name == "named statement")
    replies = not (mode == "session" and name not in ("simple", "named statement"))
    assert (hits[0] > REPEATS // 2) == requests and (hits[1] > REPEATS // 2) == replies, hits


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", SHAPES)
def test_repeated_shapes_take_the_lane_and_end_as_the_general_path(mode: str, name: str) -> None:
    data = SHAPES[name]
    engaged(same(shape_script(data, 1), mode, 1, 1), mode, name)
    engaged(same(shape_script(data, 2), mode, 2, 2), mode, name)
    if mode != "session":
        hits = same(overlapping(data), mode, 1, 2)
        assert hits[1] > REPEATS // 2 and hits[2] > REPEATS // 2, hits
        hits = same(overlapping(data, len(data) // 2), mode, 1, 2)
        assert hits[1] > REPEATS // 2 and hits[2] > REPEATS // 2, hits


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", SHAPES)
def test_repeated_shapes_cut_anywhere_end_as_the_general_path(mode: str, name: str) -> None:
    data = SHAPES[name]
    script = shape_script(data, 1)
    for at in range(1, len(data)):
        script += [("c", 0, piece) for piece in cut(data, at)] + [("s", 0, at)]
        script += [("s", 0, None)]
    engaged(same(script, mode, 1, 1), mode, name)


# ---- (2) generated streams: the hostile-client fuzzer's messages, several clients, 1-2 servers

FUZZ_SQL = (
    "SELECT 1",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SELECT 1/0",
    "not sql at all",
    "",
    "SELECT 1; SELECT 2",
    "BEGIN; SELECT 1",
    "COPY (SELECT 1) TO STDOUT",
    "SET work_mem = '7MB'",
)


def _message() -> st.SearchStrategy[bytes]:
    """The fuzzer's (tests/integration/test_hostile_clients.py) message kinds, with requests
    the lane learns (the shapes above) weighted in."""
    names = st.sampled_from(["", "s", "s2", "PYPROXY_1"])
    well_formed = st.one_of(
        st.sampled_from(FUZZ_SQL).map(query),
        st.builds(parse, names, st.sampled_from(FUZZ_SQL)),
        st.builds(lambda p, s: bind(p, s, []), st.sampled_from(["", "p1"]), names),
        st.builds(describe, st.sampled_from(["S", "P", "X"]), names),
        st.builds(execute, st.sampled_from(["", "p1"]), st.integers(0, 3)),
        st.builds(close, st.sampled_from(["S", "P"]), names),
        st.just(sync()),
        st.just(flush()),
        st.binary(max_size=12).map(lambda b: typed("d", b)),
        st.just(typed("c", b"")),
        st.just(typed("H", b"xx")),
    )
    hostile = st.one_of(
        st.builds(lambda t, b: typed(chr(t), b), st.integers(0, 255), st.binary(max_size=8)),
        st.builds(
            lambda t, n: bytes([t]) + n.to_bytes(4, "big"),
            st.sampled_from(b"QPBESDd"),
            st.one_of(st.integers(0, 3), st.integers(2**24, 2**32 - 1)),
        ),
    )
    learnt = st.sampled_from(list(SHAPES.values()))
    return st.one_of(learnt, learnt, learnt, well_formed, well_formed, hostile)


@st.composite
def scripts(draw: st.DrawFn) -> tuple[list[Step], str, int, int, bool]:
    """Every client learns one of the shapes (a warm-up of whole turns), then sends generated
    messages cut anywhere, or the shape all at once (a burst), while the servers answer a
    reply or a few bytes at a time."""
    mode = draw(st.sampled_from(MODES))
    size = draw(st.integers(1, 2))
    clients = draw(st.integers(1, 3))
    shape = draw(st.sampled_from(list(SHAPES.values())))
    script = turns(*((i, parse("s", SQL) + sync()) for i in range(clients)))
    script += turns(*((k % clients, shape) for k in range(WARM * clients)))
    messages = st.one_of(st.just(shape), _message())
    for _ in range(draw(st.integers(1, 30))):
        step = draw(st.integers(0, 4))
        if step == 4:  # now and then: a backend ends, the pool pauses or resumes, a client goes
            events = [("kill", 0, 0), ("pause", 0, 1), ("pause", 0, 0), ("bye", clients - 1, 0)]
            script.append(draw(st.sampled_from(events)))
        elif step == 3:  # a burst: every client sends the shape, one reply comes back
            script += [("c", i, shape) for i in range(clients)] + [("s", 0, None)]
        elif step:
            who = draw(st.integers(0, clients - 1))
            data = b"".join(draw(st.lists(messages, min_size=1, max_size=3)))
            for piece in cut(data, draw(st.integers(0, len(data)))):
                script.append(("c", who, piece))
        else:
            most = draw(st.one_of(st.none(), st.integers(1, 200)))  # a reply, or a cut
            script.append(("s", draw(st.integers(0, size - 1)), most))
    return script, mode, size, clients, draw(st.booleans())  # metrics on or off


WARM = 10


def test_generated_streams_end_as_the_general_path() -> None:
    total = [0, 0, 0, 0]  # examples, lane requests, lane replies, lane hand-overs

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(scripts())
    def check(case: tuple[list[Step], str, int, int, bool]) -> None:
        hits = same(*case)
        total[0] += 1
        total[1] += hits[0]
        total[2] += hits[1]
        total[3] += hits[2]

    check()
    print(f"generated streams: {total[0]} examples, lane hits {total[1:]}")
    assert total[0] >= EXAMPLES
    assert total[1] > total[0] and total[2] > total[0] and total[3] > 0, total


# ---- (3) the isolation regression streams (tests/integration/test_isolation.py) ---------------

PIPELINE = (
    query("SELECT 1")
    + parse("", "SELECT $1::int + 1")
    + bind("", "", ["41"])
    + describe("P", "")
    + execute()
    + sync()
    + query("SELECT 'x'; SELECT 2")
)


def warmed(data: bytes) -> list[Step]:
    """The lane learnt ``data`` (sent and answered REPEATS times by client 0)."""
    return turns(*((0, data) for _ in range(REPEATS)))


ISOLATION: dict[str, tuple[list[Step], int, int]] = {
    **{
        f"stray {kind!r} then gone": (
            [
                *warmed(SIMPLE),
                ("c", 0, typed(kind, b"I")),
                ("s", 0, None),
                *turns((1, SIMPLE), (1, EXTENDED)),
            ],
            1,
            2,
        )
        for kind in ("Z", "p", "1", "K", "R", "\x00", "y")
    },
    "copy done without copy": (
        warmed(SIMPLE)
        + turns(*((0, sync() + sync() + typed("c", b"") + SIMPLE) for _ in range(5)))
        + turns((1, EXTENDED)),
        1,
        2,
    ),
    "malformed flush": (
        warmed(EXTENDED) + turns((0, typed("H", b"xx")), (1, EXTENDED), (0, EXTENDED)),
        1,
        2,
    ),
    "kept server killed": (
        [*warmed(SIMPLE), ("kill", 0, 0), ("c", 0, SIMPLE), ("s", 0, None), *turns((1, SIMPLE))],
        1,
        2,
    ),
    "killed while the request runs": (
        [*warmed(EXTENDED), ("c", 0, EXTENDED), ("kill", 0, 0), ("c", 1, SIMPLE)],
        1,
        2,
    ),
    "queued behind an open transaction": (
        warmed(SIMPLE)
        + turns((0, query("BEGIN")), (0, SIMPLE))
        + [("c", 1, SIMPLE), ("c", 0, query("COMMIT"))]
        + turns((0, SIMPLE), (1, SIMPLE)),
        1,
        2,
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ISOLATION)
def test_isolation_streams_end_as_the_general_path(mode: str, name: str) -> None:
    script, size, clients = ISOLATION[name]
    hits = same(script, mode, size, clients)
    assert hits[0] + hits[1] > REPEATS // 2, hits


@pytest.mark.parametrize("mode", MODES)
def test_a_pipeline_split_at_every_byte_ends_as_the_general_path(mode: str) -> None:
    script = warmed(SIMPLE)
    for at in range(1, len(PIPELINE)):
        script += [("c", 0, piece) for piece in cut(PIPELINE, at)]
        script += [("s", 0, at), ("s", 0, None), ("s", 1, None)]
    for head in (1, 2, 3, 4):  # a partial header first, on the kept server
        script += [("c", 0, piece) for piece in cut(SIMPLE, head)] + [("s", 0, None)]
    hits = same(script, mode, 2, 1)
    assert hits[0] and hits[1], hits


def test_a_fatal_cut_after_a_final_ready_for_query_never_raises() -> None:
    """Found by the generated streams (both paths alike): PostgreSQL's FATAL follows the
    transaction's last ReadyForQuery in one read, cut before its end; the server goes back to
    the (paused) pool, which dropped the bytes after the ReadyForQuery, so the FATAL's rest
    reached the idle server as if a message started there, and the length error escaped
    ``data_received`` (asyncio then logs a fatal error). Now the idle server is closed."""
    kept = bind("", "s", ["7"]) + execute() + sync()  # an unknown statement: error, Sync
    for at in range(30, 60):
        script = [("c", 0, kept), ("pause", 0, 1), ("kill", 0, 0), ("s", 0, at)]
        assert same(script, "transaction", 1, 1, False) == [0, 0, 0]


def test_a_held_back_reply_start_reaches_a_client_that_sent_more_meanwhile() -> None:
    """Found by the generated streams (a lane/general difference): the start of a reply that
    may still be retried is held back (``ServerConn._first_reply``); the client then sends
    more, which ends the retry, and the held bytes (here its ParseComplete) were dropped,
    leaving a stale statement-queue entry that later answered another request."""
    for more in (sync()[:3], sync(), query("select 1")):
        script = [("c", 0, EXTENDED), ("s", 0, 5), ("c", 0, more), ("s", 0, None)]
        same(script, "transaction", 1, 1)
        general, _ = run(script, "transaction", 1, 1, False)
        assert general["to_clients"][0].startswith(b"1\0\0\0\x042\0\0\0\x04")
    script = [("c", 0, EXTENDED), ("c", 1, EXTENDED), ("s", 1, 5), ("kill", 0, 0)]
    script += [("c", 1, sync()), ("c", 0, sync()[:3]), ("s", 0, None), ("c", 1, EXTENDED)]
    same([*script, ("s", 0, None), ("c", 1, EXTENDED)], "transaction", 2, 2)
