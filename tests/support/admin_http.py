"""The admin API without PostgreSQL, and raw HTTP/1.1 clients for it from chosen local addresses."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from pyproxy.admin.http_messages import HttpLimits
from pyproxy.admin.server import AdminServer
from pyproxy.admin.store import StateStore
from pyproxy.auth.throttle import LoginThrottle
from pyproxy.config import Config, parse_config
from pyproxy.pool.pool import Pool
from pyproxy.pool.registry import PoolRegistry

CLUSTER_ID = "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30"
TOKEN = "dop_v1_limits-test-token"
POOLS = f"/v2/databases/{CLUSTER_ID}/pools"


def config(**proxy: Any) -> Config:
    """One cluster that nothing connects to (listing pools needs no server), one file pool."""
    return parse_config(
        {
            "proxy": {"listen": "127.0.0.1:0", **proxy},
            "admin": {"listen": "127.0.0.1:0", "token": TOKEN, "state_path": ":memory:"},
            "clusters": [
                {
                    "id": CLUSTER_ID,
                    "port": 1,
                    "users": [{"name": "app", "password": "secret"}],
                    "pools": [{"name": "filepool", "db": "app", "size": 2}],
                }
            ],
        },
        env={},
    )


async def _no_server(pool: Pool) -> Any:
    raise AssertionError("these tests never open a server connection")


@contextlib.asynccontextmanager
async def admin_server(
    limits: HttpLimits | None = None, throttle: LoginThrottle | None = None
) -> AsyncIterator[AdminServer]:
    """The real admin server (routes, token check, HTTP listener) on 127.0.0.1, port 0."""
    cfg = config()
    store = StateStore(":memory:")
    server = AdminServer(
        cfg.admin, PoolRegistry(cfg, _no_server), store, limits=limits, throttle=throttle
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        store.close()


def request(path: str = POOLS, token: str | None = TOKEN, *, close: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def connect(
    port: int, local: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the admin port from ``local`` (any 127.0.0.0/8 address is loopback)."""
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))


async def read_response(
    reader: asyncio.StreamReader, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.lower()] = v.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split(" ")[1]), headers, body


def error_id(headers: dict[str, str], body: bytes) -> str:
    """The ``id`` of a JSON error body, checked to have the usual shape."""
    payload = json.loads(body)
    assert set(payload) == {"id", "message", "request_id"} and payload["message"]
    assert payload["request_id"] == headers["x-request-id"]
    return str(payload["id"])


async def call(
    port: int, token: str | None = TOKEN, local: str = "127.0.0.1", path: str = POOLS
) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection."""
    reader, writer = await connect(port, local)
    try:
        writer.write(request(path, token))
        return await read_response(reader)
    finally:
        writer.close()


async def is_open(reader: asyncio.StreamReader, wait: float = 0.2) -> bool:
    """True when the server neither answered nor closed within ``wait`` seconds."""
    try:
        async with asyncio.timeout(wait):
            await reader.read(1)  # an answer or the end of the stream
            return False
    except TimeoutError:
        return True
    except ConnectionError:
        return False
