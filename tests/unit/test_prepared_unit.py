"""Shared statement names, per-server LRU bookkeeping and what an ErrorResponse undoes."""

from __future__ import annotations

import struct

from pyproxy.proto import messages as m
from pyproxy.session import prepared as ps


def rest(sql: str, *types: int) -> bytes:
    return sql.encode() + b"\0" + struct.pack(f"!H{len(types)}I", len(types), *types)


def error_body(code: str, message: str) -> bytes:
    return f"SERROR\0C{code}\0M{message}\0\0".encode()


def test_identical_statements_share_one_name_and_types_matter() -> None:
    reg = ps.StatementRegistry()
    a = reg.get(rest("select $1", 23))
    assert reg.get(rest("select $1", 23)) is a
    b = reg.get(rest("select $1", 25))
    assert b.name != a.name and a.name.startswith(ps.PREFIX)
    assert a.query == b"select $1"
    assert a.parse_message[:1] == b"P"
    assert struct.unpack("!I", a.parse_message[1:5])[0] == len(a.parse_message) - 1


def test_a_retired_statement_gets_a_fresh_name() -> None:
    reg = ps.StatementRegistry()
    old = reg.get(rest("select * from t"))
    old.retired = True
    new = reg.get(rest("select * from t"))
    assert new is not old and new.name != old.name
    assert reg.get(rest("select * from t")) is new


def test_server_lru_evicts_the_least_recently_used() -> None:
    sts = ps.ServerStatements(2)
    assert sts.add(b"A") is None
    assert sts.add(b"B") is None
    assert sts.has(b"A")  # A is now the most recent
    assert sts.add(b"C") == b"B"
    assert list(sts.prepared) == [b"A", b"C"]


def test_error_drops_the_rest_of_the_segment_and_undoes_its_promises() -> None:
    sts = ps.ServerStatements(10)
    client: dict[bytes, object] = {b"kept": "old", b"closed": "stmt-c"}
    sts.add(b"P1")
    sts.add(b"EVICTED_BUT_SKIPPED")
    sts.prepared.pop(b"EVICTED_BUT_SKIPPED")
    client[b"new"] = "stmt-n"
    sts.queue.extend(
        [
            (ps.FORWARD, 0, None),  # answered before the error
            (ps.FORWARD, 0, b"P1", (client, b"new", None), None),  # the failing Parse
            (ps.SKIP, 0, None, None, b"EVICTED_BUT_SKIPPED"),  # its eviction, skipped
            (ps.FORWARD, 0, None, (client, b"closed", "stmt-c"), None),  # a skipped Close
            (ps.SKIP, 1, b"NEXT"),  # after the Sync: untouched
        ]
    )
    client.pop(b"closed")
    sts.queue.popleft()
    sts.error(error_body("42601", "syntax error"), 0, 40)
    assert b"P1" not in sts.prepared
    assert b"EVICTED_BUT_SKIPPED" in sts.unsure
    assert client == {b"kept": "old", b"closed": "stmt-c"}
    assert list(sts.queue) == [(ps.SKIP, 1, b"NEXT")]


def test_undo_runs_newest_first() -> None:
    sts = ps.ServerStatements(10)
    client: dict[bytes, object] = {}
    # Parse s (new), Close s, Parse s again, all skipped after an error.
    sts.queue.extend(
        [
            (ps.FORWARD, 0, b"X", (client, b"s", None), None),
            (ps.FORWARD, 0, None, (client, b"s", "first"), None),
            (ps.FORWARD, 0, b"Y", (client, b"s", None), None),
        ]
    )
    client[b"s"] = "second"
    sts.error()
    assert client == {}


def test_forget_all_makes_every_name_unsure() -> None:
    sts = ps.ServerStatements(10)
    sts.add(b"A")
    sts.add(b"B")
    sts.forget_all()
    assert not sts.has(b"A")
    assert sts.unsure == {b"A", b"B"}
    sts.add(b"A")
    assert sts.unsure == {b"B"}


def test_stale_plan_error_retires_the_statements_bound_in_that_segment() -> None:
    reg = ps.StatementRegistry()
    stale = reg.get(rest("select * from t"))
    other = reg.get(rest("select 1"))
    later = reg.get(rest("select 2"))
    sts = ps.ServerStatements(10)
    sts.note_bind(7, stale)
    sts.sent_seg = 1
    sts.note_bind(7, later)
    body = error_body("0A000", "cached plan must not change result type")
    sts.error(body, 0, len(body), link=7)
    assert stale.retired and not later.retired and not other.retired
    # Another error code, or another link's binds, retire nothing.
    sts.recv_seg = 1
    sts.error(error_body("22012", "division by zero"), 0, 40, link=7)
    sts.error(body, 0, len(body), link=8)
    assert not later.retired


def test_parse_rest_with_query_keeps_declared_types() -> None:
    out = m.parse_rest_with_query(rest("select $1, $2", 23, 0), b"DO $$ $$")
    assert out == b"DO $$ $$\0" + struct.pack("!H2I", 2, 23, 25)
    assert m.parse_rest_with_query(rest("select 1"), b"x") == b"x\0" + struct.pack("!H", 0)


def test_unknown_names_that_look_like_ours_are_made_safe() -> None:
    assert ps.unknown_name(b"s1") == b"s1"
    assert ps.unknown_name(b"PYPROXY_3") != b"PYPROXY_3"
