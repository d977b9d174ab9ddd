"""Admin endpoints that pause and resume pools: ``POST .../pause`` and ``POST .../resume``."""

from __future__ import annotations

import json
import math
from typing import Protocol

from pyproxy.admin.http_messages import Request, Response, error_response, json_response

DEFAULT_PAUSE_TIMEOUT = 30.0  # seconds a pause may wait for running transactions


class PauseManager(Protocol):
    """What pausing needs from the pool layer (pyproxy.pool.registry.PoolRegistry)."""

    async def pause_pools(self, names: list[str], timeout: float | None = None) -> list[str]: ...

    def resume_pools(self, names: list[str]) -> list[str]: ...


def pause_timeout(req: Request) -> float | str:
    """``timeout_seconds`` from an optional JSON body, or why the body is refused."""
    if not req.body.strip():
        return DEFAULT_PAUSE_TIMEOUT
    try:
        body = json.loads(req.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return f"error parsing request body: {exc}"
    if not isinstance(body, dict) or set(body) - {"timeout_seconds"}:
        return 'the body may only be {"timeout_seconds": <number>}'
    value = body.get("timeout_seconds", DEFAULT_PAUSE_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "timeout_seconds must be a number"
    if not math.isfinite(value) or value <= 0:
        return "timeout_seconds must be a positive number"
    return float(value)


async def pause(manager: PauseManager, names: list[str], req: Request) -> Response:
    """Wait for the pools' running transactions, then hold new queries until resume."""
    timeout = pause_timeout(req)
    if isinstance(timeout, str):
        return error_response(400, timeout, req.request_id)
    try:
        paused = await manager.pause_pools(names, timeout)
    except TimeoutError as exc:
        return error_response(503, f"{exc}: transactions were still running", req.request_id)
    return json_response(200, {"paused": paused})


def resume(manager: PauseManager, names: list[str], req: Request) -> Response:
    return json_response(200, {"resumed": manager.resume_pools(names)})
