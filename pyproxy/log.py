"""Logging setup: one line per event on stderr, as text or as one JSON object per line, with the
connection ids (``[c12]`` client, ``[s7]`` server) of the message as fields."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

# A message about a connection starts with its id: "[c12] ..." or "[s7] ...".
_CONNECTION = re.compile(r"\[([cs])(\d+)\]")
_FIELDS = {"c": "client_id", "s": "server_id"}
# Attributes every LogRecord has: anything else was passed in ``extra`` and becomes a field.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the
    connection ids named in the message, the ``extra`` fields, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for kind, number in _CONNECTION.findall(message):
            out.setdefault(_FIELDS[kind], int(number))
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def setup_logging(level: str = "info", log_format: str = "text", process: str = "") -> None:
    """``process`` (e.g. "worker 1") names a worker process: before every text message, as the
    ``worker`` field of every JSON one."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
        if process:
            handler.addFilter(_Tag(process))
    else:
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


class _Tag(logging.Filter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.process
        return True
