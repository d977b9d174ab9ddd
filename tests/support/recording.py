"""Comparing two runs of pyproxy's data path on the fake world (tests.support.fakes)."""

from __future__ import annotations

from typing import Any

from tests.support.fakes import Recorder

__all__ = ["Recorder", "plain"]


def plain(value: Any) -> Any:
    """Statement-queue entries hold objects of the world they come from: compare by type."""
    return value if value is None or isinstance(value, int | bytes) else type(value).__name__
