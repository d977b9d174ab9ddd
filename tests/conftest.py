"""Shared pytest fixtures: a throwaway PostgreSQL server for the whole test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pgcluster import APP_DB, PgServer, start_postgres


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """The test PostgreSQL (see tests/support/pgcluster.py), closed when the session ends."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def pg_dsn(pg: PgServer) -> str:
    """A superuser DSN for the `appdb` database of the test PostgreSQL."""
    return pg.dsn(pg.superuser, pg.superuser_password, APP_DB)
