"""The admin HTTP request parser: request line, header block, body framing."""

from __future__ import annotations

import pytest

from pyproxy.admin.bodies import connection_info, name_problem
from pyproxy.admin.http_messages import HttpError, Request, body_length, parse_head
from pyproxy.admin.openapi import document


def test_request_line_and_headers_are_parsed_with_lowercase_names() -> None:
    head = b"POST /v2/x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Type:  application/json \r\nX-A: 1"
    method, target, version, headers = parse_head(head)
    assert (method, target, version) == ("POST", "/v2/x?y=1", "HTTP/1.1")
    assert headers == [("host", "a"), ("content-type", "application/json"), ("x-a", "1")]


def test_bare_lf_line_endings_and_leading_blank_lines_are_accepted() -> None:
    assert parse_head(b"\r\nGET / HTTP/1.0\nHost: a")[:3] == ("GET", "/", "HTTP/1.0")


@pytest.mark.parametrize(
    "head",
    [
        b"GET /",
        b"GET  / HTTP/1.1",
        b"G(T / HTTP/1.1",
        b"GET / HTTX/1.1",
        b"GET /\x01 HTTP/1.1",
        b"GET / HTTP/1.1\r\nno colon",
        b"GET / HTTP/1.1\r\nBad Name: x",
        b"GET / HTTP/1.1\r\nA: b\r\n folded",
        b"GET / HTTP/1.1\r\nA: b\x00c",
        b"",
    ],
)
def test_malformed_heads_are_400(head: bytes) -> None:
    with pytest.raises(HttpError) as info:
        parse_head(head)
    assert info.value.status == 400


def test_other_http_versions_are_505() -> None:
    with pytest.raises(HttpError) as info:
        parse_head(b"GET / HTTP/2.0")
    assert info.value.status == 505


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], 0),
        ([("content-length", "12")], 12),
        ([("content-length", "12"), ("content-length", "12")], 12),
        ([("transfer-encoding", "chunked")], None),
    ],
)
def test_body_length(headers: list[tuple[str, str]], expected: int | None) -> None:
    assert body_length(headers) == expected


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("content-length", "1"), ("content-length", "2")], 400),
        ([("content-length", "-1")], 400),
        ([("content-length", "1e3")], 400),
        ([("content-length", "٣")], 400),
        ([("transfer-encoding", "chunked"), ("content-length", "3")], 400),
        ([("transfer-encoding", "gzip, chunked")], 501),
    ],
)
def test_bad_body_framing(headers: list[tuple[str, str]], status: int) -> None:
    with pytest.raises(HttpError) as info:
        body_length(headers)
    assert info.value.status == status


@pytest.mark.parametrize(
    ("version", "connection", "keep"),
    [
        ("HTTP/1.1", None, True),
        ("HTTP/1.1", "close", False),
        ("HTTP/1.1", "Keep-Alive, Close", False),
        ("HTTP/1.0", None, False),
        ("HTTP/1.0", "keep-alive", True),
    ],
)
def test_keep_alive_rules(version: str, connection: str | None, keep: bool) -> None:
    headers = [("connection", connection)] if connection else []
    assert Request("GET", "/", version, headers).keep_alive is keep


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("abc", True),
        ("backend-pool", True),
        ("a" * 60, True),
        ("ab", False),
        ("a" * 61, False),
        ("-abc", False),
        ("has space", False),
        ("abc\n", False),
        ("pöol", False),
    ],
)
def test_pool_names(name: str, ok: bool) -> None:
    assert (name_problem(name) is None) is ok


def test_connection_uri_percent_encodes_and_brackets_ipv6() -> None:
    info = connection_info("my.pool", "::1", 6432, "us er", "p@ss/:w")
    assert info["uri"] == "postgresql://us%20er:p%40ss%2F%3Aw@[::1]:6432/my.pool?sslmode=disable"
    assert (info["user"], info["password"], info["ssl"]) == ("us er", "p@ss/:w", False)


def test_connection_without_user_has_no_credentials() -> None:
    info = connection_info("pool", "127.0.0.1", 6432, "", None)
    assert info["uri"] == "postgresql://127.0.0.1:6432/pool?sslmode=disable"
    assert "user" not in info and "password" not in info


def test_every_operation_behind_the_token_documents_429_with_retry_after() -> None:
    for item in document()["paths"].values():
        for method, op in item.items():
            if method == "parameters" or op.get("security") == []:
                continue
            assert "retry-after" in op["responses"]["429"]["headers"]
