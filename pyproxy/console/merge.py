"""SHOW over worker processes: each worker's rows, and the rows of all of them together.

Counts are added up, ``maxwait`` is the longest over the workers, a pool's settings are the
same on every worker, average times are weighed by what they average over (transactions,
queries, waits of the last period on each worker), and CLIENTS/SERVERS rows of every worker
are listed (connection ids carry the worker, so they stay unique)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyproxy.console import columns as K
from pyproxy.console import show as V

Row = V.Row
TABLES: dict[str, Callable[[V.View], tuple[Any, list[Row]]]] = {
    "POOLS": V.show_pools,
    "STATS": V.show_stats,
    "STATS_TOTALS": V.show_stats_totals,
    "STATS_AVERAGES": V.show_stats_averages,
    "CLIENTS": V.show_clients,
    "SERVERS": V.show_servers,
    "DATABASES": V.show_databases,
    "USERS": V.show_users,
    "LISTS": V.show_lists,
}
COLUMNS: dict[str, K.Columns] = {
    "POOLS": K.POOLS,
    "STATS": K.STATS,
    "STATS_TOTALS": K.STATS_TOTALS,
    "STATS_AVERAGES": K.STATS_AVERAGES,
    "CLIENTS": K.CLIENTS,
    "SERVERS": K.SERVERS,
    "DATABASES": K.DATABASES,
    "USERS": K.USERS,
    "LISTS": K.LISTS,
    "SOCKETS": K.SOCKETS,
}
# Per column: k = part of the key, = the same on every worker, + added up, M the largest,
# W maxwait (seconds and microseconds, the longest pair), A an average (weighed).
_AVERAGES = "+++++AAA+++"
_SPECS = {
    "POOLS": "kk" + "+" * 11 + "WW==",
    "STATS_TOTALS": "k" + "+" * 11,
    "STATS": "k" + "+" * 11 + _AVERAGES,
    "STATS_AVERAGES": "k" + _AVERAGES,
    "DATABASES": "k" + "=" * 11 + "+=+MM",
    "USERS": "k====+=+",
}
_SAME_EVERYWHERE = frozenset({"databases", "users", "pools"})  # LISTS items not to add up


def local_rows(key: str, view: V.View, hidden: bool) -> list[Row]:
    """This process's rows of SHOW ``key``; with ``hidden``, the averages' weights (counts of
    the last period) follow each STATS/STATS_AVERAGES row, for ``merge``."""
    if key == "SOCKETS":
        rows = V.show_clients(view)[1] + V.show_servers(view)[1]
        return [[*r, *["0"] * 7] for r in rows]
    rows = TABLES[key](view)[1]
    if hidden and key in ("STATS", "STATS_AVERAGES"):
        counts = view.periods.counts
        rows = [[*r, *(str(n) for n in counts.get(str(r[0]), (0, 0, 0)))] for r in rows]
    return rows


def merge(key: str, parts: list[list[Row]]) -> list[Row]:
    """The rows of SHOW ``key`` over every worker, from each worker's ``local_rows``."""
    if key in ("CLIENTS", "SOCKETS"):
        return sorted((r for rows in parts for r in rows), key=lambda r: int(r[20] or 0))
    if key == "SERVERS":
        every = (r for rows in parts for r in rows)
        return sorted(every, key=lambda r: (r[2] or "", r[1] or "", int(r[20] or 0)))
    if key == "LISTS":
        items: dict[str, int] = {}
        for rows in parts:
            for name, value in rows:
                n, was = int(value or 0), items.get(str(name), 0)
                items[str(name)] = max(was, n) if name in _SAME_EVERYWHERE else was + n
        return [[k, str(v)] for k, v in items.items()]
    spec = _SPECS[key]
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for rows in parts:
        for row in rows:
            groups.setdefault(tuple(row[i] for i, c in enumerate(spec) if c == "k"), []).append(row)
    merged = [_combine(spec, rows) for rows in groups.values()]
    return sorted(merged, key=lambda r: tuple(r[i] or "" for i, c in enumerate(spec) if c == "k"))


def _int(value: str | None) -> int:
    return int(value) if value else 0


def _combine(spec: str, rows: list[Row]) -> Row:
    out: Row = list(rows[0][: len(spec)])
    for i, c in enumerate(spec):
        if c == "+":
            out[i] = str(sum(_int(r[i]) for r in rows))
        elif c == "M":
            out[i] = str(max(_int(r[i]) for r in rows))
    if "W" in spec:
        i = spec.index("W")
        longest = max((_int(r[i]), _int(r[i + 1])) for r in rows)
        out[i], out[i + 1] = str(longest[0]), str(longest[1])
    if "A" in spec:
        # The three averaged times (transaction, query, wait), weighed by the hidden counts
        # after the row's columns.
        first = spec.index("A")
        for n in range(3):
            col, weight = first + n, len(spec) + n
            total = sum(_int(r[weight]) for r in rows if len(r) > weight)
            if total:
                weighed = sum(_int(r[col]) * _int(r[weight]) for r in rows if len(r) > weight)
                out[col] = str(weighed // total)
            else:
                out[col] = str(max(_int(r[col]) for r in rows))
    return out
