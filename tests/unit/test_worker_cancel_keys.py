"""Cancel keys with worker processes: the key names the worker that owns the client, and a
cancel for another worker's key goes there instead of being looked up here."""

from __future__ import annotations

from typing import Any

from pyproxy.net.cancel import WORKER_BITS, Cancels


def never(coro: Any) -> Any:
    coro.close()
    raise AssertionError("nothing is forwarded to PostgreSQL here")


def test_keys_carry_the_worker_index_and_stay_unique() -> None:
    cancels = Cancels(never)
    cancels.worker = 5
    cancels.forward = lambda owner, pid, secret: None
    keys = {cancels.new_key(object()) for _ in range(2000)}  # type: ignore[arg-type]
    assert len(keys) == 2000
    assert {pid & WORKER_BITS for pid, _ in keys} == {5}
    assert all(0 < pid <= 0x7FFFFFFF for pid, _ in keys)


def test_a_cancel_for_another_workers_key_is_forwarded_to_its_owner_only() -> None:
    sent: list[tuple[int, int, int]] = []
    cancels = Cancels(never)
    cancels.worker = 1
    cancels.forward = lambda owner, pid, secret: sent.append((owner, pid, secret))
    cancels.handle((77 << 6) | 3, 1234)
    assert sent == [(3, (77 << 6) | 3, 1234)]
    cancels.handle((77 << 6) | 1, 1234)  # ours, but unknown: ignored, not forwarded
    assert len(sent) == 1


def test_one_process_keeps_the_whole_random_key() -> None:
    cancels = Cancels(never)
    keys = {cancels.new_key(object()) for _ in range(500)}  # type: ignore[arg-type]
    assert len({pid & WORKER_BITS for pid, _ in keys}) > 1
