"""How the fault proxy cuts one chunk into pieces: fixed size, at offsets, seeded random."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.faultproxy import at_offsets, every, randomly


def test_every_n_bytes_leaves_a_shorter_last_piece() -> None:
    assert every(1)(3) == [1, 1, 1]
    assert every(4)(10) == [4, 4, 2]
    assert every(100)(10) == [10]
    assert every(3)(0) == []


def test_offsets_past_the_end_or_repeated_are_ignored() -> None:
    assert at_offsets([1, 5])(10) == [1, 4, 5]
    assert at_offsets([5, 1, 5, 10, 50])(10) == [1, 4, 5]
    assert at_offsets([])(7) == [7]


def test_random_pieces_cover_the_chunk_and_repeat_from_the_same_seed() -> None:
    first, second = randomly(9, max_piece=5), randomly(9, max_piece=5)
    for n in (1, 2, 17, 1000):
        pieces = first(n)
        assert sum(pieces) == n and all(1 <= p <= 5 for p in pieces)
        assert second(n) == pieces
    assert randomly(10, max_piece=5)(1000) != randomly(9, max_piece=5)(1000)


@pytest.mark.parametrize(
    "bad", [lambda: every(0), lambda: at_offsets([0, 3]), lambda: randomly(1, 0)]
)
def test_pieces_of_no_bytes_are_refused(bad: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        bad()
