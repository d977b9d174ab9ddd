"""The protocol's numbers, named as PostgreSQL's protocol documentation names them.

Message types are the int value of their type byte (``data[off]`` compares with them directly).
Frontend and backend types share letters ('D' is Describe from a client and DataRow from a
server), so each direction has its own names.
"""

from __future__ import annotations

# ---- frontend (client -> server) message types --------------------------------------------------
BIND = ord("B")
CLOSE = ord("C")
COPY_DATA = ord("d")
COPY_DONE = ord("c")
COPY_FAIL = ord("f")
DESCRIBE = ord("D")
EXECUTE = ord("E")
FLUSH = ord("H")
FUNCTION_CALL = ord("F")
PARSE = ord("P")
PASSWORD_MESSAGE = ord("p")  # also SASLInitialResponse and SASLResponse
QUERY = ord("Q")
SYNC = ord("S")
TERMINATE = ord("X")

# What a logged-in frontend may send (PasswordMessage only during login): the simple and the
# extended query protocol, the function call, COPY IN and the end.
COPY_IN_TYPES = frozenset((COPY_DATA, COPY_DONE, COPY_FAIL))  # what a client sends in COPY IN
FRONTEND_TYPES = COPY_IN_TYPES | {QUERY, PARSE, BIND, DESCRIBE, EXECUTE, CLOSE, SYNC, FLUSH}
FRONTEND_TYPES |= {FUNCTION_CALL, TERMINATE}

# ---- backend (server -> client) message types ---------------------------------------------------
AUTHENTICATION = ord("R")
BACKEND_KEY_DATA = ord("K")
BIND_COMPLETE = ord("2")
CLOSE_COMPLETE = ord("3")
COMMAND_COMPLETE = ord("C")
COPY_BOTH_RESPONSE = ord("W")
COPY_IN_RESPONSE = ord("G")
COPY_OUT_RESPONSE = ord("H")
DATA_ROW = ord("D")
EMPTY_QUERY_RESPONSE = ord("I")
ERROR_RESPONSE = ord("E")
FUNCTION_CALL_RESPONSE = ord("V")
NEGOTIATE_PROTOCOL_VERSION = ord("v")
NO_DATA = ord("n")
NOTICE_RESPONSE = ord("N")
NOTIFICATION_RESPONSE = ord("A")
PARAMETER_DESCRIPTION = ord("t")
PARAMETER_STATUS = ord("S")
PARSE_COMPLETE = ord("1")
PORTAL_SUSPENDED = ord("s")
READY_FOR_QUERY = ord("Z")
ROW_DESCRIPTION = ord("T")

# ---- ReadyForQuery transaction status -----------------------------------------------------------
IDLE = ord("I")
IN_TRANSACTION = ord("T")
IN_FAILED_TRANSACTION = ord("E")

# ---- what a Describe or Close names (its first body byte) --------------------------------------
STATEMENT = ord("S")
PORTAL = ord("P")

# ---- untyped startup packets (the int32 after the length) ---------------------------------------
PROTOCOL_3_0 = 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

# ---- Authentication request codes (the int32 after 'R') -----------------------------------------
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

# ---- answers to SSLRequest / GSSENCRequest ------------------------------------------------------
ENCRYPTION_ACCEPTED = b"S"
ENCRYPTION_REFUSED = b"N"

# ErrorResponse severities after which the server closes the connection.
FATAL_SEVERITIES = (b"FATAL", b"PANIC")
