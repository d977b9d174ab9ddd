"""Pool request bodies and pool objects of the admin API: JSON parsing, field checks, the
``connection`` object."""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import quote, urlsplit

from pyproxy.admin.http_messages import Request
from pyproxy.config import MODES, ClusterConfig, PoolConfig, validate_pool_name

IDENT_MAX_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


class Unprocessable(Exception):
    """A request that is well-formed but cannot be applied (answered 422)."""


class BadRequest(Exception):
    """A request body that cannot be read as a JSON object (answered 400)."""


def connection_info(
    database: str, host: str, port: int, user: str, password: str | None, ssl: bool = False
) -> dict[str, Any]:
    """The pool's ``connection`` object; user/password only when known; ``ssl``: clients may
    (and should) connect with TLS."""
    url_host = host
    try:
        if ipaddress.ip_address(host).version == 6:
            url_host = f"[{host}]"
    except ValueError:
        pass
    userinfo = ""
    if user:
        userinfo = quote(user, safe="")
        if password is not None:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    sslmode = "require" if ssl else "disable"
    uri = f"postgresql://{userinfo}{url_host}:{port}/{quote(database, safe='')}?sslmode={sslmode}"
    info: dict[str, Any] = {"uri": uri, "database": database, "host": host, "port": port}
    if user:
        info["user"] = user
    if password is not None:
        info["password"] = password
    info["ssl"] = ssl
    return info


def target_path(target: str) -> str:
    """The path of a request target (origin or absolute form), query dropped."""
    if target.startswith("/"):
        return target.split("?", 1)[0].split("#", 1)[0]
    if target.lower().startswith(("http://", "https://")):
        return urlsplit(target).path or "/"
    raise ValueError(target)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_object(req: Request) -> dict[str, Any]:
    ctype = (req.header("content-type") or "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        raise BadRequest("Content-Type must be application/json")
    if not req.body.strip():
        raise BadRequest("a JSON request body is required")
    try:
        body = json.loads(req.body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest(f"error parsing request body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def refuse_config_pool(pool: PoolConfig, verb: str) -> None:
    if pool.source == "config":
        raise Unprocessable(
            f"pool {pool.name!r} is defined in the configuration file and cannot be {verb} "
            "through the API; edit the configuration file instead"
        )


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a pool name (it is the database name clients connect to)."""
    problem = validate_pool_name(name)
    return None if problem is None else f"name {problem}"


def check_fields(body: dict[str, Any], cluster: ClusterConfig, *, creating: bool) -> dict[str, Any]:
    """Required fields, JSON types and values; raise Unprocessable naming every problem."""
    required = ("name", "mode", "size", "db") if creating else ("mode", "size", "db")
    missing = [f for f in required if f not in body]
    problems: list[str] = []
    if missing:
        problems.append(f"missing required field(s): {', '.join(missing)}")
    for key in (*required, "user"):
        if key not in body:
            continue
        value = body[key]
        ok = type(value) is int if key == "size" else isinstance(value, str)
        if not ok:
            want = "an integer" if key == "size" else "a string"
            problems.append(f"{key} must be {want} (got {_json_type(value)})")
    if problems:
        raise Unprocessable("; ".join(problems))
    user = body.get("user", "")
    if creating and (problem := name_problem(body["name"])):
        problems.append(problem)
    if body["mode"] not in MODES:
        problems.append(f"mode must be one of {', '.join(MODES)} (got {body['mode']!r})")
    if body["size"] < 1:
        problems.append(f"size must be at least 1 (got {body['size']})")
    db: str = body["db"]
    if not db:
        problems.append("db must name a database (got an empty string)")
    elif "\x00" in db or len(db.encode()) > IDENT_MAX_BYTES:
        problems.append(f"db must be at most {IDENT_MAX_BYTES} bytes with no NUL character")
    if user and cluster.user(user) is None:
        known = ", ".join(u.name for u in cluster.users) or "none"
        problems.append(
            f"user {user!r} is not configured for cluster {cluster.id} (configured users: "
            f"{known}); leave user empty to connect as each client's own user"
        )
    if problems:
        raise Unprocessable("; ".join(problems))
    return {**body, "user": user}
