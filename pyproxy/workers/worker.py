"""A worker process: an App accepting clients on the address every worker shares, with the
pool shares, definitions and reloads its supervisor sends; it reports what its pools use.

Run by the supervisor as ``python -m pyproxy.workers.worker SOCKET INDEX``."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import sys
import time
from typing import Any

from pyproxy.admin import metrics
from pyproxy.app import App
from pyproxy.log import setup_logging
from pyproxy.net import ids
from pyproxy.pool.pool import Pool
from pyproxy.pool.stats import longest_wait
from pyproxy.workers import wire
from pyproxy.workers.shares import IDLE_GRACE, default_split

log = logging.getLogger("pyproxy.worker")
REPORT_INTERVAL = 0.02  # seconds between looks at the pools (a report is sent on change)
HEARTBEAT = 1.0  # a report at least this often

Key = tuple[str, str]


def stale_idle(pool: Pool, now: float) -> int:
    """Idle servers idle for longer than IDLE_GRACE (the oldest come first in ``idle``)."""
    count = 0
    for server in pool.idle:
        if now - server.idle_since < IDLE_GRACE:
            break
        count += 1
    return count


class Worker:
    """One worker: its App, its shares and its end of the control connection."""

    def __init__(
        self, start: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.index: int = start["index"]
        self.workers: int = start["workers"]
        self.reader, self.writer = reader, writer
        self.grants: dict[Key, int] = dict(start["grants"])
        self.seq: int = start["seq"]
        # With pool state in PostgreSQL the instance's part of a pool changes with the share
        # table: a pool holds only what the supervisor granted (nothing before it heard of it).
        self.granted_only: bool = start.get("granted_only", False)
        self.app = App(start["config"])
        self.app.reuse_port = True
        registry = self.app.registry
        registry.on_new_pool = self._new_pool
        registry.replace_config(start["config"], start["defs"])
        registry.hold_paused(start["paused"])
        cancels = self.app.state.cancels
        cancels.worker = self.index
        cancels.forward = self._forward_cancel
        # The console's RELOAD and SHUTDOWN act on every worker: the supervisor does them.
        self.app.on_shutdown = lambda: wire.send(self.writer, {"op": "shutdown"})
        self.app.reload_file = lambda: wire.send(self.writer, {"op": "reload"})  # type: ignore[method-assign]
        # Its other commands and SHOW run on every worker (through the supervisor); connection
        # ids name their worker (id % workers), so they are unique and KILL_CLIENT finds it.
        self.app.console.commands.cluster = self
        ids.number_from(self.workers + self.index, self.workers)
        self._console_ids = itertools.count(1)
        self._console_calls: dict[int, asyncio.Future[list[Any]]] = {}
        self._last: tuple[Any, ...] = ()
        self._last_at = 0.0
        self._servers: tuple[Any, ...] = ()
        self._stopped = asyncio.Event()
        self.forwarded = 0  # cancel requests for another worker's client, passed on

    # ---- shares --------------------------------------------------------------------------------

    def _share(self, key: Key, size: int) -> int:
        found = self.grants.get(key)
        if found is not None:
            return found
        return 0 if self.granted_only else default_split(size, self.workers, self.index)

    def _new_pool(self, key: Key, pool: Pool) -> None:
        pool.set_share(self._share(key, pool.cfg.size))

    def _grant(self, message: dict[str, Any]) -> None:
        self.grants.update(message["shares"])
        self.seq = message["seq"]
        for key, pool in self.app.registry.live_items():
            share = message["shares"].get(key)
            if share is not None and share != pool.share:
                pool.set_share(share)
        self.report(force=True)

    def _reshare(self) -> None:
        """After a reload or change: pools never granted follow the default split of their
        (maybe new) size."""
        for key, pool in self.app.registry.live_items():
            share = self._share(key, pool.cfg.size)
            if share != pool.share:
                pool.set_share(share)

    # ---- reports -------------------------------------------------------------------------------

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        pools = {
            key: (
                pool.cfg.size,
                pool.total,
                stale_idle(pool, now),
                len(pool.waiters) + pool.opener.welcome_waiting,
                len(pool.clients) if self.granted_only else 0,  # for the share table
                pool.cap,
            )
            for key, pool in self.app.registry.live_items()
        }
        servers = tuple(
            (s.pid, s.secret, pool.cluster.host, pool.cluster.port)
            for pool in self.app.registry.live_pools()
            for place in (pool.idle, pool.linked, pool.cleaning, pool.canceling)
            for s in place
            if s.pid
        )
        changed = servers != self._servers
        snapshot = (pools, self.seq)
        if not force and not changed and snapshot == self._last and now - self._last_at < HEARTBEAT:
            return
        self._last, self._last_at, self._servers = snapshot, now, servers
        message = {"op": "report", "seq": self.seq, "pools": pools}
        if changed:
            message["servers"] = servers
        wire.send(self.writer, message)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            try:
                self.report()
            except Exception:
                log.exception("worker %d: report failed", self.index)

    def stats(self) -> dict[str, Any]:
        """Figures the supervisor adds up over the workers for the admin API and /metrics."""
        registry = self.app.registry
        now = time.monotonic()
        pools: dict[str, Any] = {}
        for name in {p.name for p in registry.live_pools()}:
            lives = registry.live_pools(name)
            pools[name] = {
                "stats": registry.pool_stats(name),
                "counters": registry.pool_counters(name),
                "histogram": registry.wait_histogram(name),
                "longest": max((longest_wait(p, now) for p in lives), default=0.0),
                "shares": sum(p.cap for p in lives),
            }
        return {
            "pools": pools,
            "servers": {c.id: registry.servers_in_use(c.id) for c in registry.clusters()},
            "clients": len(self.app.state.clients),
            "metrics": metrics.collect(
                registry, len(self.app.state.clients), self.app.config.proxy.metrics
            ),
            "accepted": self.app.state.accepted,
            "forwarded": self.forwarded,
            "pid": os.getpid(),
        }

    # ---- the admin console over every worker ---------------------------------------------------

    async def everywhere(self, command: tuple[str, Any], to: int | None = None) -> list[Any]:
        """Run a console command's local part on every worker (or on worker ``to``), through
        the supervisor; the parts in worker order."""
        rid = next(self._console_ids)
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._console_calls[rid] = fut
        wire.send(self.writer, {"op": "console", "id": rid, "command": command, "to": to})
        try:
            return await fut
        finally:
            self._console_calls.pop(rid, None)

    def owner(self, client_id: int) -> int:
        return client_id % self.workers

    async def _console_part(self, message: dict[str, Any]) -> None:
        try:
            part = await self.app.console.commands.act(message["command"])
        except Exception as exc:
            log.exception("worker %d: console %s failed", self.index, message["command"][0])
            part = "failed: " + repr(exc)
        wire.send(self.writer, {"op": "console_part", "id": message["id"], "data": part})

    # ---- requests from the supervisor ----------------------------------------------------------

    def _forward_cancel(self, owner: int, pid: int, secret: int) -> None:
        self.forwarded += 1
        wire.send(self.writer, {"op": "cancel", "owner": owner, "key": (pid, secret)})

    async def _call(self, message: dict[str, Any]) -> None:
        method, args = message["method"], message["args"]
        registry = self.app.registry
        error = None
        try:
            if method == "reload":
                self.app.reload(*args)
            elif method == "pause_pools":
                await registry.pause_pools(*args)
            elif method in ("add_pool", "update_pool", "remove_pool", "resume_pools"):
                getattr(registry, method)(*args)
            else:
                raise ValueError(f"unknown call {method!r}")
            self._reshare()
        except TimeoutError as exc:
            error = f"timeout: {exc}"
        except Exception as exc:
            log.exception("worker %d: %s failed", self.index, method)
            error = f"{type(exc).__name__}: {exc}"
        wire.send(self.writer, {"op": "done", "id": message["id"], "error": error})

    async def _serve_supervisor(self) -> None:
        while True:
            message = await wire.read(self.reader)
            if message is None:
                log.warning("worker %d: supervisor gone; stopping", self.index)
                return
            op = message["op"]
            if op == "grant":
                self._grant(message)
            elif op == "call":
                if message["method"] == "pause_pools":
                    self.app.state.spawn(self._call(message))
                else:
                    await self._call(message)
            elif op == "stats":
                reply = {"op": "stats", "id": message["id"], "data": self.stats()}
                wire.send(self.writer, reply)
            elif op == "cancel":
                self.app.state.cancels.handle(*message["key"])
            elif op == "console":  # this worker's part of a console command
                self.app.state.spawn(self._console_part(message))
            elif op == "console_all":  # every worker's part of this worker's console command
                fut = self._console_calls.get(message["id"])
                if fut is not None and not fut.done():
                    fut.set_result(message["answers"])
            elif op == "stop":
                return

    async def run(self) -> int:
        await self.app.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stopped.set)
        wire.send(self.writer, {"op": "ready", "port": self.app.client_port})
        reports = loop.create_task(self._report_loop())
        control = loop.create_task(self._serve_supervisor())
        stop = loop.create_task(self._stopped.wait())
        await asyncio.wait([control, stop], return_when=asyncio.FIRST_COMPLETED)
        reports.cancel()
        await self.app.stop()
        control.cancel()
        stop.cancel()
        self.writer.close()
        return 0


async def main_async(path: str, index: int, level: str) -> int:
    reader, writer = await asyncio.open_unix_connection(path)
    wire.send(writer, {"op": "hello", "index": index, "pid": os.getpid()})
    start = await wire.read(reader)
    if start is None:
        return 1
    log_format = start["config"].proxy.log_format
    if log_format != "text":
        setup_logging(level, log_format, f"worker {index}")
    return await Worker(start, reader, writer).run()


def main(argv: list[str]) -> int:
    path, index, level = argv[0], int(argv[1]), argv[2] if len(argv) > 2 else "info"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when workers stop
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # reloads come from the supervisor
    setup_logging(level, process=f"worker {index}")
    try:
        import uvloop  # type: ignore[import-not-found]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    return asyncio.run(main_async(path, index, level))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
