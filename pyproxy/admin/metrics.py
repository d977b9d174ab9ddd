"""Prometheus text exposition of pool, queue and server figures (served at GET /metrics)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def _labels(**labels: str) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}" if inner else ""


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.samples: list[str] = []

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append(f"{self.name}{suffix}{_labels(**labels)} {value:g}")

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self.samples


def render(manager: Any, clients: int) -> str:
    """All metrics as Prometheus text (version 0.0.4)."""
    fam = {
        "clients": _Family("pyproxy_client_connections", "gauge", "Client connections open."),
        "pool_clients": _Family(
            "pyproxy_pool_clients",
            "gauge",
            "Clients of a pool by state (active = holding a server).",
        ),
        "servers": _Family(
            "pyproxy_pool_servers", "gauge", "Server connections of a pool by state."
        ),
        "size": _Family("pyproxy_pool_size", "gauge", "Configured pool size."),
        "xact": _Family(
            "pyproxy_pool_transactions_total",
            "counter",
            "Server assignments ended (transactions in transaction mode).",
        ),
        "waits": _Family(
            "pyproxy_pool_wait_seconds",
            "histogram",
            "Time clients waited in the queue for a server.",
        ),
        "unsafe": _Family(
            "pyproxy_pool_session_state_total",
            "counter",
            "Statements that break under transaction pooling, by outcome.",
        ),
        "budget": _Family(
            "pyproxy_cluster_connection_budget",
            "gauge",
            "Server connections all pools of a cluster may share.",
        ),
        "in_use": _Family(
            "pyproxy_cluster_server_connections", "gauge", "Server connections open to a cluster."
        ),
    }
    fam["clients"].add(clients)
    for cluster in manager.clusters():
        fam["budget"].add(cluster.budget, cluster=cluster.id)
        fam["in_use"].add(manager.servers_in_use(cluster.id), cluster=cluster.id)
        for cfg in manager.pool_configs(cluster.id):
            name = cfg.name
            snap = manager.pool_stats(name)
            counters = manager.pool_counters(name)
            fam["size"].add(cfg.size, pool=name, mode=cfg.mode)
            fam["pool_clients"].add(snap.get("cl_active", 0), pool=name, state="active")
            fam["pool_clients"].add(snap.get("cl_waiting", 0), pool=name, state="waiting")
            idle_clients = snap.get("cl_total", 0) - snap.get("cl_active", 0)
            fam["pool_clients"].add(
                max(idle_clients - snap.get("cl_waiting", 0), 0), pool=name, state="idle"
            )
            for state in ("active", "idle", "login", "being_canceled"):
                fam["servers"].add(snap.get(f"sv_{state}", 0), pool=name, state=state)
            fam["xact"].add(counters.get("xact_count", 0), "", pool=name)
            fam["unsafe"].add(
                counters.get("session_state_warnings", 0), pool=name, outcome="warned"
            )
            fam["unsafe"].add(counters.get("session_state_errors", 0), pool=name, outcome="refused")
            _histogram(fam["waits"], manager.wait_histogram(name), pool=name)
    lines: list[str] = []
    for family in fam.values():
        lines.extend(family.render())
    return "\n".join(lines) + "\n"


def _histogram(family: _Family, hist: tuple[list[float], list[int], float], **labels: str) -> None:
    bounds, counts, total = hist
    running = 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        family.add(running, "_bucket", **labels, le=f"{bound:g}")
    running += counts[-1] if len(counts) > len(bounds) else 0
    family.add(running, "_bucket", **labels, le="+Inf")
    family.add(total, "_sum", **labels)
    family.add(running, "_count", **labels)
