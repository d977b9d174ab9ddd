"""The framers and the message walk: whole messages whatever the chunking (whole, byte by byte,
any split), the trailing bytes kept, one length check that refuses before buffering."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyproxy.errors import PgError, ProtocolError
from pyproxy.proto.framing import (
    MessageFramer,
    StartupFramer,
    count_ready,
    message_end,
    run_end,
    walk,
)
from tests.support.wire import typed

LIMIT = 1 << 16

messages = st.lists(
    st.tuples(st.sampled_from("QPBDESCHXdcf"), st.binary(max_size=64)), min_size=1, max_size=12
)


def encode(msgs: list[tuple[str, bytes]]) -> bytes:
    return b"".join(typed(kind, body) for kind, body in msgs)


def expected(msgs: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
    return [(ord(kind), body) for kind, body in msgs]


@given(messages)
def test_message_framer_whole(msgs: list[tuple[str, bytes]]) -> None:
    framer = MessageFramer(LIMIT)
    assert framer.feed(encode(msgs)) == expected(msgs)
    assert framer.buffered == 0


@given(messages)
def test_message_framer_byte_by_byte(msgs: list[tuple[str, bytes]]) -> None:
    framer = MessageFramer(LIMIT)
    out = []
    for i, byte in enumerate(encode(msgs)):
        out.extend(framer.feed(bytes([byte])))
        assert framer.buffered <= i + 1
    assert out == expected(msgs)


@given(messages, st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_message_framer_any_split(msgs: list[tuple[str, bytes]], cuts: list[int]) -> None:
    data = encode(msgs)
    points = sorted({c % (len(data) + 1) for c in cuts})
    framer = MessageFramer(LIMIT)
    out = []
    start = 0
    for point in [*points, len(data)]:
        out.extend(framer.feed(data[start:point]))
        start = point
    assert out == expected(msgs)


@given(messages, st.integers(min_value=1, max_value=200))
def test_trailing_bytes_stay_buffered_until_whole(msgs: list[tuple[str, bytes]], cut: int) -> None:
    data = encode(msgs)
    last = typed("Q", b"select 1\0")
    cut = cut % len(last)
    framer = MessageFramer(LIMIT)
    assert framer.feed(data + last[:cut]) == expected(msgs)
    assert framer.buffered == cut
    assert framer.take_rest() == last[:cut]
    assert framer.buffered == 0


@pytest.mark.parametrize("length", [0, 3])
def test_a_length_under_four_is_refused(length: int) -> None:
    with pytest.raises(ProtocolError):
        MessageFramer(LIMIT).feed(b"Q" + struct.pack("!I", length))


def test_an_oversize_length_is_refused_before_its_body_arrives() -> None:
    framer = MessageFramer(LIMIT)
    with pytest.raises(PgError) as err:
        framer.feed(b"Q" + struct.pack("!I", LIMIT + 1))  # only the header: nothing buffered
    assert err.value.sqlstate == "54000" and err.value.fatal


@given(messages, st.integers(min_value=0, max_value=200))
def test_walk_finds_the_same_messages_and_where_the_cut_one_starts(
    msgs: list[tuple[str, bytes]], cut: int
) -> None:
    data = encode(msgs)
    last = typed("S", b"")
    cut = cut % len(last)
    found, stop = walk(data + last[:cut])
    assert [(kind, data[start + 5 : end]) for kind, start, end in found] == expected(msgs)
    assert stop == len(data)
    assert [message_end(data, start) for _, start, _ in found] == [end for _, _, end in found]


def test_walk_refuses_a_bad_length() -> None:
    with pytest.raises(ProtocolError):
        walk(typed("Q", b"x\0") + b"S" + struct.pack("!I", 2))
    with pytest.raises(PgError):
        walk(b"D" + struct.pack("!I", 100), limit=50)


def test_run_end_skips_one_type_only() -> None:
    rows = typed("D", b"a") + typed("D", b"bc")
    data = rows + typed("C", b"SELECT 2\0")
    assert run_end(data, 0, len(data), ord("D")) == len(rows)
    assert run_end(data, 0, 3, ord("D")) >= 3  # past the stop: the run does not end there


def test_count_ready_counts_what_postgresql_answers_with_ready_for_query() -> None:
    data = typed("Q", b"select 1\0") + typed("P", b"\0x\0\0\0") + typed("S", b"")
    data += typed("F", b"\0\0\0\1\0\0\0\0\0\0")
    assert count_ready(data) == 3


@given(st.binary(max_size=40), st.integers(min_value=1, max_value=8))
def test_startup_framer_any_chunking(payload: bytes, step: int) -> None:
    packet = struct.pack("!II", 8 + len(payload), 196608) + payload
    framer = StartupFramer()
    result = None
    for i in range(0, len(packet) + 3, step):
        chunk = (packet + b"xyz")[i : i + step]
        if result is None:
            result = framer.feed(chunk)
            if result is not None:
                rest = result[2] + (packet + b"xyz")[i + step :]
    assert result is not None
    assert result[0] == 196608 and result[1] == payload
    assert rest == b"xyz"


@pytest.mark.parametrize("length", [4, 7, 10_001])
def test_startup_framer_refuses_impossible_lengths(length: int) -> None:
    with pytest.raises(PgError):
        StartupFramer().feed(struct.pack("!II", length, 196608))
