"""Failed-login throttling by client address and by user, sans-IO: the caller passes the time."""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque

LONG_KEY = 64  # longer addresses or user names are tracked by a digest, to bound memory
Records = OrderedDict[str, deque[tuple[float, str | None]]]  # key -> (time, other key) entries


class LoginThrottle:
    """Counts failed logins per client address and per user over a sliding window.

    With ``limit`` failures within ``window`` seconds (``limit`` 0 turns everything off):

    1. An address with ``limit`` or more recent failures is refused at once, whatever
       credentials it sends, until enough of its failures are older than the window.
    2. A user with ``limit`` or more recent failures, from any addresses, is refused only to
       addresses that have themselves failed within the window (for any user).
    3. So a login from an address with no failure within the window is never refused, and it is
       never delayed either: only failures are delayed, by ``failed``'s answer, which grows with
       the address's recent failures (``delay_step`` each, at most ``max_delay`` seconds).
    4. A successful login forgets that address's failures for that user (typos), in both counts;
       failures from other addresses stay.
    5. Refused attempts are not failures: a refused address gets ``limit`` more tries per window.

    Memory is bounded: each address or user keeps its last ``limit`` failures, at most
    ``max_keys`` addresses and ``max_keys`` users are tracked (those whose last failure is oldest
    are forgotten first), and entries with no failure within the window are dropped. Forgetting
    only ever makes the throttle more lenient, never refuses a non-failing address.

    ``now`` is a monotonic clock in seconds, the same for every call. The caller decides what an
    address is (an IP address; for IPv6 perhaps its /64 prefix). Use:
    ``wait = check(address, user, now)``: None = go ahead, else refuse, retry in ``wait`` seconds;
    after a wrong password ``delay = failed(address, user, now)``, then answer the failure after
    ``delay`` seconds; after a correct one ``succeeded(address, user)``.
    """

    def __init__(
        self,
        limit: int = 10,
        window: float = 60.0,
        *,
        delay_step: float = 0.05,
        max_delay: float = 1.0,
        max_keys: int = 10000,
    ) -> None:
        if limit < 0 or (limit and window <= 0) or max_keys < 1:
            raise ValueError("limit must be >= 0, window > 0 and max_keys >= 1")
        self.limit = limit
        self.window = window
        self.delay_step = delay_step
        self.max_delay = max_delay
        self.max_keys = max_keys
        # address -> failures as (time, user); user -> failures as (time, address)
        self._addresses: Records = OrderedDict()
        self._users: Records = OrderedDict()

    def check(self, address: str, user: str | None, now: float) -> float | None:
        """None when a login attempt may go ahead, else the seconds it is refused for."""
        if not self.limit:
            return None
        by_address = self._recent(self._addresses, address, now)
        if len(by_address) >= self.limit:
            return by_address[-self.limit] + self.window - now
        if user is None or not by_address:
            return None
        by_user = self._recent(self._users, user, now)
        if len(by_user) >= self.limit:
            return min(by_user[-self.limit], by_address[-1]) + self.window - now
        return None

    def failed(self, address: str, user: str | None, now: float) -> float:
        """Count a failed login; the seconds to wait before answering it."""
        if not self.limit:
            return 0.0
        self._forget_old(now)
        self._add(self._addresses, address, (now, None if user is None else _key(user)))
        if user is not None:
            self._add(self._users, user, (now, _key(address)))
        failures = len(self._recent(self._addresses, address, now))
        return min(self.max_delay, self.delay_step * failures)

    def succeeded(self, address: str, user: str | None) -> None:
        """A correct login: forget this address's failures for this user."""
        self._drop(self._addresses, address, None if user is None else _key(user))
        if user is not None:
            self._drop(self._users, user, _key(address))

    @property
    def tracked(self) -> tuple[int, int]:
        """How many addresses and users are tracked (for tests and metrics)."""
        return len(self._addresses), len(self._users)

    # -- records ---------------------------------------------------------------------------

    def _recent(self, records: Records, key: str, now: float) -> list[float]:
        """The times of ``key``'s failures within the window, oldest first."""
        record = records.get(_key(key))
        if record is None:
            return []
        return [t for t, _ in record if t > now - self.window]

    def _add(self, records: Records, key: str, entry: tuple[float, str | None]) -> None:
        k = _key(key)
        record = records.get(k)
        if record is None:
            record = records[k] = deque(maxlen=self.limit)
        record.append(entry)
        records.move_to_end(k)
        while len(records) > self.max_keys:
            records.popitem(last=False)

    def _drop(self, records: Records, key: str, other: str | None) -> None:
        k = _key(key)
        record = records.get(k)
        if record is None:
            return
        kept = [e for e in record if e[1] != other]
        if kept:
            records[k] = deque(kept, maxlen=self.limit)
        else:
            del records[k]

    def _forget_old(self, now: float) -> None:
        """Drop the records whose newest failure is older than the window (stalest first)."""
        for records in (self._addresses, self._users):
            while records:
                record = next(iter(records.values()))
                if record and record[-1][0] > now - self.window:
                    break
                records.popitem(last=False)


def _key(value: str) -> str:
    if len(value) <= LONG_KEY:
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
