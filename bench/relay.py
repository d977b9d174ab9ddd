"""A bare asyncio byte relay: the benchmark's floor for any pure-Python proxy on this machine.

`python -m bench.relay --listen-port P --pg-host H --pg-port Q` accepts PostgreSQL clients and
opens one backend connection to H:Q for each of them, then copies bytes both ways without
looking at them: no protocol parsing, no pooling, no authentication of its own. Whatever CPU it
spends per transaction is what the event loop and the Python callbacks cost for relaying the
bytes, so its figures are a lower bound for pyproxy's, measured in the same run as PgBouncer.

Runs on uvloop when it is importable (like pyproxy), and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from typing import cast

BACKLOG = 4096


class ClientSide(asyncio.Protocol):
    """One accepted client: opens its own backend connection and relays to and from it."""

    def __init__(self, pg_host: str, pg_port: int, live: set[ClientSide]) -> None:
        self.pg_host, self.pg_port = pg_host, pg_port
        self.live = live
        self.transport: asyncio.Transport | None = None
        self.backend: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # client bytes that arrived before the backend was up
        self.closed = False
        self.backend_paused = False  # the client could not keep up: stop reading the backend
        self.connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.live.add(self)
        self.connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        client = self.transport
        assert client is not None
        try:
            backend, _ = await loop.create_connection(
                lambda: BackendSide(client), self.pg_host, self.pg_port
            )
        except OSError:
            self.close()
            return
        if self.closed:
            backend.close()
            return
        self.backend = backend
        if self.pending:
            backend.write(b"".join(self.pending))
            self.pending.clear()
        if self.backend_paused:
            backend.pause_reading()

    def data_received(self, data: bytes) -> None:
        if self.backend is None:
            self.pending.append(data)
        else:
            self.backend.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.live.discard(self)
        if self.backend is not None:
            self.backend.close()

    def pause_writing(self) -> None:
        self.backend_paused = True
        if self.backend is not None and not self.backend.is_closing():
            self.backend.pause_reading()

    def resume_writing(self) -> None:
        self.backend_paused = False
        if self.backend is not None and not self.backend.is_closing():
            self.backend.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.backend is not None:
            self.backend.close()


class BackendSide(asyncio.Protocol):
    """The backend connection of one client: relays PostgreSQL's bytes back to that client."""

    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()

    def pause_writing(self) -> None:
        if not self.client.is_closing():
            self.client.pause_reading()

    def resume_writing(self) -> None:
        if not self.client.is_closing():
            self.client.resume_reading()


async def serve(listen_host: str, listen_port: int, pg_host: str, pg_port: int) -> None:
    """Relay until SIGTERM or SIGINT, then close the listener and every open connection."""
    loop = asyncio.get_running_loop()
    live: set[ClientSide] = set()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_server(
        lambda: ClientSide(pg_host, pg_port, live), listen_host, listen_port, backlog=BACKLOG
    )
    port = server.sockets[0].getsockname()[1]
    print(f"relay listening on {listen_host}:{port} -> {pg_host}:{pg_port}", flush=True)
    await stop.wait()
    server.close()
    for client in list(live):
        client.close()
    await server.wait_closed()
    for _ in range(100):  # let the closed transports report connection_lost before the loop ends
        if not live:
            break
        await asyncio.sleep(0.01)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--listen-port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--pg-host", required=True)
    parser.add_argument("--pg-port", type=int, required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        import uvloop  # type: ignore[import-not-found]

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.listen_host, args.listen_port, args.pg_host, args.pg_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
