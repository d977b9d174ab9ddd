"""The throwaway test PostgreSQL lives in the package (pyproxy.testing) so the demo can use it."""

from pyproxy.testing.pgcluster import (
    APP_DB,
    DSN_ENV,
    LOGIN_KINDS,
    USERS,
    PgServer,
    find_server_bindir,
    hba_lines,
    run_sql,
    start_postgres,
)

__all__ = [
    "APP_DB",
    "DSN_ENV",
    "LOGIN_KINDS",
    "USERS",
    "PgServer",
    "find_server_bindir",
    "hba_lines",
    "run_sql",
    "start_postgres",
]
