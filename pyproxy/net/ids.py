"""Connection ids (the ``[cN]``/``[sN]`` of log lines, the console's ``id`` column): unique in a
process, and over worker processes, where they also name their worker."""

from __future__ import annotations

import itertools

clients = itertools.count(1)
servers = itertools.count(1)


def number_from(first: int, step: int) -> None:
    """Worker ``i`` of ``n`` numbers its connections ``n + i``, ``2n + i``, ...: unique over
    the workers, and ``id % n`` is the worker."""
    global clients, servers
    clients = itertools.count(first, step)
    servers = itertools.count(first, step)
