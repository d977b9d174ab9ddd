"""A socket-free world of real pyproxy objects (pool, client and server protocols) with fake
transports whose servers answer as PostgreSQL would; bench.hotpath measures it, unit tests
drive it."""

from __future__ import annotations

from collections import deque
from typing import Any

from pyproxy.config import parse_config
from pyproxy.net.client import ClientConn
from pyproxy.net.server import ServerConn
from pyproxy.net.state import ProxyState
from pyproxy.pool.registry import PoolRegistry
from pyproxy.proto import messages as m
from pyproxy.proto.phases import ClientPhase, ServerPhase

POOL_SIZE = 20


def message(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


ROW_DESCRIPTION = message(
    b"T",
    b"\x00\x01abalance\x00"  # one column: name, table oid, column number
    b"\x00\x00\x40\x00\x00\x03"
    b"\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00",  # int4, size 4, typmod -1, text
)
ROWS = message(b"D", b"\x00\x01\x00\x00\x00\x041234") + message(b"C", b"SELECT 1\x00")
# What PostgreSQL answers to each request message (by type), for a one-row SELECT.
ANSWERS = {
    ord("Q"): ROW_DESCRIPTION + ROWS + m.READY_IDLE,
    ord("P"): message(b"1", b""),
    ord("B"): message(b"2", b""),
    ord("D"): ROW_DESCRIPTION,
    ord("E"): ROWS,
    ord("S"): m.READY_IDLE,
    ord("C"): message(b"3", b""),
    ord("X"): b"",  # Terminate: the connection closes, nothing answers
}


class Transport:
    """Accepts writes and flow-control calls; sends nothing anywhere."""

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5432) if name == "peername" else None

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


_REPLIES: dict[bytes, bytes] = {}  # by request: the few distinct requests answered once


class Backend(Transport):
    """A server's transport: each write is answered as PostgreSQL would, message by message;
    ``answer()`` gives the reply to the oldest request not yet answered."""

    def __init__(self) -> None:
        self.replies: deque[bytes] = deque()
        self.last = b""  # the last request written

    def write(self, data: bytes) -> None:
        self.last = data
        reply = _REPLIES.get(data)
        if reply is None:
            out = []
            off = 0
            while off < len(data):
                out.append(ANSWERS[data[off]])
                off += 1 + int.from_bytes(data[off + 1 : off + 5], "big")
            reply = _REPLIES[data] = b"".join(out)
        self.replies.append(reply)

    def answer(self) -> bytes:
        return self.replies.popleft()


class Recorder(Transport):
    """A transport that keeps what is written to it (and a mark when it is closed)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.written.append(b"<closed>")


def world(
    clients: int, mode: str = "transaction", metrics: bool = True
) -> tuple[list[ServerConn], list[ClientConn]]:
    """A pool of ``POOL_SIZE`` idle servers and ``clients`` logged-in clients of it;
    ``metrics``: [proxy] metrics (left out of the config when on, its default)."""
    proxy: dict[str, Any] = {"listen": "127.0.0.1:0", "auth_type": "trust"}
    proxy |= {"query_wait_timeout": 120} | ({} if metrics else {"metrics": False})
    cfg = parse_config(
        {
            "proxy": proxy,
            "admin": {"enabled": False},
            "clusters": [
                {
                    "id": "00000000-0000-4000-8000-000000000001",
                    "max_connections": 100,
                    "users": [{"name": "app", "password": "secret"}],
                    "pools": [
                        {
                            "name": "bench_tx",
                            "db": "app",
                            "user": "app",
                            "size": POOL_SIZE,
                            "mode": mode,
                        }
                    ],
                }
            ],
        }
    )

    async def no_connect(pool: Any) -> Any:
        raise RuntimeError("the fake world opens no connections")

    registry = PoolRegistry(cfg, no_connect)
    state = ProxyState(cfg, registry, no_connect)
    pool = registry.get_pool("bench_tx", "app")
    assert pool is not None
    pool.welcome = {}
    servers = []
    for _ in range(POOL_SIZE):
        server = ServerConn(pool, max_packet=1 << 20, tracked=state.tracked)
        server.transport = Backend()  # type: ignore[assignment]
        server.move(ServerPhase.IDLE)
        pool.release(server, fresh=True)
        servers.append(server)
    conns = []
    for _ in range(clients):
        client = ClientConn(state)
        client.connection_made(Transport())  # type: ignore[arg-type]
        client.move(ClientPhase.AUTH)
        client.move(ClientPhase.LOGIN)
        client.join(pool)
        client.logged_in()
        conns.append(client)
    return servers, conns


def transactions(servers: list[ServerConn], request: bytes, count: int) -> None:
    """Complete ``count`` transactions, round robin over the servers: each server answers its
    client's request, and the client sends ``request`` again (a kept server's client starts
    its next transaction at once)."""
    done = 0
    i = 0
    while done < count:
        server = servers[i % len(servers)]
        i += 1
        client = server.client
        if client is None:
            continue
        if not server.transport.replies:  # type: ignore[union-attr]
            # Nothing to answer: its client keeps it between transactions and starts the next.
            client.data_received(request)
            continue
        server.data_received(server.transport.answer())  # type: ignore[union-attr]
        client.data_received(request)
        done += 1
