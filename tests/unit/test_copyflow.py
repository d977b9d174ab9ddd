"""Dropping the leftovers of a COPY FROM STDIN the server already ended."""

from __future__ import annotations

import struct

from pyproxy.session.copyflow import drop_copy_leftovers, is_copy_leftover


def msg(t: bytes, body: bytes = b"") -> bytes:
    return t + struct.pack("!I", 4 + len(body)) + body


QUERY = msg(b"Q", b"SELECT 1\x00")


def test_copy_messages_are_dropped_up_to_the_next_request() -> None:
    data = msg(b"d", b"1\tx\n") + msg(b"d", b"2\ty\n") + msg(b"c") + QUERY
    assert drop_copy_leftovers(data, 0) == (QUERY, 0, b"")


def test_copy_fail_is_dropped_too() -> None:
    assert drop_copy_leftovers(msg(b"f", b"oops\x00"), 0) == (b"", 0, b"")


def test_a_cut_copy_data_is_dropped_across_chunks() -> None:
    whole = msg(b"d", b"x" * 100) + msg(b"c") + QUERY
    rest, discard, tail = drop_copy_leftovers(whole[:30], 0)
    assert (rest, tail) == (b"", b"")
    assert discard == 105 - 30
    assert drop_copy_leftovers(whole[30:], discard) == (QUERY, 0, b"")


def test_the_rest_of_a_message_cut_before_release_is_dropped_first() -> None:
    assert drop_copy_leftovers(b"abc" + msg(b"c") + QUERY, 3) == (QUERY, 0, b"")
    assert drop_copy_leftovers(b"abc", 10) == (b"", 7, b"")


def test_a_cut_header_is_kept_for_the_next_chunk() -> None:
    data = msg(b"d", b"zz")
    assert drop_copy_leftovers(data[:3], 0) == (b"", 0, data[:3])
    assert drop_copy_leftovers(data[:3] + data[3:] + QUERY, 0) == (QUERY, 0, b"")


def test_other_requests_are_left_alone() -> None:
    assert not is_copy_leftover(QUERY, 0)
    assert is_copy_leftover(msg(b"c"), 0)
    assert is_copy_leftover(QUERY, 4)
    assert drop_copy_leftovers(QUERY, 0) == (QUERY, 0, b"")
