"""Failed-login throttling: per-address and per-user windows, delays, the never-refused rule."""

from __future__ import annotations

import random

import pytest

from pyproxy.auth.throttle import LoginThrottle

A, B, C = "192.0.2.1", "192.0.2.2", "192.0.2.3"


def fail(throttle: LoginThrottle, address: str, user: str | None, now: float, n: int) -> None:
    for _ in range(n):
        throttle.failed(address, user, now)


def test_an_address_under_the_limit_is_not_refused() -> None:
    throttle = LoginThrottle(limit=3, window=60)
    fail(throttle, A, "alice", 0.0, 2)
    assert throttle.check(A, "alice", 1.0) is None
    assert throttle.check(A, None, 1.0) is None


def test_an_address_at_the_limit_is_refused_for_any_user_until_the_window_moves_on() -> None:
    throttle = LoginThrottle(limit=3, window=60)
    throttle.failed(A, "alice", 0.0)
    throttle.failed(A, "bob", 10.0)
    throttle.failed(A, "carol", 20.0)
    assert throttle.check(A, "alice", 20.0) == pytest.approx(40.0)
    assert throttle.check(A, "dave", 30.0) == pytest.approx(30.0)
    assert throttle.check(A, None, 59.0) == pytest.approx(1.0)
    assert throttle.check(A, "alice", 60.0) is None  # the failure at 0 is out of the window
    assert throttle.check(B, "alice", 20.0) is None  # another address is not concerned


def test_failures_older_than_the_window_do_not_count() -> None:
    throttle = LoginThrottle(limit=3, window=60)
    for t in (0.0, 50.0, 100.0, 150.0):
        throttle.failed(A, "alice", t)
    assert throttle.check(A, "alice", 150.0) is None  # only 100 and 150 are within 60 s


def test_refused_attempts_are_not_failures() -> None:
    throttle = LoginThrottle(limit=2, window=10)
    fail(throttle, A, "alice", 0.0, 2)
    for t in range(10):
        assert throttle.check(A, "alice", float(t)) is not None
    assert throttle.check(A, "alice", 10.0) is None


def test_a_user_under_attack_is_refused_only_to_addresses_that_failed() -> None:
    throttle = LoginThrottle(limit=3, window=60)
    attackers = [f"198.51.100.{i}" for i in range(5)]
    for i, address in enumerate(attackers):
        throttle.failed(address, "alice", float(i))  # one failure each: no address at the limit
    for address in attackers:
        assert throttle.check(address, "alice", 10.0) is not None
        assert throttle.check(address, "bob", 10.0) is None  # only alice is under attack
    assert throttle.check(A, "alice", 10.0) is None  # alice from an address that never failed


def test_the_user_rule_ends_when_the_user_or_the_address_calms_down() -> None:
    throttle = LoginThrottle(limit=2, window=60)
    throttle.failed(B, "alice", 0.0)
    throttle.failed(C, "alice", 30.0)
    throttle.failed(A, "bob", 40.0)  # A failed recently, for another user
    assert throttle.check(A, "alice", 40.0) == pytest.approx(20.0)  # alice's count drops at 60
    assert throttle.check(A, "alice", 60.0) is None
    throttle.failed(B, "alice", 70.0)
    # alice clears at 90 (failures at 30 and 70), B's last failure clears at 130: the sooner
    assert throttle.check(B, "alice", 70.0) == pytest.approx(20.0)


def test_a_correct_login_from_a_non_failing_address_is_never_refused() -> None:
    """Whatever happens elsewhere: random failures from other addresses, for the same user
    and others, never refuse an address that has not failed within the window."""
    rng = random.Random(7)
    throttle = LoginThrottle(limit=3, window=30)
    now = 0.0
    for _ in range(5000):
        now += rng.random()
        address = f"203.0.113.{rng.randrange(20)}"
        throttle.failed(address, rng.choice(["alice", "bob", None]), now)
        if rng.random() < 0.1:
            throttle.succeeded(address, "alice")
        for user in ("alice", "bob", None):
            assert throttle.check(A, user, now) is None
    assert throttle.check(A, "alice", now) is None


