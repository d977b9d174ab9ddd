"""Run a raw extended-protocol scenario directly against PostgreSQL and through pyproxy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tests.support.extended import ExtendedClient, Reply
from tests.support.pgcluster import APP_DB, USERS, PgServer
from tests.support.proxy import RunningProxy

TRUST_USER = USERS["trust"][0]
Opener = Callable[[], Awaitable[ExtendedClient]]
Scenario = Callable[[Opener], Awaitable[list[list[Reply]]]]


def opener(host: str, port: int, database: str) -> Opener:
    """Opens a raw client logged in as the trust user (the proxy must use trust auth too)."""

    async def open_client() -> ExtendedClient:
        return await ExtendedClient.connect(host, port, TRUST_USER, database)

    return open_client


async def both(pg: PgServer, proxy: RunningProxy, scenario: Scenario) -> list[list[Reply]]:
    """Run ``scenario`` directly against PostgreSQL and through pyproxy; they must agree."""
    direct = await scenario(opener(pg.host, pg.port, APP_DB))
    proxied = await scenario(opener(proxy.host, proxy.port, "testpool"))
    assert proxied == direct
    return proxied
