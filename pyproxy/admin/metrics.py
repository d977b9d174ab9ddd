"""Prometheus text exposition (GET /metrics): the figures are collected into plain data first
(``collect``), which several processes can add up (``merge``), then rendered (``render``).

``collect`` reads the pools of this process; its result holds only dicts, lists, strings and
numbers (JSON-safe), so a worker can send it to whoever answers the scrape. ``merge`` adds up
such figures from several processes serving the same pools: counters, histograms and gauges
of clients, servers and process resources are summed, the configuration (pool sizes and modes,
cluster budgets) is taken once. ``render`` is a pure function of the figures.
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from pyproxy.admin.poolstats import StatsSource
from pyproxy.config import ClusterConfig
from pyproxy.pool.figures import BOUNDS, BUCKETS, Figures
from pyproxy.pool.pool import Pool

Figs = dict[str, Any]


class MetricsSource(StatsSource, Protocol):
    """What the figures are read from (the pool registry)."""

    def clusters(self) -> tuple[ClusterConfig, ...]: ...


CLIENT_STATES = ("active", "waiting", "idle")
SERVER_STATES = ("active", "idle", "login", "being_canceled")


# ---- collecting ----------------------------------------------------------------------------


def collect(source: MetricsSource, clients: int, per_transaction: bool = True) -> Figs:
    """This process's figures. ``per_transaction``: [proxy] metrics (the transaction and query
    histograms and the byte counters are kept)."""
    clusters = []
    pools = []
    for cluster in source.clusters():
        clusters.append(
            {
                "id": cluster.id,
                "budget": cluster.budget,
                "server_connections": source.servers_in_use(cluster.id),
            }
        )
        for cfg in source.pool_configs(cluster.id):
            live = source.live_pools(cfg.name)
            pool = _pool(source.pool_stats(cfg.name), live, per_transaction)
            pool |= {
                "name": cfg.name,
                "cluster": cluster.id,
                "mode": cfg.mode,
                "size": cfg.size,
                "paused": int(source.is_paused(cfg.name)),
            }
            pools.append(pool)
    return {
        "bounds": list(BOUNDS),
        "per_transaction": per_transaction,
        "clients": clients,
        "process": process_figures(),
        "clusters": clusters,
        "pools": pools,
    }


def _pool(snap: dict[str, int], live: list[Pool], per_transaction: bool) -> Figs:
    figs = [p.figures for p in live]
    active, waiting, total = snap["cl_active"], snap["cl_waiting"], snap["cl_total"]
    out: Figs = {
        "clients": {"active": active, "waiting": waiting, "idle": max(0, total - active - waiting)},
        "servers": {s: snap[f"sv_{s}"] for s in SERVER_STATES},
        "pinned_clients": snap.get("cl_pinned", 0),
        "wait": _hist((p.wait_counts, p.wait_time) for p in live),
        "connect": _hist((f.connect, f.connect_sum) for f in figs),
        "connect_failures": sum(f.connect_failures for f in figs),
        "errors": _summed(f.errors for f in figs),
        "cancels": _summed({(k,): v for k, v in f.cancels.items()} for f in figs),
        "session_state": {
            "warned": sum(p.stats["session_state_warnings"] for p in live),
            "refused": sum(p.stats["session_state_errors"] for p in live),
            "pinned": sum(p.pinned.total for p in live),
        },
    }
    if per_transaction:
        out["transaction"] = _hist(_with_one(figs, "xact"))
        out["query"] = _hist(_with_one(figs, "query"))
        out["received_bytes"] = sum(f.received for f in figs)
        out["sent_bytes"] = sum(f.sent for f in figs)
    return out


def _with_one(figs: list[Figures], name: str) -> Iterator[tuple[list[int], float]]:
    """A histogram of ``figs`` plus the one-query transactions, which count in both."""
    for f in figs:
        yield f.one, f.one_sum
        yield getattr(f, name), getattr(f, f"{name}_sum")


def _hist(parts: Iterable[tuple[list[int], float]]) -> Figs:
    counts = [0] * BUCKETS
    total = 0.0
    for part, seconds in parts:
        for i, c in enumerate(part):
            counts[i] += c
        total += seconds
    return {"counts": counts, "sum": total}


def _summed(maps: Iterable[dict[tuple[str, ...], int]]) -> list[list[Any]]:
    """Keyed counters added up, as sorted [*key, value] lists (JSON has no tuple keys)."""
    out: dict[tuple[str, ...], int] = {}
    for one in maps:
        for key, value in one.items():
            out[key] = out.get(key, 0) + value
    return [[*key, value] for key, value in sorted(out.items())]


def process_figures() -> Figs:
    """Resident memory, open and allowed file descriptors, CPU time and start time of this
    process, as far as the system tells (Linux: /proc)."""
    times = os.times()
    out: Figs = {"cpu_seconds": times.user + times.system}
    try:
        with open("/proc/self/statm", "rb") as f:
            out["resident_memory_bytes"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        out["open_fds"] = len(os.listdir("/proc/self/fd"))
        with open("/proc/self/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        out["start_time_seconds"] = boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY:
        out["max_fds"] = soft
    return out


# ---- adding up processes --------------------------------------------------------------------

_ONCE = frozenset(("name", "cluster", "mode", "size", "id", "budget"))


def merge(parts: list[Figs]) -> Figs:
    """The figures of several processes serving the same pools, as one: numbers, histograms
    and keyed counters are summed by pool (by cluster for cluster figures), the configuration
    is taken from the first process that has the pool, ``paused`` is 1 if any process is
    paused, the earliest start time wins."""
    if not parts:
        raise ValueError("nothing to merge")
    out: Figs = {
        "bounds": parts[0]["bounds"],
        "per_transaction": all(p["per_transaction"] for p in parts),
        "clients": sum(p["clients"] for p in parts),
        "process": _add([p["process"] for p in parts]),
        "clusters": _by_key([p["clusters"] for p in parts], "id"),
        "pools": _by_key([p["pools"] for p in parts], "name"),
    }
    starts = [p["process"].get("start_time_seconds") for p in parts]
    starts = [s for s in starts if s is not None]
    if starts:
        out["process"]["start_time_seconds"] = min(starts)
    for pool in out["pools"]:
        pool["paused"] = min(pool["paused"], 1)
    return out


def _by_key(lists: list[list[Figs]], key: str) -> list[Figs]:
    found: dict[str, list[Figs]] = {}
    for items in lists:
        for item in items:
            found.setdefault(item[key], []).append(item)
    return [_add(group) for group in found.values()]


def _add(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(k for v in values for k in v)
        return {
            k: next(v[k] for v in values if k in v)
            if k in _ONCE
            else _add([v[k] for v in values if k in v])
            for k in keys
        }
    if isinstance(first, list):
        found = [v for v in values if v]
        if not found:
            return []
        if isinstance(found[0][0], list):  # keyed counters: [*key, value]
            summed: dict[tuple[Any, ...], Any] = {}
            for rows in found:
                for *key, value in rows:
                    summed[tuple(key)] = summed.get(tuple(key), 0) + value
            return [[*key, value] for key, value in sorted(summed.items())]
        return [sum(column) for column in zip(*found, strict=True)]  # histogram buckets
    return sum(values)


# ---- rendering ------------------------------------------------------------------------------


def _value(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.samples: list[str] = []

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append(f"{self.name}{suffix}{_labels(labels)} {_value(value)}")

    def histogram(self, bounds: list[float], hist: Figs, **labels: str) -> None:
        running = 0
        for bound, count in zip(bounds, hist["counts"], strict=False):
            running += count
            self.add(running, "_bucket", **labels, le=repr(float(bound)))
        running += hist["counts"][-1]
        self.add(running, "_bucket", **labels, le="+Inf")
        self.add(hist["sum"], "_sum", **labels)
        self.add(running, "_count", **labels)

    def render(self) -> Iterator[str]:
        if not self.samples:
            return
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self.samples


# (key, metric name, type, help); the order is the order of the exposition.
FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    ("clients", "pyproxy_client_connections", "gauge", "Client connections open."),
    ("pool_clients", "pyproxy_pool_clients", "gauge",
     "Clients of a pool by state: active (in a transaction, or holding a server in session "
     "mode), waiting (queued for a server), idle."),
    ("servers", "pyproxy_pool_servers", "gauge", "Server connections of a pool by state."),
    ("pinned", "pyproxy_pool_pinned_clients", "gauge",
     "Clients pinned to their server by session state they set."),
    ("size", "pyproxy_pool_size", "gauge", "Configured pool size."),
    ("paused", "pyproxy_pool_paused", "gauge", "1 while the pool is paused."),
    ("xacts", "pyproxy_pool_transactions_total", "counter",
     "Transactions the pool's clients ran (each statement outside a transaction block is one)."),
    ("queries", "pyproxy_pool_queries_total", "counter",
     "Queries the pool's clients ran: requests answered with a ReadyForQuery."),
    ("xact_time", "pyproxy_pool_transaction_duration_seconds", "histogram",
     "Transaction duration: from its first request sent to the server to its last "
     "ReadyForQuery."),
    ("query_time", "pyproxy_pool_query_duration_seconds", "histogram",
     "Query duration: from the request sent to the server to its ReadyForQuery."),
    ("waits", "pyproxy_pool_wait_seconds", "histogram",
     "Time clients waited in the queue for a server."),
    ("connect", "pyproxy_pool_server_connect_duration_seconds", "histogram",
     "Time to open and log in a server connection."),
    ("connect_failures", "pyproxy_pool_server_connect_failures_total", "counter",
     "Server connections that could not be opened or logged in."),
    ("received", "pyproxy_pool_received_bytes_total", "counter",
     "Bytes received from the pool's clients after login."),
    ("sent", "pyproxy_pool_sent_bytes_total", "counter",
     "Bytes of server replies relayed to the pool's clients."),
    ("errors", "pyproxy_pool_errors_total", "counter",
     "ErrorResponses the pool's clients received, by SQLSTATE class and origin (server: "
     "relayed from PostgreSQL; pyproxy: the pooler's own)."),
    ("cancels", "pyproxy_pool_cancel_requests_total", "counter",
     "Cancel requests by outcome: forwarded to the server, dequeued (the client was waiting), "
     "ignored (nothing running), abandoned (pyproxy cancelled a query whose client left)."),
    ("unsafe", "pyproxy_pool_session_state_total", "counter",
     "Statements that break under transaction pooling, by outcome (warned, refused, pinned)."),
    ("budget", "pyproxy_cluster_connection_budget", "gauge",
     "Server connections all pools of a cluster may share."),
    ("in_use", "pyproxy_cluster_server_connections", "gauge",
     "Server connections open to a cluster."),
    ("rss", "process_resident_memory_bytes", "gauge", "Resident memory size in bytes."),
    ("fds", "process_open_fds", "gauge", "Open file descriptors."),
    ("max_fds", "process_max_fds", "gauge", "Maximum number of open file descriptors."),
    ("cpu", "process_cpu_seconds_total", "counter", "User and system CPU time in seconds."),
    ("start", "process_start_time_seconds", "gauge",
     "Start time of the process since the Unix epoch in seconds."),
)  # fmt: skip
_PROCESS = {
    "rss": "resident_memory_bytes",
    "fds": "open_fds",
    "max_fds": "max_fds",
    "cpu": "cpu_seconds",
    "start": "start_time_seconds",
}


def render(figs: Figs) -> str:
    """Prometheus text format 0.0.4 of ``figs`` (from ``collect`` or ``merge``)."""
    fam = {key: _Family(name, kind, text) for key, name, kind, text in FAMILIES}
    bounds = figs["bounds"]
    fam["clients"].add(figs["clients"])
    for cluster in figs["clusters"]:
        fam["budget"].add(cluster["budget"], cluster=cluster["id"])
        fam["in_use"].add(cluster["server_connections"], cluster=cluster["id"])
    for pool in figs["pools"]:
        name = pool["name"]
        fam["size"].add(pool["size"], pool=name, mode=pool["mode"])
        fam["paused"].add(pool["paused"], pool=name)
        for state in CLIENT_STATES:
            fam["pool_clients"].add(pool["clients"][state], pool=name, state=state)
        for state in SERVER_STATES:
            fam["servers"].add(pool["servers"][state], pool=name, state=state)
        fam["pinned"].add(pool["pinned_clients"], pool=name)
        if "transaction" in pool:
            fam["xacts"].add(sum(pool["transaction"]["counts"]), pool=name)
            fam["queries"].add(sum(pool["query"]["counts"]), pool=name)
            fam["xact_time"].histogram(bounds, pool["transaction"], pool=name)
            fam["query_time"].histogram(bounds, pool["query"], pool=name)
            fam["received"].add(pool["received_bytes"], pool=name)
            fam["sent"].add(pool["sent_bytes"], pool=name)
        fam["waits"].histogram(bounds, pool["wait"], pool=name)
        fam["connect"].histogram(bounds, pool["connect"], pool=name)
        fam["connect_failures"].add(pool["connect_failures"], pool=name)
        for origin, sqlstate_class, count in pool["errors"]:
            fam["errors"].add(count, pool=name, sqlstate_class=sqlstate_class, origin=origin)
        for outcome, count in pool["cancels"]:
            fam["cancels"].add(count, pool=name, outcome=outcome)
        for outcome, count in pool["session_state"].items():
            fam["unsafe"].add(count, pool=name, outcome=outcome)
    for key, field in _PROCESS.items():
        if field in figs["process"]:
            fam[key].add(figs["process"][field])
    lines: list[str] = []
    for family in fam.values():
        lines.extend(family.render())
    return "\n".join(lines) + "\n"
