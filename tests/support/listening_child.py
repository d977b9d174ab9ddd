"""A Python module run as a child process that prints "listening on HOST:PORT" once it serves."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator

from tests.support.toml_config import REPO_ROOT, SUBPROCESS_ENV


@contextlib.asynccontextmanager
async def listening_child(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """``python <args>`` from the repository root; yields the process and the port its first
    line of output names. Killed on exit if it is still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args,
        cwd=REPO_ROOT, env=SUBPROCESS_ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        found = re.search(r"listening on [\d.]+:(\d+)", line)
        assert found is not None, line
        yield proc, int(found.group(1))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
