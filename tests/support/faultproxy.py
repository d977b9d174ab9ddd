"""A loopback TCP proxy for tests that splits, delays, stalls and cuts the traffic it forwards."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

Direction = Literal["to_server", "to_client"]
Which = Literal["to_server", "to_client", "both"]
How = Literal["reset", "close"]
DIRECTIONS: tuple[Direction, Direction] = ("to_server", "to_client")

# Pause after each piece of a split write: long enough for a reader on the same machine to take
# the piece before the next one lands in its socket buffer.
DEFAULT_PAUSE = 0.001
READ_SIZE = 65536
QUEUE_CHUNKS = 16  # chunks read but not yet forwarded, per direction and connection
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0

# A splitter turns the length of one chunk into the lengths of the pieces to send it as.
Splitter = Callable[[int], list[int]]


def every(size: int) -> Splitter:
    """Pieces of ``size`` bytes (the last one shorter)."""
    if size < 1:
        raise ValueError(f"piece size must be at least 1, not {size}")
    return lambda n: [min(size, n - start) for start in range(0, n, size)]


def at_offsets(offsets: Iterable[int]) -> Splitter:
    """Pieces that end at these byte offsets of each chunk (offsets past its end are ignored)."""
    wanted = sorted(set(offsets))
    if wanted and wanted[0] < 1:
        raise ValueError(f"offsets must be at least 1: {wanted}")

    def lengths(n: int) -> list[int]:
        edges = [0, *(o for o in wanted if o < n), n]
        return [b - a for a, b in itertools.pairwise(edges) if b > a]

    return lengths


def randomly(seed: int, max_piece: int = 16) -> Splitter:
    """Pieces of 1..``max_piece`` bytes drawn from a generator seeded with ``seed``."""
    if max_piece < 1:
        raise ValueError(f"max_piece must be at least 1, not {max_piece}")
    rng = random.Random(seed)

    def lengths(n: int) -> list[int]:
        out = []
        while n:
            piece = rng.randint(1, min(max_piece, n))
            out.append(piece)
            n -= piece
        return out

    return lengths


@dataclass
class Counters:
    """What the proxy has done since it started; ``bytes`` and ``segments`` count forwarded data
    (each piece of a split write is one segment)."""

    accepted: int = 0  # client connections accepted
    open: int = 0  # connections currently forwarding
    cut: int = 0  # connections cut on request (cut_all, cut_next)
    refused: int = 0  # client connections closed because the target could not be reached
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))
    segments: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))


class _Policy:
    """The faults applied to one direction, read afresh for every chunk and piece."""

    def __init__(self) -> None:
        self.splitter: Splitter | None = None
        self.pause = DEFAULT_PAUSE
        self.delay = 0.0
        self.flowing = asyncio.Event()  # cleared while stalled
        self.flowing.set()


@dataclass
class _CutRule:
    direction: Direction
    after: int
    how: How


def _abort(writer: asyncio.StreamWriter, how: How) -> None:
    """Close one socket: ``reset`` sends RST (SO_LINGER 0), ``close`` flushes then sends FIN."""
    if how == "close":
        writer.close()
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Link:
    """One client connection and its connection to the target, with a pump per direction."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        rule: _CutRule | None,
    ) -> None:
        self.proxy = proxy
        self.ends = {"to_server": (client[0], server[1]), "to_client": (server[0], client[1])}
        self.writers = (client[1], server[1])
        self.rule = rule
        self.forwarded = dict.fromkeys(DIRECTIONS, 0)
        self.closed = False
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        if self.rule is not None and self.rule.after == 0:
            self.cut(self.rule.how)
            return
        self.tasks = [asyncio.create_task(self._pump(d)) for d in DIRECTIONS]
        try:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        finally:
            self._shut("close")  # both sides done: flush what is buffered, then FIN

    def cut(self, how: How) -> None:
        """End both sides now (on request: counted)."""
        if not self.closed:
            self.proxy.counters.cut += 1
        self._shut(how)

    def _shut(self, how: How) -> None:
        if self.closed:
            return
        self.closed = True
        for writer in self.writers:
            _abort(writer, how)
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()

    async def _pump(self, direction: Direction) -> None:
        reader, writer = self.ends[direction]
        queue: asyncio.Queue[tuple[float, bytes] | BaseException | None] = asyncio.Queue(
            QUEUE_CHUNKS
        )
        feeder = asyncio.create_task(self._feed(direction, reader, queue))
        loop = asyncio.get_running_loop()
        try:
            while not self.closed:
                item = await queue.get()
                if item is None:  # EOF from the source: pass the half-close on
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                if isinstance(item, BaseException):  # the source failed: fail the other side
                    self._shut("reset")
                    return
                due, data = item
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                await self._send(direction, data, writer)
        except (ConnectionError, OSError):
            self._shut("reset")
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

    async def _feed(
        self,
        direction: Direction,
        reader: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes] | BaseException | None],
    ) -> None:
        """Read chunks as they come and queue them with the time they may be forwarded at."""
        loop = asyncio.get_running_loop()
        policy = self.proxy.policies[direction]
        while True:
            try:
                data = await reader.read(READ_SIZE)
            except (ConnectionError, OSError) as exc:
                await queue.put(exc)
                return
            if not data:
                await queue.put(None)
                return
            await queue.put((loop.time() + policy.delay, data))

    async def _send(self, direction: Direction, data: bytes, writer: asyncio.StreamWriter) -> None:
        policy = self.proxy.policies[direction]
        splitter = policy.splitter
        lengths = splitter(len(data)) if splitter is not None else [len(data)]
        start = 0
        for length in lengths:
            await policy.flowing.wait()
            if self.closed:
                return
            piece = data[start : start + length]
            start += length
            rule = self.rule
            limit = None
            if rule is not None and rule.direction == direction:
                limit = rule.after - self.forwarded[direction]
                piece = piece[:limit]
            if piece:
                writer.write(piece)
                self.forwarded[direction] += len(piece)
                self.proxy.counters.bytes[direction] += len(piece)
                self.proxy.counters.segments[direction] += 1
                await writer.drain()
            if rule is not None and limit is not None and self.forwarded[direction] >= rule.after:
                self.cut(rule.how)
                return
            if splitter is not None:
                await asyncio.sleep(policy.pause)


