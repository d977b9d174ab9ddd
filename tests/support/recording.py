"""Fakes for comparing two runs of pyproxy's data path on bench.hotpath's fake world."""

from __future__ import annotations

from typing import Any

from bench import hotpath


class Recorder(hotpath._Transport):
    """A transport that keeps what is written to it (and a mark when it is closed)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.written.append(b"<closed>")


def plain(value: Any) -> Any:
    """Statement-queue entries hold objects of the world they come from: compare by type."""
    return value if value is None or isinstance(value, int | bytes) else type(value).__name__
