"""The admin listener under slow and hostile clients: deadline, per-address cap, queue, 429."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

from pyproxy.admin.http_messages import HttpLimits
from pyproxy.app import App
from pyproxy.auth.throttle import LoginThrottle
from tests.support.admin_http import (
    TOKEN,
    admin_server,
    call,
    config,
    connect,
    error_id,
    is_open,
    read_response,
    request,
)

PARTIAL = request()[:-2]  # an authenticated request, "Connection: close", without its blank line


class SlowClients:
    """``count`` connections from 127.0.0.1 that each send one header byte per second and never
    finish their request; one closed by the server is opened again at once."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.open = 0
        self.most_open = 0
        self.closed_by_server = 0
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client()) for _ in range(count)]

    async def _client(self) -> None:
        while not self._stop.is_set():
            try:
                reader, writer = await connect(self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            self.open += 1
            self.most_open = max(self.most_open, self.open)
            ended = asyncio.ensure_future(reader.read())
            try:
                sent = 0
                while not self._stop.is_set() and not ended.done():
                    writer.write(PARTIAL[sent : sent + 1] if sent < len(PARTIAL) else b"a")
                    sent += 1
                    await asyncio.wait([ended], timeout=1.0)
            except ConnectionError:
                pass
            finally:
                self.closed_by_server += ended.done()
                ended.cancel()
                writer.close()
                self.open -= 1

    async def close(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_calls_succeed_while_200_slow_header_connections_are_open() -> None:
    """The default limits, attacker and caller on the same address (127.0.0.1)."""
    async with admin_server() as server:
        slow = SlowClients(server.port, 200)
        outcomes: dict[str, int] = {}
        try:
            await asyncio.sleep(0.5)
            end = time.monotonic() + 4.5
            while time.monotonic() < end:
                try:
                    status = str((await call(server.port))[0])
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    status = type(exc).__name__
                outcomes[status] = outcomes.get(status, 0) + 1
                await asyncio.sleep(0.02)
        finally:
            await slow.close()
        assert slow.most_open >= 200
        assert slow.closed_by_server > 0  # the slow ones did not just sit there
        calls = sum(outcomes.values())
        assert calls >= 50, outcomes
        assert outcomes.get("200", 0) >= 0.99 * calls, outcomes


# --- the deadline for connections that have not authenticated -------------------------------

DEADLINE = HttpLimits(unauthenticated_timeout=0.5, header_timeout=30, idle_timeout=30)


async def test_a_slow_unauthenticated_request_gets_408_at_the_deadline() -> None:
    async with admin_server(DEADLINE) as server:
        reader, writer = await connect(server.port)
        try:
            writer.write(PARTIAL)  # header_timeout (30 s) alone would wait much longer
            status, headers, body = await read_response(reader)
            assert (status, error_id(headers, body)) == (408, "request_timeout")
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            writer.close()


async def test_a_silent_connection_is_closed_at_the_deadline() -> None:
    async with admin_server(DEADLINE) as server:
        reader, writer = await connect(server.port)
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            writer.close()


async def test_an_authenticated_connection_keeps_the_longer_limits() -> None:
    async with admin_server(DEADLINE) as server:
        reader, writer = await connect(server.port)
        try:
            writer.write(request(close=False))
            assert (await read_response(reader))[0] == 200
            await asyncio.sleep(1.0)  # twice the unauthenticated deadline
            writer.write(request(close=False))
            assert (await read_response(reader))[0] == 200
        finally:
            writer.close()


async def test_a_wrong_token_does_not_earn_the_longer_limits() -> None:
    async with admin_server(DEADLINE) as server:
        reader, writer = await connect(server.port)
        try:
            writer.write(request(token="wrong", close=False))
            assert (await read_response(reader))[0] == 401
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed at the deadline
        finally:
            writer.close()


# --- the per-address cap ----------------------------------------------------------------------

CAP = HttpLimits(
    max_unauthenticated_per_address=3, unauthenticated_grace=0.3, unauthenticated_timeout=30
)


@contextlib.asynccontextmanager
async def partial_requests(
    port: int, local: str, n: int, send: bytes = PARTIAL
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    """``n`` connections from ``local``, each with a request that lacks its final blank line
    (or that sends ``send``)."""
    conns = []
    try:
        for _ in range(n):
            conns.append(await connect(port, local))
            conns[-1][1].write(send)
            await asyncio.sleep(0.02)  # in this order
        yield conns
    finally:
        for _, writer in conns:
            writer.close()


async def test_beyond_the_cap_the_oldest_incomplete_connection_of_that_address_is_closed() -> None:
    async with (
        admin_server(CAP) as server,
        partial_requests(server.port, "127.0.0.2", 3) as mine,
        partial_requests(server.port, "127.0.0.3", 3) as others,
    ):
        await asyncio.sleep(0.4)  # past the grace
        async with partial_requests(server.port, "127.0.0.2", 1) as newest:
            status, headers, body = await read_response(mine[0][0])
            assert (status, error_id(headers, body)) == (503, "service_unavailable")
            rest = [*mine[1:], *others, *newest]
            assert all(await asyncio.gather(*(is_open(reader) for reader, _ in rest)))


async def test_a_caller_sharing_an_address_with_slow_clients_gets_through() -> None:
    async with (
        admin_server(CAP) as server,
        partial_requests(server.port, "127.0.0.2", 3),
    ):
        await asyncio.sleep(0.4)
        for _ in range(5):
            assert (await call(server.port, local="127.0.0.2"))[0] == 200


async def test_connections_younger_than_the_grace_are_evicted_only_once_it_is_over() -> None:
    async with admin_server(CAP) as server, partial_requests(server.port, "127.0.0.2", 4) as conns:
        assert await is_open(conns[0][0], wait=0.1)
        status, _, _ = await read_response(conns[0][0])  # once 0.3 s have passed
        assert status == 503
        assert all(await asyncio.gather(*(is_open(reader) for reader, _ in conns[1:])))


# --- the queue for a slot ---------------------------------------------------------------------

ONE_SLOT = HttpLimits(max_connections=1, max_queued=2, queue_timeout=30, unauthenticated_timeout=30)


@contextlib.asynccontextmanager
async def busy_slots(
    port: int, local: str, n: int = 1
) -> AsyncIterator[list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]:
    """``n`` authenticated connections, each holding a slot with an unfinished second request
    (an authenticated connection is never evicted); finish one with ``writer.write(b"\\r\\n")``."""
    async with partial_requests(port, local, n, request(close=False)) as conns:
        for reader, writer in conns:
            assert (await read_response(reader))[0] == 200
            writer.write(PARTIAL)
        await asyncio.sleep(0.05)
        yield conns


async def test_a_connection_waits_for_a_slot_instead_of_getting_503() -> None:
    async with admin_server(ONE_SLOT) as server, busy_slots(server.port, "127.0.0.2") as holder:
        reader, writer = await connect(server.port)
        try:
            writer.write(request())
            assert await is_open(reader, wait=0.3)  # queued: no answer yet
            holder[0][1].write(b"\r\n")
            assert (await read_response(holder[0][0]))[0] == 200
            assert (await read_response(reader))[0] == 200
        finally:
            writer.close()


async def test_a_complete_request_in_the_queue_goes_before_incomplete_ones() -> None:
    async with (
        admin_server(ONE_SLOT) as server,
        busy_slots(server.port, "127.0.0.2") as holder,
        partial_requests(server.port, "127.0.0.2", 1) as slow,
        partial_requests(server.port, "127.0.0.2", 1, request()) as ready,
    ):
        holder[0][1].write(b"\r\n")
        assert (await read_response(holder[0][0]))[0] == 200
        assert (await read_response(ready[0][0]))[0] == 200
        assert await is_open(slow[0][0])


async def test_a_complete_request_is_not_kept_waiting_by_slow_clients_holding_the_slots() -> None:
    limits = HttpLimits(max_connections=2, unauthenticated_timeout=30)
    async with (
        admin_server(limits) as server,
        partial_requests(server.port, "127.0.0.2", 2) as slow,
    ):
        assert (await call(server.port, local="127.0.0.1"))[0] == 200
        status, headers, body = await read_response(slow[0][0])  # the one waiting longest
        assert (status, error_id(headers, body)) == (503, "service_unavailable")
        assert await is_open(slow[1][0])


async def test_a_full_queue_drops_an_incomplete_request_for_a_newcomer() -> None:
    async with (
        admin_server(ONE_SLOT) as server,
        busy_slots(server.port, "127.0.0.2") as holder,
        partial_requests(server.port, "127.0.0.2", 2) as slow,
    ):
        reader, writer = await connect(server.port, "127.0.0.2")
        try:
            writer.write(request())
            status, headers, body = await read_response(slow[0][0])  # the oldest waiting
            assert (status, error_id(headers, body)) == (503, "service_unavailable")
            assert await is_open(slow[1][0])
            holder[0][1].write(b"\r\n")
            assert (await read_response(reader))[0] == 200
        finally:
            writer.close()


async def test_a_full_queue_of_complete_requests_answers_a_newcomer_503() -> None:
    async with (
        admin_server(ONE_SLOT) as server,
        busy_slots(server.port, "127.0.0.2"),
        partial_requests(server.port, "127.0.0.2", 2, request()) as waiting,
    ):
        status, headers, body = await call(server.port, local="127.0.0.2")
        assert (status, error_id(headers, body)) == (503, "service_unavailable")
        assert all(await asyncio.gather(*(is_open(reader) for reader, _ in waiting)))


async def test_a_queued_connection_gets_503_when_its_wait_is_over() -> None:
    limits = HttpLimits(max_connections=1, queue_timeout=0.3)
    async with admin_server(limits) as server, busy_slots(server.port, "127.0.0.2"):
        status, headers, body = await call(server.port)
        assert (status, error_id(headers, body)) == (503, "service_unavailable")


async def test_a_full_queue_makes_room_for_another_address_which_is_served_first() -> None:
    limits = HttpLimits(max_connections=2, max_queued=2, unauthenticated_timeout=30)
    async with (
        admin_server(limits) as server,
        busy_slots(server.port, "127.0.0.2", 2) as holders,
        partial_requests(server.port, "127.0.0.2", 2, request()) as waiting,
    ):
        reader, writer = await connect(server.port, "127.0.0.1")
        try:
            writer.write(request())
            status, _, _ = await read_response(waiting[1][0])  # the newest of 127.0.0.2
            assert status == 503
            answered: list[str] = []

            async def answer(name: str, reader: asyncio.StreamReader) -> int:
                status = (await read_response(reader))[0]
                answered.append(name)
                return status

            holders[0][1].write(b"\r\n")  # a slot frees: 127.0.0.1 holds none, 127.0.0.2 one
            assert (await read_response(holders[0][0]))[0] == 200
            statuses = await asyncio.gather(answer("new", reader), answer("old", waiting[0][0]))
            assert statuses == [200, 200]
            assert answered == ["new", "old"]  # though the 127.0.0.2 one came first
        finally:
            writer.close()


# --- failed-token throttling ------------------------------------------------------------------


def throttle() -> LoginThrottle:
    return LoginThrottle(limit=3, window=60, delay_step=0.01)


async def test_repeated_wrong_tokens_get_429_but_not_at_other_addresses() -> None:
    async with admin_server(throttle=throttle()) as server:
        for _ in range(3):
            status, headers, body = await call(server.port, "wrong", "127.0.0.2")
            assert (status, error_id(headers, body)) == (401, "unauthorized")
        status, headers, body = await call(server.port, "wrong", "127.0.0.2")
        assert (status, error_id(headers, body)) == (429, "too_many_requests")
        assert 1 <= int(headers["retry-after"]) <= 60
        assert (await call(server.port, TOKEN, "127.0.0.2"))[0] == 429  # even the right one
        assert (await call(server.port, TOKEN, "127.0.0.1"))[0] == 200
        assert (await call(server.port, "wrong", "127.0.0.3"))[0] == 401
        assert (await call(server.port, TOKEN, "127.0.0.3"))[0] == 200


async def test_requests_without_a_token_are_not_counted_as_failures() -> None:
    async with admin_server(throttle=throttle()) as server:
        for _ in range(5):
            assert (await call(server.port, None, "127.0.0.2"))[0] == 401
        assert (await call(server.port, TOKEN, "127.0.0.2"))[0] == 200


async def test_a_right_token_forgets_the_address_s_earlier_mistakes() -> None:
    async with admin_server(throttle=throttle()) as server:
        for _ in range(2):
            assert (await call(server.port, "wrong", "127.0.0.2"))[0] == 401
        assert (await call(server.port, TOKEN, "127.0.0.2"))[0] == 200
        for _ in range(2):
            assert (await call(server.port, "wrong", "127.0.0.2"))[0] == 401
        assert (await call(server.port, TOKEN, "127.0.0.2"))[0] == 200


async def test_the_throttle_follows_the_config_and_its_reload() -> None:
    app = App(config(auth_failure_limit=2))
    await app.start()
    try:
        for _ in range(2):
            assert (await call(app.admin_port, "wrong", "127.0.0.2"))[0] == 401
        assert (await call(app.admin_port, "wrong", "127.0.0.2"))[0] == 429
        app.reload(config(auth_failure_limit=0))
        for _ in range(3):
            assert (await call(app.admin_port, "wrong", "127.0.0.2"))[0] == 401
        status, _, body = await call(app.admin_port, TOKEN, "127.0.0.2")
        assert status == 200 and "pools" in json.loads(body)
    finally:
        await app.stop(1.0)
