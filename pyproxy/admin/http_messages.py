"""HTTP/1.1 messages: request heads parsed and checked, responses built, status reasons, limits."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

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
