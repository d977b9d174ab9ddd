"""Failed logins on the PostgreSQL listener are throttled per address and per user; a correct
login from an address that is not failing is never refused."""

from __future__ import annotations

import asyncio

from tests.integration.conftest import MakeProxy
from tests.support.proxy import MD5_PASSWORD, MD5_USER, SCRAM_USER, RunningProxy, pool_entry
from tests.support.wire import WireClient, error_fields


async def login_from(
    proxy: RunningProxy, address: str, user: str, password: str
) -> dict[str, str] | None:
    """Log in from ``address`` (any 127.0.0.0/8 address is this machine): None when logged in,
    else the fields of the ErrorResponse."""
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port, local_addr=(address, 0))
    client = WireClient(reader, writer)
    try:
        replies = await client.login(user, "testpool", password)
    finally:
        await client.close()
    last_kind, last_body = replies[-1]
    return None if last_kind == "Z" else error_fields(last_body)


async def make(make_proxy: MakeProxy, limit: int = 3) -> RunningProxy:
    return await make_proxy(
        [pool_entry(user="")],
        proxy={"auth_type": "md5", "auth_failure_limit": limit, "auth_failure_window": 60},
    )


async def test_an_address_that_keeps_failing_is_refused_and_others_are_not(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make(make_proxy)
    for _ in range(3):
        err = await login_from(proxy, "127.0.0.2", MD5_USER, "wrong")
        assert err is not None and err["C"] == "28P01"
    # Refused now, even with the right password.
    err = await login_from(proxy, "127.0.0.2", MD5_USER, MD5_PASSWORD)
    assert err is not None
    assert (err["S"], err["C"]) == ("FATAL", "28000")
    assert "too many failed login attempts" in err["M"]
    assert "try again in" in err["H"]
    # Another address logs in as the same user at once.
    assert await login_from(proxy, "127.0.0.3", MD5_USER, MD5_PASSWORD) is None


async def test_a_user_under_attack_still_logs_in_from_a_clean_address(
    make_proxy: MakeProxy,
) -> None:
    proxy = await make(make_proxy)
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        err = await login_from(proxy, address, MD5_USER, "guess")
        assert err is not None and err["C"] == "28P01"
    # The user has had 3 failures: addresses that failed are refused for it ...
    err = await login_from(proxy, "127.0.0.2", MD5_USER, MD5_PASSWORD)
    assert err is not None and err["C"] == "28000"
    # ... an address that never failed is not, and another user from a failed address is not.
    assert await login_from(proxy, "127.0.0.5", MD5_USER, MD5_PASSWORD) is None
    err = await login_from(proxy, "127.0.0.3", SCRAM_USER, "whatever")
    assert err is not None and err["C"] == "28P01"  # a wrong password, not a refusal


async def test_a_correct_login_forgets_that_addresses_failures(make_proxy: MakeProxy) -> None:
    proxy = await make(make_proxy)
    for _ in range(5):  # typos, each followed by the right password
        err = await login_from(proxy, "127.0.0.6", MD5_USER, "typo")
        assert err is not None and err["C"] == "28P01"
        assert await login_from(proxy, "127.0.0.6", MD5_USER, MD5_PASSWORD) is None


async def test_limit_zero_turns_the_throttle_off(make_proxy: MakeProxy) -> None:
    proxy = await make(make_proxy, limit=0)
    for _ in range(6):
        err = await login_from(proxy, "127.0.0.7", MD5_USER, "wrong")
        assert err is not None and err["C"] == "28P01"
    assert await login_from(proxy, "127.0.0.7", MD5_USER, MD5_PASSWORD) is None
