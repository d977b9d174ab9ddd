"""Readers for TOML values: each checks one key's type and range, and on a problem records an
error that names the key and returns the default."""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "a table"
    return repr(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_keys(t: Mapping[str, Any], allowed: Iterable[str], prefix: str, errs: list[str]) -> None:
    allowed = sorted(allowed)
    for k in t:
        if k in allowed:
            continue
        close = difflib.get_close_matches(str(k), allowed, n=1)
        hint = f'did you mean "{close[0]}"?' if close else "remove it"
        errs.append(f"{_key(prefix, str(k))}: unknown key; {hint}")


def _table(t: Mapping[str, Any], name: str, prefix: str, errs: list[str]) -> Mapping[str, Any]:
    value = t.get(name, {})
    if not isinstance(value, Mapping):
        errs.append(f"{_key(prefix, name)}: must be a table ([{name}]), got {_show(value)}")
        return {}
    return value


def _array_of_tables(
    value: object, key: str, errs: list[str]
) -> Iterator[tuple[int, Mapping[str, Any]]]:
    if not isinstance(value, list):
        errs.append(f"{key}: must be an array of tables ([[{key}]]), got {_show(value)}")
        return
    for i, item in enumerate(value):
        if isinstance(item, Mapping):
            yield i, item
        else:
            errs.append(f"{key}[{i}]: must be a table, got {_show(item)}")


def _int(
    t: Mapping[str, Any],
    name: str,
    prefix: str,
    default: Any,
    minimum: int,
    errs: list[str],
    maximum: int | None = None,
) -> Any:
    if name not in t:
        return default
    value = t[name]
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if ok and (maximum is None or value <= maximum):
        return value
    bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
    errs.append(f"{_key(prefix, name)}: must be an integer {bound}, got {_show(value)}")
    return default


def _duration(
    t: Mapping[str, Any], name: str, prefix: str, default: float, errs: list[str]
) -> float:
    if name not in t:
        return default
    value = t[name]
    if _is_number(value) and math.isfinite(value) and value >= 0:
        return float(value)
    errs.append(
        f"{_key(prefix, name)}: must be a number of seconds >= 0 (0 disables it), "
        f"got {_show(value)}"
    )
    return default


def _window(t: Mapping[str, Any], name: str, prefix: str, default: float, errs: list[str]) -> float:
    """A span of time that cannot be turned off: a number of seconds > 0."""
    if name not in t:
        return default
    value = t[name]
    if _is_number(value) and math.isfinite(value) and value > 0:
        return float(value)
    errs.append(f"{_key(prefix, name)}: must be a number of seconds > 0, got {_show(value)}")
    return default


def _bool(t: Mapping[str, Any], name: str, prefix: str, default: bool, errs: list[str]) -> bool:
    if name not in t:
        return default
    value = t[name]
    if isinstance(value, bool):
        return value
    errs.append(f"{_key(prefix, name)}: must be true or false, got {_show(value)}")
    return default


def _string(
    t: Mapping[str, Any],
    name: str,
    prefix: str,
    default: Any,
    errs: list[str],
    nonempty: bool = False,
) -> Any:
    if name not in t:
        return default
    value = t[name]
    if isinstance(value, str) and "\x00" not in value and (value or not nonempty):
        return value
    what = "a non-empty string" if nonempty else "a string"
    errs.append(f"{_key(prefix, name)}: must be {what}, got {_show(value)}")
    return default


def _required_string(
    t: Mapping[str, Any], name: str, prefix: str, errs: list[str], hint: str
) -> str | None:
    if name not in t:
        errs.append(f"{_key(prefix, name)}: required; {hint}")
        return None
    return _string(t, name, prefix, None, errs, nonempty=True)


def _choice(
    t: Mapping[str, Any],
    name: str,
    prefix: str,
    default: str,
    choices: tuple[str, ...],
    errs: list[str],
) -> str:
    if name not in t:
        return default
    value = t[name]
    if isinstance(value, str) and value in choices:
        return value
    msg = f"{_key(prefix, name)}: must be one of {', '.join(choices)}, got {_show(value)}"
    close = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
    errs.append(msg + (f' (did you mean "{close[0]}"?)' if close else ""))
    return default


def _names(
    t: Mapping[str, Any], name: str, prefix: str, default: tuple[str, ...], errs: list[str]
) -> tuple[str, ...]:
    if name not in t:
        return default
    value = t[name]
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(value)
    errs.append(
        f"{_key(prefix, name)}: must be an array of parameter names, e.g. "
        f'["IntervalStyle"], got {_show(value)}'
    )
    return default


def _user_list(
    t: Mapping[str, Any], name: str, prefix: str, default: tuple[str, ...], errs: list[str]
) -> tuple[str, ...]:
    """User names as an array of strings or PgBouncer's comma-separated string."""
    if name not in t:
        return default
    value = t[name]
    if isinstance(value, str) and "\x00" not in value:
        return tuple(n.strip() for n in value.split(",") if n.strip())
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(v.strip() for v in value)
    errs.append(
        f'{_key(prefix, name)}: must be an array of user names, e.g. ["admin"], or a '
        f'comma-separated string, e.g. "admin, ops", got {_show(value)}'
    )
    return default


# --- addresses ------------------------------------------------------------------------------


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def _is_host(host: object) -> bool:
    """An IPv4/IPv6 literal or a DNS host name (RFC 1123 labels)."""
    if not isinstance(host, str) or not host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return True
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or all(label.isdigit() for label in labels):
        return False  # an all-numeric name is a malformed IPv4 address
    return all(_HOST_LABEL_RE.fullmatch(label) for label in labels)


def _is_loopback(host: str) -> bool:
    if host.lower().removesuffix(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
