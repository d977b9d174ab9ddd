"""Logging setup: one line per event on stderr, connection ids in the messages."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    root = logging.getLogger("pyproxy")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
