"""Memory per idle client: hold N logged-in connections open and read the proxy's RSS."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

from bench.procstat import process_rss_bytes

T = TypeVar("T")
PROTOCOL_V3 = 196608
LOGIN_TIMEOUT = 120.0
SETTLE_SECONDS = 1.0


@dataclass
class IdleRss:
    target: str
    clients: int
    logged_in: int
    rss_before: int
    rss_after: int
    login_seconds: float
    error: str | None = None

    @property
    def bytes_per_client(self) -> float | None:
        if not self.logged_in:
            return None
        return (self.rss_after - self.rss_before) / self.logged_in

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "bytes_per_client": self.bytes_per_client}


def startup_message(user: str, dbname: str) -> bytes:
    """StartupMessage for protocol 3.0 with only `user` and `database`."""
    body = struct.pack("!i", PROTOCOL_V3) + f"user\0{user}\0database\0{dbname}\0\0".encode()
    return struct.pack("!i", len(body) + 4) + body


class LoginProtocol(asyncio.Protocol):
    """Sends the StartupMessage and resolves `done` at the first ReadyForQuery, then sits idle."""

    def __init__(self, startup: bytes, done: asyncio.Future[None]) -> None:
        self.startup = startup
        self.done = done
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(self.startup)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self.buffer += data
        while len(self.buffer) >= 5:
            kind = self.buffer[:1]
            (length,) = struct.unpack_from("!i", self.buffer, 1)
            if len(self.buffer) < 1 + length:
                return
            message, self.buffer = self.buffer[: 1 + length], self.buffer[1 + length :]
            if kind == b"Z":
                self.done.set_result(None)
                self.buffer = b""
                return
            if kind == b"E" or (kind == b"R" and message[5:9] != b"\0\0\0\0"):
                self.done.set_exception(RuntimeError(f"login refused: {message[:200]!r}"))
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"closed during login: {exc}"))


async def open_clients(
    host: str, port: int, user: str, dbname: str, count: int, concurrency: int
) -> tuple[list[asyncio.BaseTransport], list[str]]:
    """Log ``count`` clients in (``concurrency`` at a time) and leave them idle: the open
    transports and the reasons of the logins that failed."""
    loop = asyncio.get_running_loop()
    startup = startup_message(user, dbname)
    gate = asyncio.Semaphore(concurrency)
    transports: list[asyncio.BaseTransport] = []
    errors: list[str] = []

    async def one() -> None:
        async with gate:
            done: asyncio.Future[None] = loop.create_future()
            try:
                transport, _ = await loop.create_connection(
                    lambda: LoginProtocol(startup, done), host, port
                )
            except OSError as exc:
                errors.append(repr(exc))
                return
            try:
                await done
            except (RuntimeError, ConnectionError) as exc:
                errors.append(str(exc))
            finally:
                if done.done() and not done.cancelled() and done.exception() is None:
                    transports.append(transport)
                else:
                    transport.abort()

    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    _done, pending = await asyncio.wait(tasks, timeout=LOGIN_TIMEOUT)
    for task in pending:
        task.cancel()
    if pending:
        errors.append(f"{len(pending)} logins still pending after {LOGIN_TIMEOUT:.0f} s")
        await asyncio.wait(pending)
    return transports, errors


async def _measure(
    target: str,
    pid: int,
    host: str,
    port: int,
    user: str,
    dbname: str,
    count: int,
    concurrency: int,
) -> IdleRss:
    await asyncio.sleep(SETTLE_SECONDS)
    before = process_rss_bytes(pid)
    started = time.monotonic()
    transports, errors = await open_clients(host, port, user, dbname, count, concurrency)
    login_seconds = time.monotonic() - started
    await asyncio.sleep(SETTLE_SECONDS)
    after = process_rss_bytes(pid)
    for transport in transports:
        transport.abort()
    await asyncio.sleep(SETTLE_SECONDS)
    error = f"{len(errors)} logins failed; first: {errors[0]}" if errors else None
    return IdleRss(target, count, len(transports), before, after, login_seconds, error)


def measure_idle_rss(
    target: str,
    pid: int,
    host: str,
    port: int,
    user: str,
    dbname: str,
    count: int,
    concurrency: int = 200,
) -> IdleRss:
    """Open `count` idle logged-in clients to the proxy `pid` and report its RSS growth."""
    return run_async(_measure(target, pid, host, port, user, dbname, count, concurrency))


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on uvloop when it is installed, else on the default event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
