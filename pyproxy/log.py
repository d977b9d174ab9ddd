"""Logging setup: one line per event on stderr, connection ids in the messages."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info", process: str = "") -> None:
    """``process`` (e.g. "worker 1") goes before every message of a worker process."""
    handler = logging.StreamHandler(sys.stderr)
    tag = f"[{process}] " if process else ""
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
        )
    )
    root = logging.getLogger("pyproxy")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
