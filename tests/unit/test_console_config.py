"""Console and logging keys of [proxy]: admin_users/stats_users as a list or PgBouncer's
comma-separated string, log_format, stats_period."""

from __future__ import annotations

import pytest

from pyproxy.config import parse_config, validate_pool_name
from pyproxy.errors import ConfigError

ADMIN_OFF = {"enabled": False}


def proxy(**keys: object):  # type: ignore[no-untyped-def]
    return parse_config({"proxy": keys, "admin": ADMIN_OFF}).proxy


def test_user_lists_take_an_array_or_a_comma_separated_string() -> None:
    cfg = proxy(admin_users="admin, ops,,", stats_users=["grafana", "exporter"])
    assert cfg.admin_users == ("admin", "ops")
    assert cfg.stats_users == ("grafana", "exporter")
    assert proxy().admin_users == () and proxy().stats_users == ()


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("admin_users", 3, "array of user names"),
        ("stats_users", ["ok", ""], "comma-separated"),
        ("log_format", "xml", "text, json"),
        ("stats_period", -1, "seconds >= 0"),
    ],
)
def test_bad_values_name_the_key(key: str, value: object, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        proxy(**{key: value})
    assert f"proxy.{key}" in str(err.value) and words in str(err.value)


def test_logging_defaults_follow_pgbouncer() -> None:
    cfg = proxy()
    assert (cfg.log_format, cfg.stats_period) == ("text", 60.0)
    assert proxy(log_format="json", stats_period=0).stats_period == 0


@pytest.mark.parametrize("name", ["pgbouncer", "pyproxy"])
def test_the_console_names_are_no_pool_names(name: str) -> None:
    cluster = {"id": "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30", "max_connections": 10,
               "pools": [{"name": name, "db": "app", "size": 1, "user": "u"}],
               "users": [{"name": "u", "password": "p"}]}  # fmt: skip
    with pytest.raises(ConfigError) as err:
        parse_config({"admin": ADMIN_OFF, "clusters": [cluster]})
    assert "admin console" in str(err.value)
    assert validate_pool_name(name) is not None and "admin console" in str(validate_pool_name(name))
