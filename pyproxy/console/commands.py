"""The console's commands: parsing, who may run what, and PAUSE/RESUME/RELOAD/KILL/... ."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pyproxy.config import Config
from pyproxy.console import merge as M
from pyproxy.console import show as V
from pyproxy.console.settings import show_config
from pyproxy.errors import (
    ADMIN_SHUTDOWN,
    CONFIG_FILE_ERROR,
    INSUFFICIENT_PRIVILEGE,
    INVALID_CATALOG_NAME,
    OBJECT_NOT_IN_PREREQUISITE_STATE,
    SYNTAX_ERROR,
    ConfigError,
    PgError,
)
from pyproxy.pool.registry import PoolRegistry

log = logging.getLogger("pyproxy.console")

SHOW: dict[str, Callable[[V.View], tuple[Any, list[V.Row]]]] = {
    **M.TABLES,
    "VERSION": V.show_version,
}
USAGE = (
    "SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION",
    "SHOW STATS|STATS_TOTALS|STATS_AVERAGES|LISTS",
    "PAUSE [<db>]",
    "RESUME [<db>]",
    "RECONNECT [<db>]",
    "KILL <db>",
    "KILL_CLIENT <client_id>",
    "RELOAD",
    "SHUTDOWN",
)
HINT = "commands: " + "; ".join(USAGE)
_COMMAND = re.compile(r'\s*([A-Za-z_]+)(?:\s+("[^"]*"|[^"\s]+))?\s*$', re.S)
_NAME = re.compile(r'"([^"]*)"|([^"\s]+)$')


class Actions(Protocol):
    """What the running proxy does for RELOAD and SHUTDOWN."""

    def reload(self) -> None: ...
    def shutdown(self) -> None: ...


class Cluster(Protocol):
    """Worker processes: a command's local part run on every worker (or on one), the parts
    returned in worker order (a worker that did not answer gives a string instead)."""

    async def everywhere(self, command: Command, to: int | None = None) -> list[Any]: ...
    def owner(self, client_id: int) -> int: ...


Answer = tuple[Any, list[V.Row]] | str | None  # a result set, a command tag, or nothing
# A command's local part: ("SHOW", table), ("PAUSE", names), ("RESUME", names), ("KILL", db),
# ("RECONNECT", names) or ("KILL_CLIENT", id). Its result, a Part: ("ok", rows or tag) or
# ("error", (sqlstate, message, detail, hint)).
Command = tuple[str, Any]
Part = tuple[str, Any]


class Commands:
    """Runs one console command for a user of a role ("admin" or "stats")."""

    def __init__(
        self,
        registry: PoolRegistry,
        config: Callable[[], Config],
        view: Callable[[], V.View],
        clients: Callable[[], list[Any]],
        actions: Actions,
    ) -> None:
        self.registry = registry
        self.config = config
        self.view = view
        self.clients = clients
        self.actions = actions
        self.cluster: Cluster | None = None  # set in a worker process: act on every worker

    def parse(self, text: str) -> tuple[str, str | None]:
        """(COMMAND, argument or None) of one statement; ERROR 42601 when it is none."""
        found = _COMMAND.match(text)
        if found is None:
            raise _invalid(text)
        word = found.group(1).upper()
        arg = found.group(2)
        if arg is not None:
            quoted = _NAME.match(arg)
            if quoted is None:
                raise _invalid(text)
            arg = quoted.group(1) if quoted.group(1) is not None else quoted.group(2)
        return word, arg

    def run(self, text: str, role: str, user: str) -> Answer | Awaitable[Answer]:
        word, arg = self.parse(text)
        if word == "SHOW":
            return self._show(text, arg)
        if (
            word not in _ADMIN
            or (word in _NEEDS_ARG and arg is None)
            or (word in _NO_ARG and arg is not None)
        ):
            raise _invalid(text)
        if role != "admin":
            raise PgError(
                INSUFFICIENT_PRIVILEGE,
                f"permission denied: {word} needs admin access",
                detail=f'user "{user}" is in stats_users, which may only run SHOW commands',
            )
        log.info("console: %s ran %s", user, text.strip())
        return getattr(self, _ADMIN[word])(arg)

    def _show(self, text: str, what: str | None) -> Answer:
        key = (what or "").upper()
        if key == "HELP":
            return "HELP"
        if key == "CONFIG":
            return show_config(self.config())
        if key == "VERSION":
            return SHOW[key](self.view())
        if key in SHOW or key == "SOCKETS":
            if self.cluster is not None:
                return self._show_all(key)
            return M.COLUMNS[key], M.local_rows(key, self.view(), hidden=False)
        raise _invalid(text)

    async def _show_all(self, key: str) -> Answer:
        """SHOW over every worker: each worker's rows, added up (M.merge)."""
        assert self.cluster is not None
        parts = await self.cluster.everywhere(("SHOW", key))
        rows = [p[1] for p in parts if isinstance(p, tuple) and p[0] == "ok"]
        return M.COLUMNS[key], M.merge(key, rows)

    # ---- local parts: what each worker does ---------------------------------------------------

    async def act(self, command: Command) -> Part:
        """This process's part of a command (in a worker: asked by the worker that has the
        console connection, through the supervisor)."""
        word, arg = command
        try:
            if word == "SHOW":
                return "ok", M.local_rows(arg, self.view(), hidden=True)
            if word == "PAUSE":
                await self.registry.pause_pools(arg)
            elif word == "RESUME":
                self.registry.resume_pools(arg)
            elif word == "KILL":
                await self._kill_here(arg)
            elif word == "RECONNECT":
                self._reconnect_here(arg)
            elif word == "KILL_CLIENT":
                self._kill_client_here(arg)
            else:
                raise ValueError(f"unknown console command {word!r}")
        except PgError as err:
            return "error", (err.sqlstate, err.message, err.detail, err.hint)
        return "ok", word

    async def _everywhere(self, command: Command, to: int | None = None) -> list[Any]:
        """Run ``command`` here (one process) or on every worker; the first error is raised."""
        if self.cluster is None:
            parts = [await self.act(command)]
        else:
            parts = await self.cluster.everywhere(command, to)
        for part in parts:
            if not isinstance(part, tuple):  # a worker that exited or did not answer in time
                log.warning("console %s: a worker's part is missing (%s)", command[0], part)
            elif part[0] == "error":
                sqlstate, message, detail, hint = part[1]
                raise PgError(sqlstate, message, detail=detail, hint=hint)
        return parts

    # ---- admin commands ---------------------------------------------------------------------

    def _names(self, db: str | None) -> list[str]:
        if db is None:
            return [cfg.name for _, cfg in self.view().definitions()]
        if self.registry.find_pool(db) is None:
            raise PgError(INVALID_CATALOG_NAME, f'no such database: "{db}"')
        return [db]

    async def pause(self, db: str | None) -> Answer:
        names = self._names(db)
        already = [n for n in names if self.registry.is_paused(n)]
        if db is not None and already:
            raise _state(f'database "{db}" is already paused')
        if db is None and names and len(already) == len(names):
            raise _state("pooler is already paused")
        await self._everywhere(("PAUSE", [n for n in names if n not in already]))
        return "PAUSE"

    async def resume(self, db: str | None) -> Answer:
        names = [n for n in self._names(db) if self.registry.is_paused(n)]
        if not names:
            raise _state(f'database "{db}" is not paused' if db else "pooler is not paused")
        await self._everywhere(("RESUME", names))
        return "RESUME"

    async def kill(self, db: str | None) -> Answer:
        assert db is not None
        self._names(db)
        await self._everywhere(("KILL", db))
        return "KILL"

    async def _kill_here(self, db: str) -> None:
        err = PgError(ADMIN_SHUTDOWN, "terminating connection due to administrator command",
                      detail=f'KILL "{db}" from the admin console', fatal=True)  # fmt: skip
        for pool in self.registry.live_pools(db):
            waiters = list(pool.waiters)
            for client in [*waiters, *pool.clients]:
                client.kick(err)
            pool.close_all("KILL from the admin console")
        if not self.registry.is_paused(db):
            await self.registry.pause_pools([db])  # new clients wait until RESUME

    async def kill_client(self, arg: str | None) -> Answer:
        assert arg is not None
        if not arg.isdigit():
            raise PgError(SYNTAX_ERROR, f"KILL_CLIENT needs a client id, got {arg!r}",
                          hint="the id column of SHOW CLIENTS")  # fmt: skip
        client_id = int(arg)
        owner = None if self.cluster is None else self.cluster.owner(client_id)
        parts = await self._everywhere(("KILL_CLIENT", client_id), owner)
        if not any(isinstance(p, tuple) for p in parts):  # its worker did not answer
            raise PgError(INVALID_CATALOG_NAME, f"no such client: {arg}")
        return "KILL_CLIENT"

    def _kill_client_here(self, client_id: int) -> None:
        for client in self.clients():
            if client.id == client_id and not client.closing():
                client.kick(
                    PgError(ADMIN_SHUTDOWN, "terminating connection due to administrator command",
                            detail="KILL_CLIENT from the admin console", fatal=True)
                )  # fmt: skip
                return
        raise PgError(INVALID_CATALOG_NAME, f"no such client: {client_id}")

    async def reconnect(self, db: str | None) -> Answer:
        await self._everywhere(("RECONNECT", self._names(db)))
        return "RECONNECT"

    def _reconnect_here(self, names: list[str]) -> None:
        for name in names:
            for pool in self.registry.live_pools(name):
                pool.close_idle("RECONNECT from the admin console")
                pool.mark_stale()  # the others close when their client lets go

    def reload(self, _arg: str | None) -> Answer:
        try:
            self.actions.reload()
        except ConfigError as exc:
            raise PgError(CONFIG_FILE_ERROR, f"RELOAD refused: {exc}") from None
        return "RELOAD"

    def shutdown(self, _arg: str | None) -> Answer:
        self.actions.shutdown()
        return None


_ADMIN = {
    "PAUSE": "pause",
    "RESUME": "resume",
    "KILL": "kill",
    "KILL_CLIENT": "kill_client",
    "RECONNECT": "reconnect",
    "RELOAD": "reload",
    "SHUTDOWN": "shutdown",
}
_NEEDS_ARG = frozenset({"KILL", "KILL_CLIENT"})
_NO_ARG = frozenset({"RELOAD", "SHUTDOWN"})


def _invalid(text: str) -> PgError:
    shown = " ".join(text.split())[:80]
    return PgError(SYNTAX_ERROR, f'invalid command "{shown}", use SHOW HELP;', hint=HINT)


def _state(message: str) -> PgError:
    return PgError(OBJECT_NOT_IN_PREREQUISITE_STATE, message)
