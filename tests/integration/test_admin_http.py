"""The admin HTTP server over raw sockets: keep-alive, limits, timeouts, errors as JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from pyproxy.admin.http import HttpServer
from pyproxy.admin.http_messages import HttpLimits, Request, Response, json_response

# No queue here: a connection over the cap is answered 503 at once (test_admin_limits.py has the
# queue, the per-address cap and the deadline for unauthenticated connections).
LIMITS = HttpLimits(
    header_timeout=0.5, body_timeout=0.5, idle_timeout=0.5, max_connections=4, max_queued=0
)


async def echo(req: Request) -> Response:
    if req.target == "/boom":
        raise RuntimeError("handler failure")
    return json_response(200, {"method": req.method, "target": req.target, "body": len(req.body)})


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    srv = HttpServer(echo, LIMITS)
    await srv.start("127.0.0.1", 0)
    yield srv
    await srv.stop()


async def connect(srv: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", srv.port)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_two_requests_on_one_keep_alive_connection(server: HttpServer) -> None:
    reader, writer = await connect(server)
    for target in ("/a", "/b"):
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, headers, body = await read_response(reader)
        assert status == 200
        assert headers["content-type"] == "application/json; charset=utf-8"
        assert len(headers["x-request-id"]) == 36
        assert json.loads(body)["target"] == target
    writer.close()


async def test_pipelined_requests_are_answered_in_order(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads((await read_response(reader))[2])["target"] == "/1"
    assert json.loads((await read_response(reader))[2])["target"] == "/2"
    writer.close()


async def test_chunked_body_is_decoded(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    )
    status, _, body = await read_response(reader)
    assert (status, json.loads(body)["body"]) == (200, 11)
    writer.close()


async def test_connection_close_is_honoured(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    _, headers, _ = await read_response(reader)
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def assert_error(reader: asyncio.StreamReader, status: int, error_id: str) -> None:
    got, headers, body = await read_response(reader)
    assert got == status
    assert headers["content-type"] == "application/json; charset=utf-8"
    payload = json.loads(body)
    assert payload["id"] == error_id and payload["message"]
    assert payload["request_id"] == headers["x-request-id"]


async def test_garbage_is_answered_400_as_json_and_closed(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"\x16\x03\x01 hello there\r\n\r\n")
    await assert_error(reader, 400, "bad_request")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_missing_host_header_is_400(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    await assert_error(reader, 400, "bad_request")
    writer.close()


async def test_header_block_over_16_kib_is_431(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n")
    await assert_error(reader, 431, "request_header_fields_too_large")
    writer.close()


async def test_endless_header_line_is_431_without_waiting_for_its_end(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000)
    await assert_error(reader, 431, "request_header_fields_too_large")
    writer.close()


async def test_body_over_64_kib_is_413_and_the_client_can_read_it(server: HttpServer) -> None:
    reader, writer = await connect(server)
    body = b"x" * 70000
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n" + body)
    await assert_error(reader, 413, "payload_too_large")
    writer.close()


async def test_chunked_body_over_64_kib_is_413(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(5):
        writer.write(b"4000\r\n" + b"y" * 0x4000 + b"\r\n")
    await assert_error(reader, 413, "payload_too_large")
    writer.close()


async def test_handler_exception_is_500_json_and_connection_stays_usable(
    server: HttpServer,
) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
    await assert_error(reader, 500, "server_error")
    writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_slow_headers_get_408_within_the_header_timeout(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    await assert_error(reader, 408, "request_timeout")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_slow_body_gets_408(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    await assert_error(reader, 408, "request_timeout")
    writer.close()


async def test_idle_keep_alive_connection_is_closed_within_the_idle_timeout(
    server: HttpServer,
) -> None:
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_response(reader)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_connections_over_the_cap_get_503_and_the_cap_frees_up(server: HttpServer) -> None:
    held = [await connect(server) for _ in range(LIMITS.max_connections)]
    for r, w in held:  # make sure each was accepted and is being served
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_response(r))[0] == 200
    reader, writer = await connect(server)
    await assert_error(reader, 503, "service_unavailable")
    writer.close()
    for _, w in held:
        w.close()
    await asyncio.sleep(0.1)
    reader, writer = await connect(server)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_expect_100_continue_gets_an_interim_response(server: HttpServer) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
        b"HTTP/1.1 100 Continue\r\n\r\n"
    )
    writer.write(b"{}")
    assert (await read_response(reader))[0] == 200
    writer.close()