def test_failure_delays_grow_with_the_address_failures_up_to_a_maximum() -> None:
    throttle = LoginThrottle(limit=100, window=60, delay_step=0.1, max_delay=0.35)
    delays = [throttle.failed(A, "alice", float(t)) for t in range(5)]
    assert delays == pytest.approx([0.1, 0.2, 0.3, 0.35, 0.35])
    assert throttle.failed(B, "alice", 5.0) == pytest.approx(0.1)  # counted per address
    assert throttle.failed(A, "alice", 100.0) == pytest.approx(0.1)  # the old ones have expired


def test_a_success_forgets_that_address_s_failures_for_that_user() -> None:
    throttle = LoginThrottle(limit=3, window=60)
    fail(throttle, A, "alice", 0.0, 2)  # typos
    throttle.succeeded(A, "alice")
    fail(throttle, A, "alice", 1.0, 2)
    assert throttle.check(A, "alice", 1.0) is None
    assert throttle.failed(A, "alice", 2.0) == pytest.approx(0.15)  # 3 recent failures, not 5


def test_a_success_as_one_user_does_not_wipe_failures_for_another() -> None:
    """An attacker with an account of its own cannot reset its count by logging in with it."""
    throttle = LoginThrottle(limit=3, window=60)
    fail(throttle, A, "alice", 0.0, 2)
    throttle.succeeded(A, "eve")
    throttle.failed(A, "alice", 1.0)
    assert throttle.check(A, "alice", 1.0) is not None


def test_a_success_keeps_the_user_s_failures_from_other_addresses() -> None:
    throttle = LoginThrottle(limit=3, window=60)
    fail(throttle, B, "alice", 0.0, 1)
    fail(throttle, C, "alice", 0.0, 1)
    fail(throttle, A, "alice", 0.0, 1)
    throttle.succeeded(A, "alice")
    throttle.failed(A, "bob", 1.0)
    assert throttle.check(A, "alice", 1.0) is None  # alice has 2 failures left: under 3
    throttle.failed(B, "alice", 2.0)
    assert throttle.check(B, "alice", 2.0) is not None


def test_limit_zero_turns_throttling_off() -> None:
    throttle = LoginThrottle(limit=0, window=60)
    for t in range(100):
        assert throttle.failed(A, "alice", float(t)) == 0.0
    assert throttle.check(A, "alice", 100.0) is None
    assert throttle.tracked == (0, 0)


def test_memory_is_bounded_in_keys_and_entries() -> None:
    throttle = LoginThrottle(limit=3, window=60, max_keys=100)
    for i in range(10_000):
        throttle.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", f"user{i}", 1.0)
    assert throttle.tracked == (100, 100)
    fail(throttle, A, "alice", 2.0, 1000)
    assert all(len(record) <= 3 for record in throttle._addresses.values())
    assert throttle.check(A, "alice", 2.0) is not None  # the newest keys are the ones kept
    throttle.failed(B, "bob", 1000.0)  # everything else is older than the window
    assert throttle.tracked == (1, 1)


def test_long_user_names_are_tracked_by_digest_and_kept_apart() -> None:
    throttle = LoginThrottle(limit=2, window=60)
    long_a, long_b = "x" * 10_000 + "a", "x" * 10_000 + "b"
    fail(throttle, B, long_a, 0.0, 1)
    fail(throttle, C, long_a, 0.0, 1)
    throttle.failed(A, long_b, 0.0)
    assert throttle.check(A, long_a, 0.0) is not None
    assert throttle.check(B, long_b, 0.0) is None
    assert all(len(key) <= 71 for key in throttle._users)


@pytest.mark.parametrize(
    "kwargs", [{"limit": -1}, {"limit": 3, "window": 0}, {"limit": 3, "max_keys": 0}]
)
def test_invalid_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LoginThrottle(**kwargs)  # type: ignore[arg-type]