class FaultProxy:
    """Forward 127.0.0.1:<port> to ``(target_host, target_port)``, with faults changeable at
    any time, per direction: ``to_server`` (client -> target) and ``to_client``.

    ``async with FaultProxy(host, port) as fp:`` then connect to ``fp.port``. With no fault set
    every byte is forwarded, in order, as it comes. Faults:

    - ``split(d, n)``, ``split_at(d, offsets)``, ``split_randomly(d, seed)``: send each chunk
      read as pieces (each its own TCP segment: TCP_NODELAY, drain and a short pause after
      each); ``unsplit(d)``;
    - ``delay(d, seconds)``: forward each chunk no earlier than ``seconds`` after it was read
      (order kept; the delay in force when a chunk is read applies to it);
    - ``stall(d)`` / ``resume(d)``: stop forwarding, keeping the connections open; data read
      meanwhile is held (up to QUEUE_CHUNKS chunks, then the sender is pushed back);
    - ``await cut_all(how)``: end every current connection, both sides (``reset``: RST,
      ``close``: FIN); ``cut_next(after, d, how)``: the next connection accepted is cut once it
      has forwarded ``after`` bytes in direction ``d`` (exactly that many get through);
    - ``heal()``: all of the above off.

    ``counters`` says what was forwarded and how many connections came, are open, were cut.
    """

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.policies: dict[str, _Policy] = {d: _Policy() for d in DIRECTIONS}
        self.counters = Counters()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._next_cut: _CutRule | None = None
        self._port = 0

    # -- lifetime -----------------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and reset every connection still open."""
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link._shut("reset")
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=CLOSE_TIMEOUT)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self._port

    # -- faults -------------------------------------------------------------------------------

    def split(self, direction: Which, size: int, *, pause: float = DEFAULT_PAUSE) -> None:
        """Send every chunk as pieces of ``size`` bytes."""
        self._set_splitter(direction, every(size), pause)

    def split_at(
        self, direction: Which, offsets: Iterable[int], *, pause: float = DEFAULT_PAUSE
    ) -> None:
        """Send every chunk as pieces ending at these offsets of the chunk."""
        self._set_splitter(direction, at_offsets(offsets), pause)

    def split_randomly(
        self, direction: Which, seed: int, max_piece: int = 16, *, pause: float = DEFAULT_PAUSE
    ) -> None:
        """Send every chunk as pieces of 1..``max_piece`` bytes, reproducible from ``seed``."""
        for d in self._directions(direction):  # one generator per direction
            self._set_splitter(d, randomly(seed, max_piece), pause)

    def unsplit(self, direction: Which = "both") -> None:
        for d in self._directions(direction):
            self.policies[d].splitter = None

    def delay(self, direction: Which, seconds: float) -> None:
        """Hold each chunk read from now on for ``seconds`` before forwarding it (0: no delay)."""
        for d in self._directions(direction):
            self.policies[d].delay = max(0.0, seconds)

    def stall(self, direction: Which = "both") -> None:
        for d in self._directions(direction):
            self.policies[d].flowing.clear()

    def resume(self, direction: Which = "both") -> None:
        for d in self._directions(direction):
            self.policies[d].flowing.set()

    async def cut_all(self, how: How = "reset") -> int:
        """End every current connection on both sides; the number cut. New ones still work."""
        links = list(self._links)
        for link in links:
            link.cut(how)
        handlers = list(self._handlers)
        if handlers:
            await asyncio.wait(handlers, timeout=CLOSE_TIMEOUT)
        return len(links)

    def cut_next(
        self, after: int = 0, direction: Direction = "to_client", how: How = "reset"
    ) -> None:
        """Cut the next connection accepted once ``after`` bytes went through in ``direction``
        (0: as soon as it is accepted)."""
        self._next_cut = _CutRule(direction, after, how)

    def heal(self) -> None:
        """No split, no delay, nothing stalled, no cut pending."""
        self.unsplit()
        self.delay("both", 0)
        self.resume()
        self._next_cut = None

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _directions(which: Which) -> tuple[Direction, ...]:
        if which == "both":
            return DIRECTIONS
        if which not in DIRECTIONS:
            raise ValueError(f"direction must be to_server, to_client or both, not {which!r}")
        return (which,)

    def _set_splitter(self, which: Which, splitter: Splitter, pause: float) -> None:
        for d in self._directions(which):
            self.policies[d].splitter = splitter
            self.policies[d].pause = pause

    async def _accept(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.counters.accepted += 1
        try:
            _nodelay(client_writer)
            try:
                server_reader, server_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                self.counters.refused += 1
                _abort(client_writer, "reset")
                return
            _nodelay(server_writer)
            rule, self._next_cut = self._next_cut, None
            link = _Link(self, (client_reader, client_writer), (server_reader, server_writer), rule)
            self._links.add(link)
            self.counters.open += 1
            try:
                await link.run()
            finally:
                self.counters.open -= 1
                self._links.discard(link)
        finally:
            self._handlers.discard(task)
