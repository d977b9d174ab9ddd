"""Builders and parsers of the PostgreSQL v3 messages the pooler writes or reads (sans-IO)."""

from __future__ import annotations

import struct
from collections.abc import Mapping

from pyproxy.errors import WARNING
from pyproxy.proto.codes import (
    AUTH_MD5,
    AUTH_SASL,
    CANCEL_REQUEST_CODE,
    PROTOCOL_3_0,
    SSL_REQUEST_CODE,
)

_I = struct.Struct("!I")
_II = struct.Struct("!II")
_III = struct.Struct("!III")
_cI = struct.Struct("!cI")

READY_IDLE = b"Z\x00\x00\x00\x05I"
READY_IN_TX = b"Z\x00\x00\x00\x05T"
READY_FAILED_TX = b"Z\x00\x00\x00\x05E"
READY_LENGTH = b"\x00\x00\x00\x05"  # the length field of every ReadyForQuery
AUTH_OK_MSG = b"R\x00\x00\x00\x08\x00\x00\x00\x00"
TERMINATE = b"X\x00\x00\x00\x04"
SYNC = b"S\x00\x00\x00\x04"
FLUSH = b"H\x00\x00\x00\x04"
PARSE_COMPLETE = b"1\x00\x00\x00\x04"
BIND_COMPLETE = b"2\x00\x00\x00\x04"
CLOSE_COMPLETE = b"3\x00\x00\x00\x04"
NO_DATA = b"n\x00\x00\x00\x04"
NO_PARAMETERS = b"t\x00\x00\x00\x06\x00\x00"  # ParameterDescription of no parameters
EMPTY_QUERY_RESPONSE = b"I\x00\x00\x00\x04"
EMPTY_QUERY = b"Q\x00\x00\x00\x05\x00"


def message(type_: bytes, body: bytes = b"") -> bytes:
    """Frame one message: type byte, int32 length (including itself), body."""
    return type_ + _I.pack(len(body) + 4) + body


def cstr(value: str) -> bytes:
    return value.encode() + b"\x00"


def ready_for_query(status: bytes) -> bytes:
    return message(b"Z", status)


def auth_request(code: int, data: bytes = b"") -> bytes:
    return message(b"R", _I.pack(code) + data)


def auth_md5(salt: bytes) -> bytes:
    return auth_request(AUTH_MD5, salt)


def auth_sasl(mechanisms: tuple[str, ...]) -> bytes:
    return auth_request(AUTH_SASL, b"".join(cstr(m) for m in mechanisms) + b"\x00")


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", _II.pack(pid, secret))


def query(sql: str) -> bytes:
    return message(b"Q", cstr(sql))


def extended_query(sql: str, params: list[str]) -> bytes:
    """Parse, Bind (text parameters), Execute and Sync of the unnamed statement and portal."""
    parse = cstr("") + cstr(sql) + b"\x00\x00"
    values = b"".join(_I.pack(len(v.encode())) + v.encode() for v in params)
    bind = b"\x00\x00" + b"\x00\x00" + struct.pack("!H", len(params)) + values + b"\x00\x00"
    return message(b"P", parse) + message(b"B", bind) + message(b"E", b"\x00" + _I.pack(0)) + SYNC


def password_message(data: bytes) -> bytes:
    return message(b"p", data)


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return message(b"p", cstr(mechanism) + _I.pack(len(data)) + data)


def startup_message(params: Mapping[str, str]) -> bytes:
    body = _I.pack(PROTOCOL_3_0)
    body += b"".join(cstr(k) + cstr(v) for k, v in params.items() if v is not None) + b"\x00"
    return _I.pack(len(body) + 4) + body


def ssl_request() -> bytes:
    return _II.pack(8, SSL_REQUEST_CODE)


def cancel_request(pid: int, secret: int) -> bytes:
    return _III.pack(16, CANCEL_REQUEST_CODE, pid) + _I.pack(secret)


def negotiate_protocol_version(minor: int, unsupported: list[str]) -> bytes:
    body = _II.pack(minor, len(unsupported)) + b"".join(cstr(o) for o in unsupported)
    return message(b"v", body)


def _fields(severity: str, code: str, text: str, detail: str | None, hint: str | None) -> bytes:
    parts = [b"S", cstr(severity), b"V", cstr(severity), b"C", cstr(code), b"M", cstr(text)]
    if detail:
        parts += [b"D", cstr(detail)]
    if hint:
        parts += [b"H", cstr(hint)]
    return b"".join(parts) + b"\x00"


