"""[[clusters.users]] and the auth_query keys: stored secrets (plaintext, SCRAM verifier, md5
hash, from the file or the environment) and who looks up the users the file does not list."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from pyproxy.config.fields import (
    _array_of_tables,
    _check_keys,
    _duration,
    _required_string,
    _show,
    _string,
)
from pyproxy.config.model import ProxyConfig, UserConfig

USER_KEYS = frozenset({"name", "password", "password_env"})
PROXY_AUTH_KEYS = frozenset({"auth_user", "auth_query", "auth_dbname", "auth_cache_seconds"})
CLUSTER_AUTH_KEYS = frozenset({"auth_user", "auth_query", "auth_dbname"})
_VERIFIER = re.compile(r"SCRAM-SHA-256\$([0-9]{1,10}):([^$:]+)\$([^$:]+):([^$:]+)")


def verifier_problem(value: str) -> str | None:
    """Why ``value``, which starts like a SCRAM verifier, is not one (None when it is)."""
    found = _VERIFIER.fullmatch(value)
    if found is None:
        return "looks like a SCRAM verifier but is not SCRAM-SHA-256$<iter>:<salt>$<key>:<key>"
    try:
        salt, *keys = (base64.b64decode(found.group(i), validate=True) for i in (2, 3, 4))
    except (binascii.Error, ValueError):
        return "looks like a SCRAM verifier but its salt or keys are not base64"
    if int(found.group(1)) < 1 or not salt or any(len(k) != 32 for k in keys):
        return "looks like a SCRAM verifier but its iteration count, salt or key lengths are wrong"
    return None


def parse_users(
    value: object, prefix: str, env: Mapping[str, str], errs: list[str]
) -> tuple[UserConfig, ...]:
    users: dict[str, UserConfig] = {}
    for j, t in _array_of_tables(value, f"{prefix}.users", errs):
        key = f"{prefix}.users[{j}]"
        _check_keys(t, USER_KEYS, key, errs)
        name = _required_string(t, "name", key, errs, "the user name on the server")
        password = _password(t, key, name, env, errs)
        if name is None:
            continue
        if name in users:
            errs.append(f"{key}.name: user {_show(name)} is listed twice in {prefix}.users")
            continue
        users[name] = UserConfig(name, password or "", t.get("password_env", "") or "")
    return tuple(users.values())


def _password(
    t: Mapping[str, Any], key: str, name: str | None, env: Mapping[str, str], errs: list[str]
) -> str | None:
    if "password" in t and "password_env" in t:
        errs.append(f"{key}: set either password or password_env, not both")
        return None
    if "password_env" in t:
        var = _string(t, "password_env", key, None, errs, nonempty=True)
        if var is None:
            return None
        password = env.get(var)
        if not password:
            errs.append(
                f"{key}.password_env: the environment variable {var} is not set or empty "
                f"(it holds the password, SCRAM verifier or md5 hash of user {_show(name)})"
            )
            return None
        where = f"{key}.password_env ({var})"
    elif "password" in t:
        password = t["password"]
        if not isinstance(password, str) or "\x00" in password:
            errs.append(f"{key}.password: must be a string (the value is not shown)")
            return None
        where = f"{key}.password"
    else:
        errs.append(
            f"{key}.password: required (the password of user {_show(name)}); or its SCRAM "
            "verifier or md5 hash; or password_env, an environment variable holding one"
        )
        return None
    if password is not None and password.startswith("SCRAM-SHA-256$"):
        problem = verifier_problem(password)
        if problem:
            errs.append(f"{where}: {problem}")  # the value itself is never shown
            return None
    return password


def parse_proxy_auth(t: Mapping[str, Any], errs: list[str]) -> dict[str, Any]:
    """The [proxy] auth_query keys, as ProxyConfig keywords."""
    d = ProxyConfig()
    return {
        "auth_user": _string(t, "auth_user", "proxy", d.auth_user, errs),
        "auth_query": _query(t, "proxy", d.auth_query, errs),
        "auth_dbname": _string(t, "auth_dbname", "proxy", d.auth_dbname, errs),
        "auth_cache_seconds": _duration(
            t, "auth_cache_seconds", "proxy", d.auth_cache_seconds, errs
        ),
    }


def parse_cluster_auth(
    t: Mapping[str, Any],
    prefix: str,
    proxy: ProxyConfig,
    users: tuple[UserConfig, ...],
    errs: list[str],
) -> dict[str, Any]:
    """A cluster's auth_user/auth_query/auth_dbname (its own, else [proxy]'s), as
    ClusterConfig keywords; auth_user must be one of the cluster's users."""
    auth_user = _string(t, "auth_user", prefix, proxy.auth_user, errs)
    if auth_user and auth_user not in {u.name for u in users}:
        origin = f"{prefix}.auth_user" if "auth_user" in t else f"proxy.auth_user (for {prefix})"
        errs.append(
            f"{origin}: {_show(auth_user)} is not a user of this cluster; add it under "
            "[[clusters.users]] with the password pyproxy logs in with to run auth_query"
        )
    return {
        "auth_user": auth_user,
        "auth_query": _query(t, prefix, proxy.auth_query, errs),
        "auth_dbname": _string(t, "auth_dbname", prefix, proxy.auth_dbname, errs),
    }


def _query(t: Mapping[str, Any], prefix: str, default: str, errs: list[str]) -> str:
    query = _string(t, "auth_query", prefix, default, errs, nonempty=True)
    if "$1" not in query:
        errs.append(
            f"{prefix}.auth_query: must use $1 for the user name, e.g. "
            "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"
        )
    return str(query)
