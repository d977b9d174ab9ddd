"""Column lists of the SHOW commands, names, order and types as PgBouncer 1.25 sends them.

Types use PgBouncer's letters (``src/pktbuf.c``): s=text, i=int4, q=int8, N=numeric,
T=timestamp rendered as text. pyproxy-only facts would go after PgBouncer's columns.
"""

from __future__ import annotations

from pyproxy.proto import messages as m

# PostgreSQL type OIDs (pg_type.dat) of the letters.
_OIDS = {"s": 25, "i": 23, "q": 20, "N": 1700, "T": 25}


class Columns:
    """A result set's shape: names and PgBouncer type letters, and its RowDescription."""

    def __init__(self, names: str, types: str) -> None:
        self.names = tuple(names.replace(",", " ").split())
        self.types = types
        if len(self.names) != len(types):
            raise ValueError(f"{len(self.names)} names but {len(types)} types: {names}")
        self.description = m.row_description(
            [(n, _OIDS[t]) for n, t in zip(self.names, types, strict=True)]
        )


_SOCKET = (
    "type, user, database, replication, state, addr, port, local_addr, local_port, "
    "connect_time, request_time, wait, wait_us, close_needed, ptr, link, remote_pid, tls, "
    "application_name, prepared_statements, id"
)
_SOCKET_TYPES = "ssssssisiTTiiississii"
_STATS_FIELDS = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "received",
    "sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
]

POOLS = Columns(
    "database, user, cl_active, cl_waiting, cl_active_cancel_req, cl_waiting_cancel_req, "
    "sv_active, sv_active_cancel, sv_being_canceled, sv_idle, sv_used, sv_tested, sv_login, "
    "maxwait, maxwait_us, pool_mode, load_balance_hosts",
    "ssiiiiiiiiiiiiiss",
)
CLIENTS = Columns(_SOCKET, _SOCKET_TYPES)
SERVERS = CLIENTS
SOCKETS = Columns(
    _SOCKET + ", recv_pos, pkt_pos, pkt_remain, send_pos, send_remain, pkt_avail, send_avail",
    _SOCKET_TYPES + "iiiiiii",
)
STATS = Columns(
    "database, total_server_assignment_count, total_xact_count, total_query_count, "
    "total_received, total_sent, total_xact_time, total_query_time, total_wait_time, "
    "total_client_parse_count, total_server_parse_count, total_bind_count, "
    "avg_server_assignment_count, avg_xact_count, avg_query_count, avg_recv, avg_sent, "
    "avg_xact_time, avg_query_time, avg_wait_time, avg_client_parse_count, "
    "avg_server_parse_count, avg_bind_count",
    "s" + "N" * 22,
)
STATS_TOTALS = Columns(
    "database, server_assignment_count, xact_count, query_count, bytes_received, bytes_sent, "
    "xact_time, query_time, wait_time, client_parse_count, server_parse_count, bind_count",
    "s" + "N" * 11,
)
STATS_AVERAGES = Columns(
    "database, server_assignment_count, xact_count, query_count, bytes_received, bytes_sent, "
    "xact_time, query_time, wait_time, avg_client_parse_count, avg_server_parse_count, "
    "avg_bind_count",
    "s" + "N" * 11,
)
DATABASES = Columns(
    "name, host, port, database, force_user, pool_size, min_pool_size, reserve_pool_size, "
    "server_lifetime, pool_mode, load_balance_hosts, max_connections, current_connections, "
    "max_client_connections, current_client_connections, paused, disabled",
    "ssissiiiissiiiiii",
)
USERS = Columns(
    "name, pool_size, reserve_pool_size, pool_mode, max_user_connections, current_connections, "
    "max_user_client_connections, current_client_connections",
    "ssssiiii",
)
LISTS = Columns("list, items", "si")
CONFIG = Columns("key, value, default, changeable", "ssss")
VERSION = Columns("version", "s")

# The counters behind SHOW STATS, in its column order (totals, then averages).
STATS_FIELDS = tuple(_STATS_FIELDS)
