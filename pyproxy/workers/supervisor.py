"""The supervisor: starts the workers, restarts one that dies, keeps every pool's shares (the
coordinator), serves the admin API over all workers, and passes SIGHUP and SIGTERM on."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any

from pyproxy.config import Config, load_config
from pyproxy.errors import ConfigError
from pyproxy.net.connect import open_server, send_cancel
from pyproxy.pool.pool import Pool
from pyproxy.workers import wire
from pyproxy.workers.admin import AdminFront
from pyproxy.workers.console_relay import relay_console
from pyproxy.workers.shares import PoolShares, Usage, default_split
from pyproxy.workers.view import ClusterView

log = logging.getLogger("pyproxy.supervisor")
READY_TIMEOUT = 30.0  # seconds for a worker to start accepting
CALL_TIMEOUT = 10.0  # seconds for every worker to apply a change (pause has its own timeout)
DEAD_HOLD = 0.2  # seconds after a dead worker's backends were cancelled before their budget frees
RESTART_DELAY = 0.1

Key = tuple[str, str]


class Handle:
    """The supervisor's side of one worker process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready = asyncio.Event()
        self.grant_seq = 0  # the last share message sent
        self.pools: dict[Key, Usage] = {}
        self.clients: dict[Key, int] = {}  # clients of each pool here
        self.servers: tuple[Any, ...] = ()  # (pid, secret, host, port) of its backends
        self.calls: dict[int, asyncio.Future[Any]] = {}
        self.restarts = 0
        self.failures = 0  # exits in a row before getting ready
        self.was_ready = False

    @property
    def connected(self) -> bool:
        """Said hello: it has the state of its start message and hears every change since."""
        return self.writer is not None and not self.writer.is_closing()

    @property
    def alive(self) -> bool:
        """Connected and accepting clients."""
        return self.ready.is_set() and self.connected

    def send(self, message: dict[str, Any]) -> None:
        if self.writer is not None:
            wire.send(self.writer, message)


