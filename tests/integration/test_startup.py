"""Startup on raw sockets: protocol versions, encryption requests, size limits, welcome."""

from __future__ import annotations

import struct

import pytest

from tests.integration.conftest import MakeProxy
from tests.support.proxy import SCRAM_USER, RunningProxy, pool_entry
from tests.support.wire import (
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    WireClient,
    error_fields,
    packet,
    parameter_status,
    query,
    startup_message,
)

TRUST = {"auth_type": "trust"}


async def works(proxy: RunningProxy) -> bool:
    conn = await proxy.asyncpg()
    try:
        return await conn.fetchval("SELECT 41 + 1") == 42
    finally:
        await conn.close()


async def test_protocol_2_is_refused_with_a_fatal(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(proxy=TRUST)
    client = await WireClient.open(proxy.host, proxy.port)
    try:
        await client.send(startup_message({"user": SCRAM_USER, "database": "testpool"}, major=2))
        msg = await client.read_message()
        assert msg is not None and msg[0] == "E"
        fields = error_fields(msg[1])
        assert fields["S"] == "FATAL"
        assert fields["C"] == "08P01"
        assert "2.0" in fields["M"]
        assert await client.at_eof()
    finally:
        await client.close()


@pytest.mark.parametrize(
    "code", [SSL_REQUEST_CODE, GSSENC_REQUEST_CODE], ids=["SSLRequest", "GSSENCRequest"]
)
async def test_encryption_request_is_answered_n_and_login_continues(
    make_proxy: MakeProxy, code: int
) -> None:
    proxy = await make_proxy(proxy=TRUST)
    client = await WireClient.open(proxy.host, proxy.port)
    try:
        await client.send(packet(code))
        assert await client.read_byte() == b"N"
        messages = await client.login(SCRAM_USER, "testpool")
        assert messages[-1] == ("Z", b"I")
        reply = await client.simple_query("SELECT 7")
        assert [k for k, _ in reply] == ["T", "D", "C", "Z"]
    finally:
        await client.close()


async def test_oversized_startup_packet_is_refused_and_others_unaffected(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make_proxy(proxy=TRUST)
    bystander = await proxy.asyncpg()
    client = await WireClient.open(proxy.host, proxy.port)
    try:
        big = {"user": SCRAM_USER, "database": "testpool", "application_name": "x" * 10_050}
        data = startup_message(big)
        assert len(data) > 10_000
        await client.send(data[:5000])  # the declared length alone must be enough to refuse
        msg = await client.read_message()
        assert msg is not None and msg[0] == "E"
        fields = error_fields(msg[1])
        assert fields["S"] == "FATAL"
        assert "startup packet" in fields["M"]
        assert await client.at_eof()
        assert await bystander.fetchval("SELECT 1") == 1
        assert await works(proxy)
    finally:
        await client.close()
        await bystander.close()


async def test_message_over_max_packet_size_is_refused(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy([pool_entry(size=1)], proxy={**TRUST, "max_packet_size": 4096})
    client = await WireClient.open(proxy.host, proxy.port)
    try:
        assert (await client.login(SCRAM_USER, "testpool"))[-1] == ("Z", b"I")
        big = query("SELECT '" + "x" * 10_000 + "'")
        await client.send(big[:2048])
        msg = await client.read_message()
        assert msg is not None and msg[0] == "E"
        fields = error_fields(msg[1])
        assert fields["S"] == "FATAL"
        assert fields["C"] == "54000"
        assert "max_packet_size" in fields["M"]
        assert await client.at_eof()
    finally:
        await client.close()
    # The pool's only server was not left holding a half-sent message.
    assert await works(proxy)


async def test_message_under_max_packet_size_passes(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(proxy={"max_packet_size": 4096})
    conn = await proxy.asyncpg()
    try:
        assert await conn.fetchval("SELECT length($1::text)", "y" * 3000) == 3000
    finally:
        await conn.close()


async def test_login_sends_auth_ok_parameters_key_and_ready(make_proxy: MakeProxy) -> None:
    proxy = await make_proxy(proxy=TRUST)
    client = await WireClient.open(proxy.host, proxy.port)
    try:
        messages = await client.login(SCRAM_USER, "testpool", client_encoding="UTF8")
    finally:
        await client.close()
    kinds = "".join(k for k, _ in messages)
    assert kinds[0] == "R" and struct.unpack("!I", messages[0][1])[0] == 0  # AuthenticationOk
    assert kinds[-2:] == "KZ" and messages[-1][1] == b"I"
    assert set(kinds[1:-2]) == {"S"}
    params = dict(parameter_status(body) for k, body in messages if k == "S")
    for name in (
        "server_version",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "standard_conforming_strings",
        "integer_datetimes",
        "server_encoding",
    ):
        assert name in params, name
    assert params["client_encoding"] == "UTF8"
    assert params["server_version"].startswith(("15", "16", "17", "14", "13"))
    assert len(messages[-2][1]) == 8  # BackendKeyData: process id and secret key


async def test_each_login_is_greeted_with_its_own_parameters(make_proxy: MakeProxy) -> None:
    # Greetings are built once per set of startup parameters and reused: a client must still
    # get its own values, never those of the client before it, and its own cancel key.
    proxy = await make_proxy(proxy=TRUST)
    logins = [("Asia/Tokyo", "first"), ("Etc/UTC", "second"), ("Asia/Tokyo", "first")]
    keys = []
    for timezone, app in [*logins, ("Etc/UTC", "third")]:
        client = await WireClient.open(proxy.host, proxy.port)
        try:
            messages = await client.login(
                SCRAM_USER, "testpool", TimeZone=timezone, application_name=app
            )
            params = dict(parameter_status(body) for k, body in messages if k == "S")
            assert (params["TimeZone"], params["application_name"]) == (timezone, app)
            keys.append(messages[-2][1])
            reply = await client.simple_query("SHOW TimeZone")
            rows = [body for k, body in reply if k == "D"]
            assert rows and timezone.encode() in rows[0]
        finally:
            await client.close()
    assert len(set(keys)) == len(keys)