def error_response(
    code: str,
    text: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    """Build an ErrorResponse carrying a SQLSTATE."""
    return message(b"E", _fields(severity, code, text, detail, hint))


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


def notice_response(
    text: str, *, code: str = WARNING, detail: str | None = None, hint: str | None = None
) -> bytes:
    return message(b"N", _fields("NOTICE", code, text, detail, hint))


def parse_fields(body: bytes | memoryview) -> dict[str, str]:
    """Decode the fields of an ErrorResponse/NoticeResponse body into {code letter: value}."""
    out: dict[str, str] = {}
    data = bytes(body)
    pos = 0
    n = len(data)
    while pos < n and data[pos] != 0:
        key = chr(data[pos])
        end = data.find(b"\x00", pos + 1)
        if end < 0:
            break
        out[key] = data[pos + 1 : end].decode("utf-8", "replace")
        pos = end + 1
    return out


def parse_cstrings(body: bytes | memoryview) -> list[str]:
    """Split a body of NUL-terminated strings (trailing empty terminator ignored)."""
    parts = bytes(body).split(b"\x00")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", "replace") for p in parts]


def parse_parameter_status(body: bytes | memoryview) -> tuple[str, str]:
    parts = parse_cstrings(body)
    if len(parts) < 2:
        return (parts[0] if parts else "", "")
    return parts[0], parts[1]


def parse_startup_params(body: bytes | memoryview) -> dict[str, str]:
    """Decode a StartupMessage body after the protocol code: name/value pairs, then NUL."""
    data = bytes(body)
    if not data.endswith(b"\x00"):
        raise ValueError("startup packet is not terminated")
    items = data[:-1].split(b"\x00") if len(data) > 1 else []
    if items and items[-1] == b"":
        items.pop()
    if len(items) % 2:
        raise ValueError("startup packet has a name without a value")
    params: dict[str, str] = {}
    for i in range(0, len(items), 2):
        params[items[i].decode("utf-8", "replace")] = items[i + 1].decode("utf-8", "replace")
    return params


def parse_sasl_initial(body: bytes | memoryview) -> tuple[str, bytes]:
    """Decode SASLInitialResponse: mechanism name, int32 length (-1 = none), data."""
    data = bytes(body)
    end = data.find(b"\x00")
    if end < 0 or len(data) < end + 5:
        raise ValueError("malformed SASLInitialResponse")
    mech = data[:end].decode("ascii", "replace")
    (length,) = struct.unpack_from("!i", data, end + 1)
    payload = data[end + 5 :] if length >= 0 else b""
    if length >= 0 and len(payload) != length:
        raise ValueError("SASLInitialResponse length mismatch")
    return mech, payload


def parse_data_row(body: bytes) -> list[str | None]:
    """A DataRow's values as text (NULL as None)."""
    count = struct.unpack_from("!H", body)[0]
    off = 2
    out: list[str | None] = []
    for _ in range(count):
        n = struct.unpack_from("!i", body, off)[0]
        off += 4
        if n < 0:
            out.append(None)
        else:
            out.append(body[off : off + n].decode("utf-8", "replace"))
            off += n
    return out


# ---- extended-query messages pyproxy builds when it renames prepared statements -----------------


def split_name(body: bytes, start: int = 0) -> tuple[bytes, int]:
    """The NUL-terminated name at ``start`` and the offset just after its terminator."""
    end = body.index(b"\x00", start)
    return body[start:end], end + 1


def frame(type_: bytes, body: bytes) -> bytes:
    return type_ + _I.pack(len(body) + 4) + body


def parse_message(name: bytes, rest: bytes) -> bytes:
    """A Parse of statement ``name``; ``rest`` is the body after the name (query, types)."""
    return frame(b"P", name + b"\x00" + rest)


def close_statement(name: bytes) -> bytes:
    return frame(b"C", b"S" + name + b"\x00")


def bind_with(portal: bytes, stmt: bytes, rest: bytes) -> bytes:
    body = portal + b"\x00" + stmt + b"\x00" + rest
    return b"B" + _I.pack(len(body) + 4) + body


def bind_no_parameters(portal: bytes, stmt: bytes) -> bytes:
    """Bind ``stmt`` (which takes no parameters) to ``portal`` with default formats."""
    return bind_with(portal, stmt, b"\x00\x00\x00\x00\x00\x00")


def describe_statement(name: bytes) -> bytes:
    return frame(b"D", b"S" + name + b"\x00")


def parse_rest_with_query(rest: bytes, query: bytes) -> bytes:
    """The Parse body after the name with another query text; unspecified types become text.

    PostgreSQL refuses a Parse whose parameter of unspecified type is not used by the query.
    """
    end = rest.index(b"\x00")
    types = rest[end + 1 :]
    if len(types) >= 2:
        n = struct.unpack_from("!H", types)[0]
        oids = struct.unpack_from(f"!{n}I", types, 2) if len(types) >= 2 + 4 * n else ()
        types = struct.pack(f"!H{len(oids)}I", len(oids), *(o or 25 for o in oids))
    return query + b"\x00" + types


def row_description(columns: list[tuple[str, int]]) -> bytes:
    """RowDescription of text-format columns given as (name, type OID)."""
    body = [struct.pack("!H", len(columns))]
    for name, oid in columns:
        body.append(cstr(name) + struct.pack("!IhIhih", 0, 0, oid, -1, -1, 0))
    return message(b"T", b"".join(body))


def data_row(values: list[str | None]) -> bytes:
    """DataRow of text values (None is NULL)."""
    body = [struct.pack("!H", len(values))]
    for value in values:
        if value is None:
            body.append(b"\xff\xff\xff\xff")
        else:
            raw = value.encode()
            body.append(_I.pack(len(raw)) + raw)
    return message(b"D", b"".join(body))