class Supervisor:
    def __init__(self, path: str, config: Config, workers: int, log_level: str) -> None:
        self.path = path
        self.config = config
        self.n = workers
        self.log_level = log_level
        self.handles = [Handle(i) for i in range(workers)]
        self.shares: dict[Key, PoolShares] = {}
        self.view = ClusterView(config, self._connect, self._broadcast)
        self.front: AdminFront | None = None
        self.stopping = False
        self.port = 0
        self._ids = itertools.count(1)
        self._holder: socket.socket | None = None
        self._dir = ""
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stop_requested = asyncio.Event()  # SIGTERM, SIGINT or the console's SHUTDOWN
        # With pool state in PostgreSQL (``[admin] state_dsn``) the supervisor is the instance:
        # the share table grants it a part of each pool (set_share), which the workers' shares
        # divide. None: no such table, each pool's whole size.
        self.parts: dict[str, int] | None = (
            {} if config.admin.enabled and config.admin.state_dsn else None
        )

    async def _connect(self, pool: Pool) -> Any:
        return await open_server(pool, max_packet=self.config.proxy.max_packet_size, timeout=10.0)

    # ---- start and stop ------------------------------------------------------------------------

    def _hold_port(self) -> int:
        """Bind (not listen) the client address with SO_REUSEPORT: the port is ours while
        workers come and go; only listening sockets get connections."""
        proxy = self.config.proxy
        family = socket.AF_INET6 if ":" in proxy.listen_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((proxy.listen_host, proxy.listen_port))
        self._holder = sock
        return int(sock.getsockname()[1])

    def worker_config(self) -> Config:
        proxy = dataclasses.replace(self.config.proxy, listen_port=self.port)
        admin = dataclasses.replace(self.config.admin, enabled=False)
        return dataclasses.replace(self.config, proxy=proxy, admin=admin)

    async def start(self) -> None:
        self.port = self._hold_port()
        self._dir = tempfile.mkdtemp(prefix="pyproxy-workers-")
        os.chmod(self._dir, 0o700)
        sock_path = os.path.join(self._dir, "control")
        self._control = await asyncio.start_unix_server(self._on_worker, sock_path)
        self._sock_path = sock_path
        if self.config.admin.enabled:
            # Before any worker: a bad admin config stops the start here; a worker that
            # connects later gets the definitions with its start message.
            try:
                self.front = AdminFront(self.config, self.view, self)
                await self.front.load_store()
                await self.front.start()
            except BaseException:
                if self.front is not None:
                    self.front.store.close()
                self._cleanup()
                raise
        for handle in self.handles:
            self._spawn(handle)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                # (a worker restarted meanwhile has a new ``ready`` event: look again each time)
                while not all(h.ready.is_set() for h in self.handles):
                    await asyncio.sleep(0.02)
        except TimeoutError:
            await self.stop()
            raise OSError(f"workers did not start within {READY_TIMEOUT:g} s") from None
        log.info("%d workers accepting on %s:%d", self.n, self.config.proxy.listen_host, self.port)

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn(self, handle: Handle) -> None:
        handle.ready = asyncio.Event()
        task = asyncio.get_running_loop().create_task(self._run_worker(handle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_worker(self, handle: Handle) -> None:
        handle.was_ready = False
        cmd = [sys.executable, "-m", "pyproxy.workers.worker", self._sock_path, str(handle.index)]
        proc = await asyncio.create_subprocess_exec(*cmd, self.log_level)
        handle.proc = proc
        code = await proc.wait()
        self._lost(handle)
        if self.stopping:
            return
        # A worker that keeps dying before it is ready waits longer each time (at most 5 s).
        handle.failures = 0 if handle.was_ready else handle.failures + 1
        delay = min(5.0, RESTART_DELAY * 2**handle.failures)
        log.error(
            "worker %d (pid %d) exited with %s; restarting it in %g s",
            handle.index, proc.pid, code, delay,
        )  # fmt: skip
        handle.restarts += 1
        await asyncio.sleep(delay)
        if not self.stopping:
            self._spawn(handle)

    def _lost(self, handle: Handle) -> None:
        """A worker is gone: its calls fail, its shares go to 0, its backends are cancelled,
        and their budget frees once PostgreSQL has had time to end them."""
        handle.ready.clear()
        if handle.writer is not None:
            handle.writer.close()
            handle.writer = None
        for fut in handle.calls.values():
            if not fut.done():
                fut.set_result("worker exited")
        handle.calls.clear()
        death = next(self._ids)
        for shares in self.shares.values():
            shares.gone(handle.index, death)
        handle.pools = {}
        handle.clients = {}
        servers, handle.servers = handle.servers, ()
        if self.stopping:
            return  # the worker drained: its servers are closed
        task = asyncio.get_running_loop().create_task(self._free_after(death, servers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _free_after(self, death: int, servers: tuple[Any, ...]) -> None:
        async def cancel(pid: int, secret: int, host: str, port: int) -> None:
            with contextlib.suppress(OSError, TimeoutError):
                await send_cancel(host, port, pid, secret, wait=2.0)

        if servers:
            await asyncio.gather(*(cancel(*s) for s in servers))
        await asyncio.sleep(DEAD_HOLD)
        for shares in self.shares.values():
            shares.released(death)
        self._rebalance(list(self.shares))

    async def stop(self) -> None:
        """Every worker drains (up to shutdown_timeout) and exits; then the supervisor."""
        self.stopping = True
        if self.front is not None:
            await self.front.stop()
        for handle in self.handles:
            handle.send({"op": "stop"})
        procs = [h.proc for h in self.handles if h.proc is not None]
        wait = self.config.proxy.shutdown_timeout + 5.0
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), wait)
            except TimeoutError:
                log.error("worker pid %d did not stop; killing it", proc.pid)
                proc.kill()
                await proc.wait()
        if self.front is not None:  # unregistered once the workers' servers are closed
            await self.front.store.aclose()
        self._cleanup()
        log.info("stopped")

    def _cleanup(self) -> None:
        self._control.close()
        if self._holder is not None:
            self._holder.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    # ---- the control connection ----------------------------------------------------------------

    async def _on_worker(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = await wire.read(reader)
        if hello is None or hello.get("op") != "hello":
            writer.close()
            return
        handle = self.handles[hello["index"]]
        handle.writer = writer
        handle.grant_seq = 0
        for shares in self.shares.values():
            shares.joined(handle.index)
        handle.send(
            {
                "op": "start",
                "index": handle.index,
                "workers": self.n,
                "config": self.worker_config(),
                "defs": self.view.definitions(),
                "paused": self.view.paused_names(),
                "grants": {key: 0 for key in self.shares},
                "granted_only": self.parts is not None,
                "seq": 0,
            }
        )
        try:
            while True:
                message = await wire.read(reader)
                if message is None:
                    break
                self._on_message(handle, message)
        except Exception:
            log.exception("worker %d: bad control message; closing", handle.index)
        finally:
            if handle.writer is writer:
                writer.close()

    def _on_message(self, handle: Handle, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "report":
            self._report(handle, message)
        elif op in ("done", "stats", "console_part"):
            fut = handle.calls.pop(message["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(message.get("error") if op == "done" else message["data"])
        elif op == "console":  # a console command's local part, for every worker (or one)
            self._background(relay_console(self, handle, message))
        elif op == "cancel":
            owner = message["owner"]
            if 0 <= owner < self.n and self.handles[owner].alive:
                self.handles[owner].send({"op": "cancel", "key": message["key"]})
        elif op == "reload":  # the admin console's RELOAD, on any worker
            self._background(self.reload())
        elif op == "shutdown":  # the admin console's SHUTDOWN
            self.stop_requested.set()
        elif op == "ready":
            handle.ready.set()
            handle.was_ready = True
            log.info("worker %d ready (pid %s)", handle.index, handle.proc and handle.proc.pid)

    # ---- shares --------------------------------------------------------------------------------

    def _size(self, key: Key, reported: int) -> int:
        found = self.view.find_pool(key[0])
        return self.instance_part(key[0], reported if found is None else found[1].size)

    def _report(self, handle: Handle, message: dict[str, Any]) -> None:
        if "servers" in message:
            handle.servers = message["servers"]
        confirmed = message["seq"] == handle.grant_seq
        pools: dict[Key, tuple[int, int, int, int, int, int]] = message["pools"]
        touched = set(handle.pools) | set(pools)
        handle.pools = {}
        handle.clients = {}
        present = {h.index for h in self.handles if h.connected}
        new: list[Key] = []
        for key, (size, held, idle, waiting, clients, cap) in pools.items():
            shares = self.shares.get(key)
            if shares is None:
                shares = self.shares[key] = PoolShares(self._size(key, size), self.n, present)
                new.append(key)
            usage = Usage(held, idle, waiting)
            handle.pools[key] = usage
            handle.clients[key] = clients
            shares.report(handle.index, usage, confirmed, cap)
        for key in touched - set(pools):
            self.shares[key].report(handle.index, Usage(), confirmed)
        self._rebalance(touched, new)

    def _rebalance(self, keys: Any, new: Any = ()) -> None:
        """Send the shares that changed; for ``new`` pools every worker's first share too, so
        from then on no worker goes by its own even split (of a size or part that may change)."""
        out: dict[int, dict[Key, int]] = {}
        for key in new:
            shares = self.shares[key]
            for w, share in shares.grant.items():
                if w not in shares.absent:
                    out.setdefault(w, {})[key] = share
        for key in keys:
            shares = self.shares.get(key)
            if shares is None:
                continue
            for w, share in shares.rebalance().items():
                out.setdefault(w, {})[key] = share
        for w, grants in out.items():
            handle = self.handles[w]
            if handle.connected:
                handle.grant_seq += 1
                handle.send({"op": "grant", "seq": handle.grant_seq, "shares": grants})

    def instance_part(self, name: str, size: int) -> int:
        """The part of pool ``name`` (of ``size``) this instance may use, divided among its
        workers: all of it, or what the share table granted."""
        return size if self.parts is None else min(size, self.parts.get(name, 0))

    # ShareTarget (admin/shares.py): the cross-instance allocator sees this instance as a whole.

    def share_needs(self) -> list[tuple[str, str, int, int, int]]:
        """(cluster id, pool, size, servers the workers may hold, clients) of every pool. The
        servers count what the workers may hold without having told us (grants not yet
        confirmed, a dead worker's backends), so a grant written from it covers them."""
        held: dict[str, int] = {}
        for key, shares in self.shares.items():
            held[key[0]] = max(held.get(key[0], 0), shares.committed_total())
        clients: dict[str, int] = {}
        for handle in self.handles:
            for key, count in handle.clients.items():
                clients[key[0]] = clients.get(key[0], 0) + count
        return [
            (cid, cfg.name, cfg.size, held.get(cfg.name, 0), clients.get(cfg.name, 0))
            for cid, cfg in self.view.definitions()
        ]

    def set_share(self, name: str, share: int | None) -> None:
        """The share table's part of pool ``name`` for this instance: the workers' shares of it
        follow (a smaller part lowers them at once, a larger one grows them out of free room).
        Workers hold only granted shares here, so every server they hold is counted."""
        if self.parts is None:
            return
        if share is None:
            self.parts.pop(name, None)
        else:
            self.parts[name] = share
        self.resize_all()

    def resize_all(self) -> None:
        """Pool sizes changed (reload, API): shares follow before the workers hear of it."""
        for key, shares in self.shares.items():
            found = self.view.find_pool(key[0])
            shares.resize(self.instance_part(key[0], found[1].size) if found is not None else 0)
        self._rebalance(list(self.shares))

    def share_of(self, index: int, name: str) -> int:
        """Worker ``index``'s share of pool ``name`` (the even split until a worker uses it)."""
        known = [s.grant[index] for k, s in self.shares.items() if k[0] == name]
        if known:
            return sum(known)
        found = self.view.find_pool(name)
        size = self.instance_part(name, found[1].size) if found is not None else 0
        return default_split(size, self.n, index)

    # ---- calls to every worker -----------------------------------------------------------------

    async def _ask(self, handle: Handle, message: dict[str, Any], timeout: float) -> Any:
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        handle.calls[rid] = fut
        handle.send({**message, "id": rid})
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            handle.calls.pop(rid, None)
            return "no answer"

    async def _broadcast(self, method: str, args: tuple[Any, ...]) -> list[Any]:
        """Apply a change on every live worker and wait for all (a worker starting meanwhile
        gets the definitions with its start message)."""
        if method in ("update_pool", "remove_pool", "add_pool"):
            self.resize_all()
        timeout = CALL_TIMEOUT
        if method == "pause_pools" and args[1] is not None:
            timeout = args[1] + CALL_TIMEOUT
        live = [h for h in self.handles if h.connected]
        message = {"op": "call", "method": method, "args": args}
        return list(await asyncio.gather(*(self._ask(h, message, timeout) for h in live)))

    async def collect_stats(self) -> None:
        live = [h for h in self.handles if h.alive]
        answers = await asyncio.gather(*(self._ask(h, {"op": "stats"}, 2.0) for h in live))
        self.view.worker_stats = {
            h.index: a for h, a in zip(live, answers, strict=True) if isinstance(a, dict)
        }

    # ---- reload --------------------------------------------------------------------------------

    async def reload(self) -> None:
        try:
            new = load_config(self.path)
        except (ConfigError, Exception) as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        if new.proxy.workers != self.n or new.proxy.listen_port != self.config.proxy.listen_port:
            log.warning("workers and listen take effect at the next start, not on reload")
        self.config = new
        api_pools = self.front.api_pools(new) if self.front is not None else []
        self.view.replace_config(new, api_pools)
        self.view.sent.clear()  # the workers get the whole picture below
        self.resize_all()
        if self.front is not None:
            self.front.reload(new)
        errors = await self._broadcast("reload", (self.worker_config(), self.view.definitions()))
        log.info("configuration reloaded by %d workers", sum(e is None for e in errors))


async def serve(path: str, config: Config, log_level: str) -> int:
    """Run ``config.proxy.workers`` workers until SIGTERM or SIGINT."""
    sup = Supervisor(path, config, config.proxy.workers, log_level)
    await sup.start()
    loop = asyncio.get_running_loop()
    stop = sup.stop_requested

    def on_stop(signame: str) -> None:
        log.info("%s received: shutting down %d workers", signame, sup.n)
        stop.set()

    def on_reload() -> None:
        sup._background(sup.reload())

    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    host = config.proxy.listen_host
    admin = f", admin API on {config.admin.listen_host}:{sup.front.port}" if sup.front else ""
    print(f"pyproxy listening on {host}:{sup.port}{admin} ({sup.n} workers)", flush=True)
    await stop.wait()
    await sup.stop()
    return 0
