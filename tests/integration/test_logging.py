"""Logging: ``log_format = "json"`` writes one JSON object per line with the connection ids, and
every ``stats_period`` a stats line per pool (PgBouncer's ``stats:`` line)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path

from pyproxy.log import JsonFormatter
from tests.integration.test_console import write_config
from tests.support.pgcluster import PgServer
from tests.support.proxy import SCRAM_USER, RunningProxy, config_dict, pool_entry


def test_json_lines_carry_connection_ids_and_extra_fields() -> None:
    record = logging.LogRecord(
        "pyproxy.client", logging.INFO, __file__, 1, "[c12] cancel for [s7] failed: %s",
        ("boom",), None,
    )  # fmt: skip
    record.pool = "testpool"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "[c12] cancel for [s7] failed: boom"
    assert (out["client_id"], out["server_id"], out["pool"]) == (12, 7, "testpool")
    assert (out["level"], out["logger"]) == ("info", "pyproxy.client")
    assert out["time"].endswith("Z")


async def test_serve_logs_json_lines_and_periodic_stats(pg: PgServer, tmp_path: Path) -> None:
    path = tmp_path / "pyproxy.toml"
    data = config_dict(pg, [pool_entry(size=2)], proxy={"log_format": "json", "stats_period": 0.3})
    write_config(path, data)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyproxy", "serve", "-c", str(path), "--log-level", "debug",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        port = int(banner.split()[3].rsplit(":", 1)[1].rstrip(","))
        proxy = RunningProxy(app=None, host="127.0.0.1", port=port)  # type: ignore[arg-type]
        conn = await proxy.asyncpg()
        for _ in range(20):
            await conn.fetchval("SELECT 1")
        await conn.close()
        lines: list[dict[str, object]] = []
        stats: list[dict[str, object]] = []
        deadline = time.monotonic() + 10
        while not stats and time.monotonic() < deadline:
            raw = await asyncio.wait_for(proc.stderr.readline(), 10)
            lines.append(json.loads(raw))  # every line is one JSON object
            if lines[-1]["logger"] == "pyproxy.stats":
                entry = lines[-1]
                figures = entry["stats"]
                assert isinstance(figures, dict)
                if figures["xact_count"]:
                    stats.append(entry)
    finally:
        proc.terminate()
        await proc.wait()
    assert stats, "a stats line with the transactions came within the period"
    line = stats[0]
    assert line["pool"] == "testpool" and str(line["message"]).startswith("stats of testpool:")
    assert "xacts/s" in str(line["message"]) and "wait" in str(line["message"])
    logins = [e for e in lines if "logged in as" in str(e["message"])]
    assert logins and all(isinstance(e["client_id"], int) for e in logins)
    assert SCRAM_USER in str(logins[0]["message"])
