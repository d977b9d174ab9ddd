"""Admin API under slow-header clients: how often legitimate calls succeed meanwhile.

Run as `python -m bench.admin_slow_clients [--slow 200] [--duration 20] [--no-reconnect]`.
Starts `pyproxy serve` (its own process, default admin limits) with one cluster and no
PostgreSQL behind it, opens ``--slow`` connections from 127.0.0.1 that each send one byte of a
never-ending header block per second (reopened at once when the server closes them, unless
``--no-reconnect``), and meanwhile makes legitimate calls, one new connection each, from the same
address: ``GET /v2/databases/{uuid}/pools`` with the Bearer token. A call succeeds when it gets a
200 within ``--call-timeout`` seconds; anything else (503, reset, timeout) is a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.procstat import process_cpu_seconds

CLUSTER_ID = "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30"
TOKEN = "bench-admin-token"
CONFIG = f"""
[proxy]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"
state_path = ":memory:"

[[clusters]]
id = "{CLUSTER_ID}"
host = "127.0.0.1"
port = 1

[[clusters.users]]
name = "app"
password = "secret"

[[clusters.pools]]
name = "backend-pool"
db = "app"
size = 5
"""
SLOW_HEAD = b"GET /v2/databases/" + CLUSTER_ID.encode() + b"/pools HTTP/1.1\r\nX-Slow: "


@dataclass
class Tally:
    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    slow_opened: int = 0
    slow_closed_by_server: int = 0

    def fail(self, why: str) -> None:
        self.failed[why] = self.failed.get(why, 0) + 1


async def slow_client(port: int, reconnect: bool, stop: asyncio.Event, tally: Tally) -> None:
    """One slow-header connection at a time: a byte per second, reopened when closed."""
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        tally.slow_opened += 1
        closed = asyncio.ensure_future(reader.read())
        try:
            i = 0
            while not stop.is_set() and not closed.done():
                writer.write(SLOW_HEAD[i : i + 1] if i < len(SLOW_HEAD) else b"a")
                i += 1
                await asyncio.wait([closed], timeout=1.0)
        except OSError:
            pass
        finally:
            if closed.done():
                tally.slow_closed_by_server += 1
            closed.cancel()
            writer.close()
        if not reconnect:
            await stop.wait()


async def legit_call(port: int, timeout: float, tally: Tally) -> None:
    request = (
        f"GET /v2/databases/{CLUSTER_ID}/pools HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    ).encode()
    start = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status_line = await reader.readline()
            rest = await reader.read()
    except TimeoutError:
        tally.fail("timeout")
        return
    except OSError as exc:
        tally.fail(type(exc).__name__)
        return
    finally:
        if writer is not None:
            writer.close()
    parts = status_line.split(b" ")
    status = parts[1].decode() if len(parts) > 1 else "no answer"
    if status == "200":
        tally.ok += 1
        tally.latencies.append(time.monotonic() - start)
    else:
        try:
            message = json.loads(rest.partition(b"\r\n\r\n")[2])["message"]
        except (ValueError, KeyError, TypeError):
            message = ""
        tally.fail(f"{status} {message}".strip())


async def measure(port: int, args: argparse.Namespace) -> Tally:
    tally = Tally()
    stop = asyncio.Event()
    slow = [
        asyncio.create_task(slow_client(port, not args.no_reconnect, stop, tally))
        for _ in range(args.slow)
    ]
    await asyncio.sleep(args.warmup)
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        await legit_call(port, args.call_timeout, tally)
        await asyncio.sleep(args.interval)
    stop.set()
    await asyncio.gather(*slow, return_exceptions=True)
    return tally


def start_server(config_path: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyproxy", "serve", "-c", str(config_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "admin API on" not in line:
        proc.kill()
        raise SystemExit(f"pyproxy did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=200, help="slow-header connections")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of legit calls")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before the first call")
    parser.add_argument("--interval", type=float, default=0.02, help="pause between calls")
    parser.add_argument("--call-timeout", type=float, default=10.0)
    parser.add_argument("--no-reconnect", action="store_true", help="do not reopen closed ones")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "pyproxy.toml"
        config_path.write_text(CONFIG)
        proc, port = start_server(config_path)
        try:
            cpu = process_cpu_seconds(proc.pid)
            started = time.monotonic()
            tally = asyncio.run(measure(port, args))
            cpu = process_cpu_seconds(proc.pid) - cpu
            elapsed = time.monotonic() - started
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
    calls = tally.ok + sum(tally.failed.values())
    lat = sorted(tally.latencies) or [0.0]
    print(
        f"slow connections: {args.slow} (reconnect: {not args.no_reconnect}), "
        f"opened {tally.slow_opened}, closed by the server {tally.slow_closed_by_server}"
    )
    print(f"legitimate calls: {calls}, ok {tally.ok} ({100 * tally.ok / max(calls, 1):.2f} %)")
    print(f"failures: {tally.failed or 'none'}")
    share = 100 * cpu / elapsed
    print(f"pyproxy CPU during the run: {cpu:.1f} s in {elapsed:.1f} s ({share:.0f} %)")
    print(
        f"latency of successful calls: median {1000 * statistics.median(lat):.1f} ms, "
        f"p99 {1000 * lat[int(0.99 * (len(lat) - 1))]:.1f} ms, max {1000 * lat[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
