"""Config files for tests that run ``python -m pyproxy`` as a subprocess."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.pgcluster import APP_DB, PgServer
from tests.support.proxy import CLUSTER_ID, SCRAM_PASSWORD, SCRAM_USER

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBPROCESS_ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT))


def pool_text(
    name: str, size: int = 2, mode: str = "transaction", extra: str = "", user: str = SCRAM_USER
) -> str:
    """One [[clusters.pools]] table for the test database and ``user``."""
    return f"""
[[clusters.pools]]
name = "{name}"
db = "{APP_DB}"
user = "{user}"
size = {size}
mode = "{mode}"
{extra}
"""


def config_text(
    pg: PgServer, *pools: str, users: tuple[tuple[str, str], ...] = ((SCRAM_USER, SCRAM_PASSWORD),)
) -> str:
    """A whole config file: the test cluster, its users (SCRAM user by default), the given
    pools, no admin API."""
    accounts = "".join(
        f'\n[[clusters.users]]\nname = "{name}"\npassword = "{password}"\n'
        for name, password in users
    )
    return f"""
[proxy]
listen = "127.0.0.1:0"
shutdown_timeout = 5

[admin]
enabled = false

[[clusters]]
id = "{CLUSTER_ID}"
host = "{pg.host}"
port = {pg.port}
max_connections = 50
{accounts}{"".join(pools)}
"""
