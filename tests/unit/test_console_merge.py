"""SHOW over worker processes: each worker's rows added up into one result; commands sent to
every worker, KILL_CLIENT to the one in the id."""

from __future__ import annotations

from typing import Any

import pytest

from pyproxy.console import columns as K
from pyproxy.console.commands import Commands
from pyproxy.console.merge import merge
from pyproxy.errors import PgError


def pool_row(db: str, active: int, waiting: int, maxwait: tuple[int, int]) -> list[str | None]:
    counts = [active, waiting, 0, 0, active, 0, 0, 1, 0, 0, 0]
    return [db, "app", *map(str, counts), *map(str, maxwait), "transaction", None]


def test_pools_add_counts_and_keep_the_longest_wait() -> None:
    w0 = [pool_row("a", 2, 1, (0, 900_000)), pool_row("b", 1, 0, (0, 0))]
    w1 = [pool_row("a", 3, 2, (1, 5))]
    rows = merge("POOLS", [w0, w1])
    assert [r[0] for r in rows] == ["a", "b"]
    a = dict(zip(K.POOLS.names, rows[0], strict=True))
    assert (a["cl_active"], a["cl_waiting"], a["sv_active"], a["sv_idle"]) == ("5", "3", "5", "2")
    assert (a["maxwait"], a["maxwait_us"], a["pool_mode"]) == ("1", "5", "transaction")
    assert rows[1] == pool_row("b", 1, 0, (0, 0))  # a pool only one worker has


def test_average_times_are_weighed_by_what_each_worker_counted() -> None:
    # name, 5 rates, xact/query/wait time, 3 rates; then the hidden counts (xacts, queries,
    # waits of the period) that only the merge reads.
    w0 = [
        ["p", "10", "10", "20", "100", "200", "1000", "500", "0", "0", "0", "0", "90", "180", "0"]
    ]
    w1 = [["p", "0", "1", "2", "10", "20", "4000", "2000", "300", "0", "0", "0", "10", "20", "5"]]
    (row,) = merge("STATS_AVERAGES", [w0, w1])
    avg = dict(zip(K.STATS_AVERAGES.names, row, strict=True))
    assert len(row) == len(K.STATS_AVERAGES.names)  # the hidden counts are not sent
    assert (avg["xact_count"], avg["query_count"], avg["bytes_received"]) == ("11", "22", "110")
    assert avg["xact_time"] == str((1000 * 90 + 4000 * 10) // 100)
    assert avg["query_time"] == str((500 * 180 + 2000 * 20) // 200)
    assert avg["wait_time"] == "300"  # only worker 1 had clients wait


def test_stats_totals_databases_users_and_lists() -> None:
    totals = merge("STATS_TOTALS", [[["p", *["1"] * 11]], [["p", *["2"] * 11]]])
    assert totals == [["p", *["3"] * 11]]
    db = ["p", "h", "5432", "app", "u", "4", "0", "0", "3600", "transaction", None, "0"]
    (row,) = merge(
        "DATABASES", [[[*db, "2", "100", "3", "0", "0"]], [[*db, "1", "100", "4", "1", "0"]]]
    )
    assert row == [*db, "3", "100", "7", "1", "0"]  # paused on one worker shows as paused
    users = merge(
        "USERS", [[["u", "", "", "", "0", "2", "0", "3"]], [["u", "", "", "", "0", "1", "0", "1"]]]
    )
    assert users == [["u", "", "", "", "0", "3", "0", "4"]]
    w0 = [["databases", "2"], ["pools", "2"], ["used_clients", "3"]]
    w1 = [["databases", "2"], ["pools", "1"], ["used_clients", "4"]]
    lists = merge("LISTS", [w0, w1])
    assert lists == [["databases", "2"], ["pools", "2"], ["used_clients", "7"]]


def test_clients_of_every_worker_by_id() -> None:
    def client(cid: int) -> list[str | None]:
        return ["C", "u", "p", *["x"] * 17, str(cid)]

    rows = merge("CLIENTS", [[client(2), client(6)], [client(3), client(5)]])
    assert [r[20] for r in rows] == ["2", "3", "5", "6"]


class Workers:
    """Two workers' answers to a console command's local part, as the supervisor returns them."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.asked: list[tuple[Any, int | None]] = []

    async def everywhere(self, command: Any, to: int | None = None) -> list[Any]:
        self.asked.append((command, to))
        return self.parts

    def owner(self, client_id: int) -> int:
        return client_id % 2


def commands(parts: list[Any]) -> tuple[Commands, Workers]:
    found = Commands(registry=None, config=None, view=None, clients=None, actions=None)  # type: ignore[arg-type]
    found.cluster = Workers(parts)
    return found, found.cluster


async def test_show_with_workers_merges_every_workers_part() -> None:
    cmds, workers = commands(
        [("ok", [pool_row("a", 1, 0, (0, 0))]), ("ok", [pool_row("a", 2, 1, (0, 7))]), "no answer"]
    )
    columns, rows = await cmds.run("SHOW POOLS", "stats", "watcher")  # type: ignore[misc]
    assert columns is K.POOLS and workers.asked == [(("SHOW", "POOLS"), None)]
    (row,) = rows  # a worker that did not answer is left out
    assert (row[2], row[3], row[9], row[14]) == ("3", "1", "2", "7")


async def test_kill_client_goes_to_the_worker_in_the_id() -> None:
    cmds, workers = commands([("ok", "KILL_CLIENT")])
    assert await cmds.run("KILL_CLIENT 7", "admin", "ops") == "KILL_CLIENT"  # type: ignore[misc]
    assert workers.asked == [(("KILL_CLIENT", 7), 1)]
    for parts in ([("error", ("3D000", "no such client: 8", None, None))], ["worker exited"]):
        cmds, workers = commands(parts)
        with pytest.raises(PgError) as err:
            await cmds.run("KILL_CLIENT 8", "admin", "ops")  # type: ignore[misc]
        assert err.value.sqlstate == "3D000" and workers.asked[0][1] == 0
