"""The loopback fault proxy (tests.support.faultproxy) against a small echo server: bytes pass
unchanged unless told otherwise, and splits, delays, stalls and cuts do what they say."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import cast

import pytest

from tests.support.faultproxy import FaultProxy

TIMEOUT = 5.0


class Peer(asyncio.Protocol):
    """One end of a TCP connection that records every chunk it receives, and echoes it back
    when ``echo``."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.chunks: list[bytes] = []
        self.eof = False
        self.closed = False
        self.error: Exception | None = None  # why it closed, when not cleanly
        self.transport: asyncio.Transport | None = None
        self.changed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.echo:
            assert self.transport is not None
            self.transport.write(data)
        self.changed.set()

    def eof_received(self) -> bool:
        self.eof = True
        self.changed.set()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed, self.error = True, exc
        self.changed.set()

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def wait(self, check: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Until ``check()`` holds (AssertionError after ``timeout``)."""
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    async def wait_bytes(self, n: int, timeout: float = TIMEOUT) -> bytes:
        await self.wait(lambda: len(self.data) >= n or self.closed, timeout)
        return self.data

    async def wait_closed(self, timeout: float = TIMEOUT) -> None:
        await self.wait(lambda: self.closed, timeout)


class EchoServer:
    """An echo server on 127.0.0.1 port 0; ``peers`` are its connections, oldest first."""

    def __init__(self) -> None:
        self.peers: list[Peer] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    def _new_peer(self) -> Peer:
        peer = Peer(echo=True)
        self.peers.append(peer)
        return peer

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._new_peer, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for peer in self.peers:
            if peer.transport is not None:
                peer.transport.abort()
        await self.server.wait_closed()

    async def wait_peers(self, n: int) -> list[Peer]:
        async with asyncio.timeout(TIMEOUT):
            while len(self.peers) < n:
                await asyncio.sleep(0.005)
        return self.peers


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def fp(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy("127.0.0.1", echo.port) as proxy:
        yield proxy


async def connect(port: int) -> Peer:
    loop = asyncio.get_running_loop()
    _transport, peer = await loop.create_connection(Peer, "127.0.0.1", port)
    return peer


def close(peer: Peer) -> None:
    if peer.transport is not None:
        peer.transport.close()


async def test_bytes_pass_unchanged_and_in_order_whatever_the_writes(
    fp: FaultProxy, echo: EchoServer
) -> None:
    rng = random.Random(7)
    payload = os.urandom(1_000_000)
    client = await connect(fp.port)
    start = 0
    while start < len(payload):  # writes of 1 byte to 100 KB, back to back
        size = rng.choice((1, 2, 3, 5, 17, 1000, 65536, 100_000))
        client.write(payload[start : start + size])
        start += size
    assert await client.wait_bytes(len(payload)) == payload
    (server,) = await echo.wait_peers(1)
    assert server.data == payload
    assert fp.counters.bytes == {"to_server": len(payload), "to_client": len(payload)}
    assert (fp.counters.accepted, fp.counters.open, fp.counters.cut) == (1, 1, 0)
    close(client)
    await server.wait_closed()
    await client.wait_closed()


async def test_a_client_closing_closes_the_target_side_and_the_connection_is_counted_gone(
    fp: FaultProxy, echo: EchoServer
) -> None:
    client = await connect(fp.port)
    client.write(b"last words")
    await client.wait_bytes(10)
    assert client.transport is not None
    client.transport.write_eof()  # half-close: the echo server sees EOF and closes
    (server,) = await echo.wait_peers(1)
    await server.wait_closed()
    assert server.eof and server.data == b"last words"
    await client.wait_closed()
    assert client.eof
    async with asyncio.timeout(TIMEOUT):
        while fp.counters.open:
            await asyncio.sleep(0.005)


async def test_split_into_n_byte_pieces_arrives_as_separate_segments(
    fp: FaultProxy, echo: EchoServer
) -> None:
    client = await connect(fp.port)
    fp.split("to_server", 1)
    client.write(b"hello, world")
    assert await client.wait_bytes(12) == b"hello, world"
    (server,) = await echo.wait_peers(1)
    assert server.chunks == [bytes([b]) for b in b"hello, world"]
    assert fp.counters.segments["to_server"] == 12

    fp.split("to_server", 5)
    client.write(b"abcdefghijkl")
    await client.wait_bytes(24)
    assert server.chunks[12:] == [b"abcde", b"fghij", b"kl"]

    fp.unsplit()
    client.write(b"whole")
    await client.wait_bytes(29)
    assert server.chunks[-1] == b"whole"
    close(client)


async def test_split_at_offsets_cuts_each_write_there(fp: FaultProxy, echo: EchoServer) -> None:
    client = await connect(fp.port)
    fp.split_at("to_server", [1, 4, 100])
    client.write(b"Q\0\0\0\x0bSELECT")
    await client.wait_bytes(11)
    (server,) = await echo.wait_peers(1)
    assert server.chunks == [b"Q", b"\0\0\0", b"\x0bSELECT"]
    close(client)


async def test_random_split_is_reproducible_from_its_seed(fp: FaultProxy, echo: EchoServer) -> None:
    payload = bytes(range(256)) * 4
    seen = []
    for _ in range(2):
        fp.split_randomly("to_server", seed=42, max_piece=16)
        client = await connect(fp.port)
        client.write(payload)
        assert await client.wait_bytes(len(payload)) == payload
        server = (await echo.wait_peers(len(seen) + 1))[-1]
        seen.append([len(c) for c in server.chunks])
        close(client)
    assert seen[0] == seen[1]
    assert max(seen[0]) <= 16 and len(seen[0]) > len(payload) // 16


async def test_split_to_client_reaches_the_client_in_pieces(fp: FaultProxy) -> None:
    client = await connect(fp.port)
    fp.split("to_client", 2)
    client.write(b"0123456789")
    assert await client.wait_bytes(10) == b"0123456789"
    assert client.chunks == [b"01", b"23", b"45", b"67", b"89"]
    close(client)


async def test_delay_holds_data_and_can_be_changed_while_running(fp: FaultProxy) -> None:
    client = await connect(fp.port)
    fp.delay("to_server", 0.3)
    started = time.monotonic()
    client.write(b"slow")
    await client.wait_bytes(4)
    assert time.monotonic() - started >= 0.29
    fp.delay("to_server", 0)
    started = time.monotonic()
    client.write(b"fast")
    await client.wait_bytes(8)
    assert time.monotonic() - started < 0.2
    assert client.data == b"slowfast"
    close(client)


async def test_delay_keeps_order_and_does_not_add_up_per_chunk(fp: FaultProxy) -> None:
    client = await connect(fp.port)
    fp.delay("both", 0.2)
    started = time.monotonic()
    for i in range(10):  # ten writes in a row cost one delay each way, not ten
        client.write(b"%d," % i)
        await asyncio.sleep(0.01)
    await client.wait_bytes(20)
    assert client.data == b"".join(b"%d," % i for i in range(10))
    assert 0.39 <= time.monotonic() - started < 1.5
    close(client)


async def test_stall_holds_data_with_the_connection_open_until_resumed(
    fp: FaultProxy, echo: EchoServer
) -> None:
    client = await connect(fp.port)
    client.write(b"before")
    await client.wait_bytes(6)
    fp.stall("to_server")
    client.write(b"during")
    client.write(b"-stall")
    await asyncio.sleep(0.3)
    (server,) = await echo.wait_peers(1)
    assert server.data == b"before" and client.data == b"before"
    assert not client.closed and not server.closed
    fp.resume("to_server")
    assert await client.wait_bytes(18) == b"beforeduring-stall"
    close(client)


async def test_stall_to_client_holds_only_the_replies(fp: FaultProxy, echo: EchoServer) -> None:
    client = await connect(fp.port)
    fp.stall("to_client")
    client.write(b"ping")
    (server,) = await echo.wait_peers(1)
    await server.wait_bytes(4)
    await asyncio.sleep(0.2)
    assert client.data == b""
    fp.resume()
    assert await client.wait_bytes(4) == b"ping"
    close(client)


async def test_cut_all_resets_current_connections_and_new_ones_still_work(
    fp: FaultProxy, echo: EchoServer
) -> None:
    first, second = await connect(fp.port), await connect(fp.port)
    first.write(b"a")
    second.write(b"b")
    await first.wait_bytes(1)
    await second.wait_bytes(1)
    assert await fp.cut_all() == 2
    for peer in (first, second, *await echo.wait_peers(2)):
        await peer.wait_closed()
        assert isinstance(peer.error, ConnectionResetError), peer.error
    assert (fp.counters.cut, fp.counters.open) == (2, 0)
    third = await connect(fp.port)
    third.write(b"again")
    assert await third.wait_bytes(5) == b"again"
    close(third)


async def test_cut_all_with_close_ends_connections_with_eof(
    fp: FaultProxy, echo: EchoServer
) -> None:
    client = await connect(fp.port)
    client.write(b"x")
    await client.wait_bytes(1)
    await fp.cut_all("close")
    await client.wait_closed()
    assert client.eof and client.error is None
    (server,) = await echo.wait_peers(1)
    await server.wait_closed()
    assert server.eof


async def test_cut_all_also_ends_stalled_connections(fp: FaultProxy) -> None:
    client = await connect(fp.port)
    fp.stall()
    client.write(b"held")
    await asyncio.sleep(0.05)
    assert await fp.cut_all() == 1
    await client.wait_closed()
    assert client.data == b""


async def test_cut_next_cuts_only_the_next_connection_after_k_bytes(
    fp: FaultProxy, echo: EchoServer
) -> None:
    before = await connect(fp.port)
    before.write(b"x")
    await before.wait_bytes(1)
    fp.cut_next(after=5, direction="to_server")
    victim = await connect(fp.port)
    victim.write(b"0123456789")
    await victim.wait_closed()
    assert isinstance(victim.error, ConnectionResetError)
    servers = await echo.wait_peers(2)
    await servers[1].wait_closed()
    assert servers[1].data == b"01234"  # exactly K bytes got through
    assert fp.counters.cut == 1
    # the connection that was open and the ones after are untouched
    after = await connect(fp.port)
    for peer in (before, after):
        peer.write(b"still here")
    assert await after.wait_bytes(10) == b"still here"
    assert await before.wait_bytes(11) == b"xstill here"
    close(before)
    close(after)


async def test_cut_next_with_zero_bytes_cuts_at_accept(fp: FaultProxy) -> None:
    fp.cut_next(0)
    client = await connect(fp.port)
    await client.wait_closed()
    assert client.data == b""
    assert fp.counters.cut == 1


async def test_a_chain_of_fault_proxies_relays_data_split_at_every_byte(
    echo: EchoServer,
) -> None:
    # The second proxy receives what the first sends one byte per segment, at random sizes back.
    async with (
        FaultProxy("127.0.0.1", echo.port) as inner,
        FaultProxy("127.0.0.1", inner.port) as outer,
    ):
        outer.split("to_server", 1, pause=0)
        inner.split_randomly("to_client", seed=3, max_piece=7, pause=0)
        payload = os.urandom(5000)
        client = await connect(outer.port)
        client.write(payload)
        assert await client.wait_bytes(len(payload), timeout=30) == payload
        assert outer.counters.segments["to_server"] == len(payload)
        close(client)


async def test_an_unreachable_target_closes_the_client() -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        async with FaultProxy("127.0.0.1", port) as proxy:
            client = await connect(proxy.port)
            await client.wait_closed()
            assert proxy.counters.refused == 1 and proxy.counters.open == 0


async def test_closing_the_proxy_ends_its_connections(echo: EchoServer) -> None:
    proxy = await FaultProxy("127.0.0.1", echo.port).start()
    client = await connect(proxy.port)
    client.write(b"x")
    await client.wait_bytes(1)
    proxy.stall()
    await proxy.close()
    await client.wait_closed()
    with pytest.raises(OSError):
        await connect(proxy.port)
