"""The admin console over several workers: a command's local part runs on every worker (or on
the one named), and the parts go back to the worker that has the console connection."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pyproxy.workers import wire

if TYPE_CHECKING:
    from pyproxy.workers.supervisor import Handle, Supervisor

log = logging.getLogger("pyproxy.supervisor")
CALL_TIMEOUT = 10.0  # seconds for every worker to apply a console change (as the supervisor's)


async def relay_console(sup: Supervisor, asker: Handle, message: dict[str, Any]) -> None:
    """Run a console command's local part on every worker (or on ``to``) and send the
    parts to the worker that has the console connection. Pauses are kept in the view,
    so a worker (re)started meanwhile starts with them."""
    word, arg = message["command"]
    to = message["to"]
    writer = asker.writer  # the answer goes to this incarnation of the asking worker
    answers: list[Any] = []
    try:
        if word == "PAUSE":
            sup.view.hold_paused(set(arg))
        elif word == "KILL":
            sup.view.hold_paused({arg})
        elif word == "RESUME":
            sup.view.forget_paused(arg)
        # SHOW reads the workers accepting clients; a change goes to every connected
        # worker. PAUSE and KILL wait for running transactions as in one process: no limit.
        if word == "SHOW":
            targets, timeout = [h for h in sup.handles if h.alive], CALL_TIMEOUT
        else:
            targets = [h for h in sup.handles if h.connected]
            timeout = None if word in ("PAUSE", "KILL") else CALL_TIMEOUT
        if to is not None:
            targets = [h for h in targets if h.index == to]
        call = {"op": "console", "command": message["command"]}
        answers = list(await asyncio.gather(*(sup._ask(h, call, timeout) for h in targets)))
    except Exception:
        log.exception("console %s over the workers failed", word)
    finally:
        if writer is not None:
            wire.send(writer, {"op": "console_all", "id": message["id"], "answers": answers})
