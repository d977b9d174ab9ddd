"""A small HTTP/1.1 server on asyncio streams: request parsing, limits, timeouts, keep-alive."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pyproxy.admin.admission import Admission, Progress, Refused, Ticket

log = logging.getLogger("pyproxy.admin.http")

JSON_TYPE = "application/json; charset=utf-8"

REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

ERROR_IDS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    422: "unprocessable_entity",
    429: "too_many_requests",
    431: "request_header_fields_too_large",
    500: "server_error",
    501: "not_implemented",
    503: "service_unavailable",
    505: "http_version_not_supported",
}

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class HttpLimits:
    """Resource limits that keep slow or hostile clients from holding the admin listener.

    Until a connection has completed an authenticated request, it has ``unauthenticated_timeout``
    seconds from admission (or from its previous response) to send all of its next request, and
    it counts against ``max_unauthenticated_per_address``; afterwards the longer per-phase
    timeouts apply and it holds no slot while idle. ``admission.Admission`` has the slot rules.
    """

    max_header_bytes: int = 16 * 1024
    max_body_bytes: int = 64 * 1024
    header_timeout: float = 15.0  # from the first byte of a request to the end of its headers
    body_timeout: float = 15.0
    idle_timeout: float = 30.0  # keep-alive: wait for the next request this long
    write_timeout: float = 15.0
    unauthenticated_timeout: float = 5.0  # whole request, until one authenticated request is done
    max_connections: int = 256  # slots: connections reading or handling a request at once
    max_queued: int = 256  # connections waiting for a slot; beyond it they get 503 at once
    queue_timeout: float = 10.0  # longest wait for a slot, then 503
    max_unauthenticated_per_address: int = 16  # 0 = no cap; beyond it the oldest are closed ...
    unauthenticated_grace: float = 1.0  # ... once they have waited this long for their request


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]  # names lower-cased, in arrival order
    body: bytes = b""
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    client: str = ""  # the client's IP address

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (lower-case), or None."""
        value = None
        for key, val in self.headers:
            if key == name:
                value = val
        return value

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False
    authenticated: bool = False  # the request carried valid credentials: trust the connection


Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    """A request the server refuses before it reaches the handler."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(
    status: int, payload: object, headers: list[tuple[str, str]] | None = None
) -> Response:
    """A response with a JSON body (UTF-8)."""
    body = json.dumps(payload, ensure_ascii=False).encode()
    return Response(status, body, [("content-type", JSON_TYPE), *(headers or [])])


def error_response(status: int, message: str, request_id: str) -> Response:
    """The DigitalOcean-style error body: ``{"id", "message", "request_id"}``."""
    payload = {"id": ERROR_IDS.get(status, "error"), "message": message, "request_id": request_id}
    return json_response(status, payload)


def parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Parse a request line and header block (without the blank line) or raise HttpError(400)."""
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    while lines and lines[0] == b"":  # RFC 9112 2.2: ignore empty lines before the request line
        lines.pop(0)
    if not lines:
        raise HttpError(400, "empty request")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[1]:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise HttpError(400, "malformed request method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if re.match(rb"^HTTP/\d\.\d$", version):
            raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise HttpError(400, "malformed HTTP version")
    if _BAD_VALUE.search(target) or b"\t" in target:
        raise HttpError(400, "malformed request target")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete header line folding is not accepted")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise HttpError(400, "malformed header line")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise HttpError(400, "invalid character in a header value")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
    return method.decode("ascii"), target.decode("latin-1"), version.decode("ascii"), headers


def body_length(headers: list[tuple[str, str]]) -> int | None:
    """Content-Length of a request, None for chunked, or raise HttpError."""
    lengths = {v.strip() for k, v in headers if k == "content-length"}
    encodings = [v for k, v in headers if k == "transfer-encoding"]
    if encodings:
        if lengths:
            raise HttpError(400, "both Transfer-Encoding and Content-Length are present")
        codings = [c.strip().lower() for v in encodings for c in v.split(",")]
        if codings != ["chunked"]:
            raise HttpError(501, "only the chunked transfer coding is supported")
        return None
    if not lengths:
        return 0
    merged = {p.strip() for v in lengths for p in v.split(",")}
    if len(merged) != 1:
        raise HttpError(400, "conflicting Content-Length values")
    value = merged.pop()
    if not value.isdigit() or not value.isascii():
        raise HttpError(400, "Content-Length is not a number")
    return int(value)


@dataclass
class _Lingering:
    """Refused connections being given a moment to read their 503, and how many may be."""

    limit: int
    count: int = 0


class _Connection:
    """One client connection: get a slot, read requests, call the handler, write responses."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        handler: Handler,
        limits: HttpLimits,
        admission: Admission,
        lingering: _Lingering,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.handler = handler
        self.limits = limits
        self.admission = admission
        self.lingering = lingering
        self.buf = bytearray()
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.ticket = Ticket(self.client, self._evict)
        self.trusted = False  # completed an authenticated request
        self.deadline: float | None = None  # loop time by which the current request must be read
        self.evicted = False
        self.task = asyncio.current_task()
        self.loop = asyncio.get_running_loop()

    async def run(self) -> None:
        refusal: str | None = None
        try:
            try:
                await self._admit()
                while await self._one_request():
                    pass
            except Refused as exc:
                refusal = str(exc)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                pass  # the client reset the connection or did not keep up
            except asyncio.CancelledError:
                if not self.evicted or self.task is None:
                    raise
                self.task.uncancel()
                refusal = "too many incomplete requests from your address, retry later"
            finally:
                self.admission.done_waiting(self.ticket)
                self.admission.release(self.ticket)
            if refusal is not None:
                await self._refuse(refusal)
        finally:
            self.writer.close()

    async def _admit(self) -> None:
        """Get a slot; while queued for one, read the request line and headers (bounded), so
        that admission can tell a ready request from a slow client."""
        if self.admission.try_acquire(self.ticket):
            return
        self.admission.progressed(self.ticket, _progress(self.buf, self.limits.max_header_bytes))
        reading = asyncio.create_task(self._read_while_queued())
        try:
            await self.admission.acquire(self.ticket)
        finally:
            reading.cancel()
            await asyncio.wait([reading])  # only one reader of the stream at a time

    async def _read_while_queued(self) -> None:
        limit = self.limits.max_header_bytes
        while self.ticket.progress in (Progress.UNREAD, Progress.PARTIAL):
            try:
                chunk = await self.reader.read(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.admission.progressed(self.ticket, Progress.GONE)
                return
            self.buf += chunk
            self.admission.progressed(self.ticket, _progress(self.buf, limit))

    def _evict(self) -> None:
        """Called by admission: close this unauthenticated connection, which is still waiting
        for its request, to make room for others (see ``Admission``)."""
        if self.task is not None and not self.evicted:
            self.evicted = True
            self.task.cancel()

    async def _refuse(self, message: str) -> None:
        """Answer 503 (slot already given back) and let the client read it for up to a second,
        unless too many refused connections are lingering already."""
        rid = str(uuid.uuid4())
        lingering = self.lingering
        try:
            async with asyncio.timeout(1.0):
                await self._send(error_response(503, message, rid), True, rid)
            if lingering.count < lingering.limit:
                lingering.count += 1
                try:
                    await self._linger(1.0)
                finally:
                    lingering.count -= 1
        except (OSError, TimeoutError, RuntimeError):
            pass

    async def _one_request(self) -> bool:
        """Serve one request; True when the connection stays open for another."""
        rid = str(uuid.uuid4())
        if self.trusted:
            self.deadline = None
            if not self.buf:  # idle keep-alive: no slot until the next request starts
                self.admission.release(self.ticket)
                if not await self._wait_for_data():
                    return False
                await self._admit()
        else:
            self.deadline = self.loop.time() + self.limits.unauthenticated_timeout
            self.admission.waiting(self.ticket)
        try:
            req = await self._read_request(rid)
        except HttpError as exc:
            self.admission.done_waiting(self.ticket)
            await self._send(error_response(exc.status, exc.message, rid), True, rid)
            await self._linger()
            return False
        except _Timeout as exc:
            self.admission.done_waiting(self.ticket)
            if exc.started:
                msg = "request not received in time"
                await self._send(error_response(408, msg, rid), True, rid)
            return False
        self.admission.done_waiting(self.ticket)
        if req is None:
            return False
        try:
            resp = await self.handler(req)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("admin request %s %s failed", req.method, req.target)
            resp = error_response(500, "Unexpected server-side error", req.request_id)
        self.trusted = self.trusted or resp.authenticated
        close = resp.close or not req.keep_alive
        await self._send(resp, close, req.request_id, head_only=req.method == "HEAD")
        return not close

    def _timeout(self, seconds: float) -> asyncio.Timeout:
        """A timeout of ``seconds``, cut short by the deadline of an unauthenticated request."""
        when = self.loop.time() + seconds
        if self.deadline is not None:
            when = min(when, self.deadline)
        return asyncio.timeout_at(when)

    async def _wait_for_data(self) -> bool:
        """Wait up to the idle timeout for the first bytes of a request; False on close."""
        try:
            async with self._timeout(self.limits.idle_timeout):
                chunk = await self.reader.read(65536)
        except TimeoutError:
            return False
        self.buf += chunk
        return bool(chunk)

    async def _read_request(self, rid: str) -> Request | None:
        head = await self._read_head()
        if head is None:
            return None
        method, target, version, headers = parse_head(head)
        length = body_length(headers)
        if length is not None and length > self.limits.max_body_bytes:
            raise HttpError(413, f"request body exceeds {self.limits.max_body_bytes} bytes")
        req = Request(method, target, version, headers, request_id=rid, client=self.client)
        if version == "HTTP/1.1" and not any(k == "host" for k, _ in headers):
            raise HttpError(400, "the Host header is required")
        expects = (req.header("expect") or "").lower() == "100-continue"
        if expects and length != 0:
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            async with self._timeout(self.limits.body_timeout):
                req.body = await (
                    self._read_exact(length) if length is not None else self._chunked()
                )
        except TimeoutError:
            raise _Timeout(started=True) from None
        return req

    async def _read_head(self) -> bytes | None:
        """Bytes up to the blank line that ends the header block; None on a clean close."""
        limit = self.limits.max_header_bytes
        if not self.buf and not await self._wait_for_data():
            return None
        try:
            async with self._timeout(self.limits.header_timeout):
                while True:
                    end = _head_end(self.buf)
                    if end is not None:
                        head_len, skip = end
                        if head_len > limit:
                            break
                        head = bytes(self.buf[:head_len])
                        del self.buf[: head_len + skip]
                        return head
                    if len(self.buf) > limit + 4:
                        break
                    chunk = await self.reader.read(65536)
                    if not chunk:
                        raise HttpError(400, "connection closed before the request was complete")
                    self.buf += chunk
        except TimeoutError:
            raise _Timeout(started=True) from None
        raise HttpError(431, f"request line and headers exceed {limit} bytes")

    async def _linger(self, seconds: float = 2.0) -> None:
        """Half-close, then discard what the client still sends (bounded), so that it can read
        the error response instead of getting a connection reset for unread data."""
        try:
            if self.writer.can_write_eof():
                self.writer.write_eof()
        except OSError:  # the client has reset the connection already
            return
        discarded = 0
        try:
            async with asyncio.timeout(seconds):
                while discarded < 1024 * 1024:
                    chunk = await self.reader.read(65536)
                    if not chunk:
                        return
                    discarded += len(chunk)
        except TimeoutError:
            pass

    async def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise HttpError(400, "connection closed before the body was complete")
            self.buf += chunk
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def _read_line(self) -> bytes:
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i]).rstrip(b"\r")
                del self.buf[: i + 1]
                return line
            if len(self.buf) > 1024:
                raise HttpError(400, "malformed chunked body")
            chunk = await self.reader.read(65536)
            if not chunk:
                raise HttpError(400, "connection closed before the body was complete")
            self.buf += chunk

    async def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_text = (await self._read_line()).split(b";", 1)[0].strip()
            if not size_text or not re.fullmatch(rb"[0-9A-Fa-f]{1,8}", size_text):
                raise HttpError(400, "malformed chunk size")
            size = int(size_text, 16)
            if size == 0:
                while await self._read_line():  # trailer fields, ignored
                    pass
                return bytes(body)
            if len(body) + size > self.limits.max_body_bytes:
                raise HttpError(413, f"request body exceeds {self.limits.max_body_bytes} bytes")
            body += await self._read_exact(size)
            if await self._read_line() != b"":
                raise HttpError(400, "malformed chunked body")

    async def _send(
        self, resp: Response, close: bool, rid: str = "", *, head_only: bool = False
    ) -> None:
        if rid and not any(k == "x-request-id" for k, _ in resp.headers):
            resp.headers.append(("x-request-id", rid))
        lines = [f"HTTP/1.1 {resp.status} {REASONS.get(resp.status, 'Unknown')}"]
        lines += [f"{k}: {v}" for k, v in resp.headers]
        if resp.status != 204:
            lines.append(f"content-length: {len(resp.body)}")
        if close:
            lines.append("connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        body = b"" if head_only or resp.status == 204 else resp.body
        self.writer.write(head + body)
        async with asyncio.timeout(self.limits.write_timeout):
            await self.writer.drain()


class _Timeout(Exception):
    def __init__(self, started: bool) -> None:
        super().__init__("timeout")
        self.started = started


def _progress(buf: bytearray, limit: int) -> Progress:
    """How much of a request head ``buf`` holds; one over ``limit`` is ready to be refused."""
    if not buf:
        return Progress.UNREAD
    if len(buf) > limit + 4 or _head_end(buf) is not None:
        return Progress.READY
    return Progress.PARTIAL


def _head_end(buf: bytearray) -> tuple[int, int] | None:
    """Where the header block ends: (its length, length of the blank-line terminator)."""
    crlf = buf.find(b"\r\n\r\n")
    lf = buf.find(b"\n\n")
    found = [(i, n) for i, n in ((crlf, 4), (lf, 2)) if i >= 0]
    return min(found) if found else None


class HttpServer:
    """Accept connections on host:port and serve each with ``handler``."""

    def __init__(self, handler: Handler, limits: HttpLimits | None = None) -> None:
        self.handler = handler
        self.limits = limits or HttpLimits()
        lim = self.limits
        self.admission = Admission(
            lim.max_connections,
            max_queued=lim.max_queued,
            queue_timeout=lim.queue_timeout,
            per_address=lim.max_unauthenticated_per_address,
            grace=lim.unauthenticated_grace,
        )
        self._lingering = _Lingering(max(1, lim.max_queued))
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        backlog = max(100, min(4096, self.limits.max_connections + self.limits.max_queued))
        self._server = await asyncio.start_server(self._accept, host, port, backlog=backlog)

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the HTTP server is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.admission.close()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            conn = _Connection(
                reader, writer, self.handler, self.limits, self.admission, self._lingering
            )
            await conn.run()
        except asyncio.CancelledError:
            writer.close()  # stopping; not re-raised: asyncio's stream callback logs it otherwise
        except Exception:
            log.exception("admin connection failed")
            writer.close()
        finally:
            self._tasks.discard(task)
