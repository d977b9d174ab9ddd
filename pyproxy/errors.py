"""Pooler errors that carry a PostgreSQL SQLSTATE and are rendered once, at the client edge."""

from __future__ import annotations

# SQLSTATE codes used by pyproxy (from PostgreSQL's errcodes.txt).
PROTOCOL_VIOLATION = "08P01"
CONNECTION_FAILURE = "08006"
CONNECTION_EXCEPTION = "08000"
SQLCLIENT_UNABLE_TO_ESTABLISH = "08001"
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"
INVALID_CATALOG_NAME = "3D000"
INSUFFICIENT_PRIVILEGE = "42501"
SYNTAX_ERROR = "42601"
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"
TOO_MANY_CONNECTIONS = "53300"
ADMIN_SHUTDOWN = "57P01"
CANNOT_CONNECT_NOW = "57P03"
QUERY_CANCELED = "57014"
FEATURE_NOT_SUPPORTED = "0A000"
ACTIVE_SQL_TRANSACTION = "25001"
IN_FAILED_SQL_TRANSACTION = "25P02"
IDLE_IN_TRANSACTION_TIMEOUT = "25P03"
IDLE_SESSION_TIMEOUT = "57P05"
TRANSACTION_TIMEOUT = "25P04"
INVALID_PARAMETER_VALUE = "22023"
PROGRAM_LIMIT_EXCEEDED = "54000"
INTERNAL_ERROR = "XX000"
DUPLICATE_PREPARED_STATEMENT = "42P05"
INVALID_SQL_STATEMENT_NAME = "26000"
CONFIG_FILE_ERROR = "F0000"
WARNING = "01000"

# A client that waited longer than query_wait_timeout for a server gets cannot_connect_now:
# the query never ran, and drivers and frameworks treat 57P03 as safe to retry.
QUERY_WAIT_TIMEOUT = CANNOT_CONNECT_NOW


class PgError(Exception):
    """An error to send to a client as an ErrorResponse.

    ``fatal=True`` means the connection is closed after the error is sent.
    """

    def __init__(
        self,
        sqlstate: str,
        message: str,
        *,
        fatal: bool = False,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.fatal = fatal
        self.detail = detail
        self.hint = hint

    @property
    def severity(self) -> str:
        return "FATAL" if self.fatal else "ERROR"

    def __repr__(self) -> str:
        return f"PgError({self.severity} {self.sqlstate}: {self.message})"


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and says what to fix."""


class ProtocolError(PgError):
    """The peer broke the wire protocol; always fatal."""

    def __init__(self, message: str) -> None:
        super().__init__(PROTOCOL_VIOLATION, message, fatal=True)
