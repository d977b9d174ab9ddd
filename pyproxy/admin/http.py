"""A small HTTP/1.1 server on asyncio streams: request parsing, limits, timeouts, keep-alive."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass
from ssl import SSLContext

from pyproxy.admin.admission import Admission, Progress, Refused, Ticket
from pyproxy.admin.http_messages import (
    REASONS,
    Handler,
    HttpError,
    HttpLimits,
    Request,
    Response,
    body_length,
    error_response,
    parse_head,
)

log = logging.getLogger("pyproxy.admin.http")
TLS_HANDSHAKE_TIMEOUT = 10.0  # seconds an HTTPS client has for its handshake


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

    async def start(self, host: str, port: int, ssl: SSLContext | None = None) -> None:
        """Listen (over HTTPS with ``ssl``)."""
        backlog = max(100, min(4096, self.limits.max_connections + self.limits.max_queued))
        self._server = await asyncio.start_server(
            self._accept, host, port, backlog=backlog, ssl=ssl,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if ssl is not None else None,
        )  # fmt: skip

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
