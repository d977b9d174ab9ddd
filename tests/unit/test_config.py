"""Unit tests for loading and validating the TOML configuration."""

from __future__ import annotations

import copy
import os
import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from pyproxy.config import (
    AdminConfig,
    ClusterConfig,
    Config,
    PoolConfig,
    PoolSettings,
    ProxyConfig,
    check_budget,
    load_config,
    parse_config,
    parse_listen,
    pool_settings_from,
    validate_pool_name,
)
from pyproxy.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.toml"
CID = "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30"
CID2 = "0b3f1b8e-5d1c-4c55-9a57-1f2e3d4c5b6a"
TOKEN_ENV = {"PYPROXY_ADMIN_TOKEN": "tok"}


def minimal(**clusters: Any) -> dict[str, Any]:
    """A valid config: one cluster, one user, one pool (overridable)."""
    cluster: dict[str, Any] = {
        "id": CID,
        "users": [{"name": "doadmin", "password": "secret"}],
        "pools": [{"name": "backend-pool", "db": "defaultdb", "size": 10}],
    }
    cluster.update(clusters)
    return {"admin": {"token": "t"}, "clusters": [cluster]}


def errors_of(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=TOKEN_ENV if env is None else env)
    return str(info.value).splitlines()


def one_error(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    errs = errors_of(data, env)
    assert len(errs) == 1, errs
    return errs[0]


# --- the example file ---------------------------------------------------------------------


def test_example_file_loads_with_its_values() -> None:
    cfg = load_config(EXAMPLE, env=TOKEN_ENV)
    assert cfg.path == str(EXAMPLE)
    assert (cfg.proxy.listen_host, cfg.proxy.listen_port) == ("127.0.0.1", 6432)
    assert cfg.proxy.auth_type == "scram-sha-256"
    assert cfg.proxy.max_packet_size == 64 * 1024 * 1024
    assert cfg.proxy.defaults == PoolSettings()
    assert (cfg.admin.listen_host, cfg.admin.listen_port) == ("127.0.0.1", 8080)
    assert cfg.admin.token == "tok"
    assert cfg.admin.state_path == str(REPO / "pyproxy-state.db")
    (cluster,) = cfg.clusters
    assert cluster.id == CID
    assert (cluster.host, cluster.port, cluster.ram_gib, cluster.budget) == (
        "127.0.0.1",
        5432,
        4,
        97,
    )
    assert cluster.user("doadmin") is not None and cluster.user("doadmin").password == "secret"
    (pool,) = cluster.pools
    assert (pool.name, pool.db, pool.user, pool.size, pool.mode) == (
        "backend-pool",
        "defaultdb",
        "doadmin",
        10,
        "transaction",
    )
    assert pool.source == "config"
    assert pool.settings == PoolSettings()


def test_example_file_shows_every_key_with_its_default() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    proxy, defaults = ProxyConfig(), PoolSettings()
    for f in fields(PoolSettings):
        if f.name != "max_client_conn":  # in [proxy] that key is the proxy-wide limit
            assert data["proxy"][f.name] == getattr(defaults, f.name), f.name
    assert data["clusters"][0]["pools"][0]["max_client_conn"] == defaults.max_client_conn
    for f in fields(ProxyConfig):
        if f.name in ("client_tls", "server_tls"):
            tls = getattr(proxy, f.name)
            side = f.name.split("_")[0]
            assert data["proxy"][f"{side}_tls_sslmode"] == tls.mode
            for part in ("cert_file", "key_file", "ca_file", "protocols", "ciphers"):
                assert data["proxy"][f"{side}_tls_{part}"] == getattr(tls, part), part
        elif f.name not in ("listen_host", "listen_port", "defaults"):
            value = getattr(proxy, f.name)
            expected = list(value) if isinstance(value, tuple) else value
            assert data["proxy"][f.name] == expected, f.name
    assert data["proxy"]["listen"] == "127.0.0.1:6432"
    admin = AdminConfig()
    assert data["admin"] == {
        "enabled": admin.enabled,
        "listen": "127.0.0.1:8080",
        "token_env": "PYPROXY_ADMIN_TOKEN",
        "allow_no_token": admin.allow_no_token,
        "state_path": admin.state_path,
        "state_dsn": admin.state_dsn,
    }
    text = EXAMPLE.read_text()
    assert re.search(r'^# token = "', text, re.M)
    assert re.search(r'^# tls_cert_file = "', text, re.M)
    assert re.search(r'^# tls_key_file = "', text, re.M)
    assert re.search(r"^# max_connections = 97 ", text, re.M)


def test_example_file_needs_a_token() -> None:
    with pytest.raises(ConfigError, match=r"admin\.token: .*PYPROXY_ADMIN_TOKEN"):
        load_config(EXAMPLE, env={})


# --- defaults and inheritance -------------------------------------------------------------


def test_empty_config_gives_the_dataclass_defaults() -> None:
    cfg = parse_config({}, env={"PYPROXY_ADMIN_TOKEN": "tok"})
    assert cfg == Config(admin=AdminConfig(token="tok"))
    assert cfg.proxy == ProxyConfig()
    assert (cfg.admin.listen_host, cfg.admin.listen_port) == ("127.0.0.1", 8080)
    assert cfg.admin.state_path == "pyproxy-state.db"
    assert cfg.admin.state_dsn == ""


def test_state_dsn_is_kept_as_given() -> None:
    dsn = "postgresql://state:pw@db.internal:5432/pyproxy"
    cfg = parse_config({"admin": {"token": "t", "state_dsn": dsn}}, env={})
    assert cfg.admin.state_dsn == dsn


def test_pool_defaults() -> None:
    pool = parse_config(minimal(), env={}).clusters[0].pools[0]
    assert (pool.mode, pool.user, pool.settings) == ("transaction", "", PoolSettings())


def test_pool_overrides_inherit_the_rest_from_proxy() -> None:
    data = minimal()
    data["proxy"] = {"query_wait_timeout": 30, "server_reset_query": "", "max_client_conn": 500}
    data["clusters"][0]["pools"][0].update(query_wait_timeout=5, max_client_conn=50)
    cfg = parse_config(data, env={})
    assert cfg.proxy.max_client_conn == 500
    assert cfg.proxy.defaults.query_wait_timeout == 30.0
    assert cfg.proxy.defaults.max_client_conn == 0  # [proxy] value is the proxy-wide limit
    settings = cfg.clusters[0].pools[0].settings
    assert settings.query_wait_timeout == 5.0
    assert settings.max_client_conn == 50
    assert settings.server_reset_query == ""
    assert settings.server_lifetime == PoolSettings().server_lifetime


def test_pool_settings_from_applies_only_settings_keys() -> None:
    base = PoolSettings(query_timeout=7)
    got = pool_settings_from({"server_lifetime": 10, "name": "x"}, base, "p")
    assert got == PoolSettings(query_timeout=7, server_lifetime=10.0)
    with pytest.raises(ConfigError, match=r"^p\.query_timeout: must be a number of seconds >= 0"):
        pool_settings_from({"query_timeout": -1}, base, "p")


def test_auth_failure_keys_are_read_from_proxy() -> None:
    cfg = parse_config(
        {"proxy": {"auth_failure_limit": 0, "auth_failure_window": 2.5}}, env=TOKEN_ENV
    )
    assert (cfg.proxy.auth_failure_limit, cfg.proxy.auth_failure_window) == (0, 2.5)
    cfg = parse_config({"proxy": {"auth_failure_window": 30}}, env=TOKEN_ENV)
    assert cfg.proxy.auth_failure_window == 30.0 and type(cfg.proxy.auth_failure_window) is float
    assert cfg.proxy.auth_failure_limit == 10


def test_ints_are_accepted_as_durations_and_stored_as_floats() -> None:
    cfg = parse_config({"admin": {"enabled": False}, "proxy": {"query_timeout": 3}}, env={})
    assert cfg.proxy.defaults.query_timeout == 3.0
    assert isinstance(cfg.proxy.defaults.query_timeout, float)


# --- listen addresses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:6432", ("127.0.0.1", 6432)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:6432", ("::1", 6432)),
        ("[::]:5", ("::", 5)),
        ("localhost:6432", ("localhost", 6432)),
        ("db-1.example.com:65535", ("db-1.example.com", 65535)),
        (":6432", ("127.0.0.1", 6432)),
        ("6432", ("127.0.0.1", 6432)),
    ],
)
def test_parse_listen_accepts(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value, "proxy.listen") == expected


@pytest.mark.parametrize(
    "value",
    [
        "::1:6432",
        "[::1]",
        "[::1]6432",
        "[1.2.3.4]:1",
        "host:65536",
        "host:-1",
        "h st:1",
        "1.2.3.999:5",
        "host:",
        "",
        "-bad:1",
    ],
)
def test_parse_listen_rejects_naming_the_key(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^admin\.listen: "):
        parse_listen(value, "admin.listen")


def test_listen_error_in_config_names_the_key() -> None:
    data = minimal()
    data["proxy"] = {"listen": "::1:6432"}
    assert one_error(data).startswith('proxy.listen: put an IPv6 address in brackets, e.g. "[::1]')


# --- rules: each produces an error naming the key -----------------------------------------


def with_pool(**pool: Any) -> dict[str, Any]:
    data = minimal()
    data["clusters"][0]["pools"][0].update(pool)
    return data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"proxy": {"query_wait_timout": 1}},
            'proxy.query_wait_timout: unknown key; did you mean "query_wait_timeout"?',
        ),
        ({"proxy": {"zzz": 1}}, "proxy.zzz: unknown key; remove it"),
        ({"proxi": {}}, 'proxi: unknown key; did you mean "proxy"?'),
        (
            {"proxy": {"max_client_conn": True}},
            "proxy.max_client_conn: must be an integer >= 1, got true",
        ),
        (
            {"proxy": {"max_client_conn": 1.5}},
            "proxy.max_client_conn: must be an integer >= 1, got 1.5",
        ),
        ({"proxy": {"query_timeout": -1}}, "proxy.query_timeout: must be a number of seconds >= 0"),
        (
            {"proxy": {"query_timeout": "5s"}},
            'proxy.query_timeout: must be a number of seconds >= 0 (0 disables it), got "5s"',
        ),
        (
            {"proxy": {"query_timeout": float("inf")}},
            "proxy.query_timeout: must be a number of seconds",
        ),
        ({"proxy": {"query_timeout": False}}, "proxy.query_timeout: must be a number of seconds"),
        (
            {"proxy": {"auth_type": "scram"}},
            'proxy.auth_type: must be one of trust, md5, scram-sha-256, got "scram"',
        ),
        (
            {"proxy": {"session_state": "warning"}},
            'proxy.session_state: must be one of pin, warn, error, allow, got "warning" '
            '(did you mean "warn"?)',
        ),
        ({"proxy": {"min_pool_size": -1}}, "proxy.min_pool_size: must be an integer >= 0, got -1"),
        (
            {"proxy": {"auth_failure_limit": -1}},
            "proxy.auth_failure_limit: must be an integer >= 0, got -1",
        ),
        (
            {"proxy": {"auth_failure_limit": 2.5}},
            "proxy.auth_failure_limit: must be an integer >= 0, got 2.5",
        ),
        (
            {"proxy": {"auth_failure_window": 0}},
            "proxy.auth_failure_window: must be a number of seconds > 0, got 0",
        ),
        (
            {"proxy": {"auth_failure_window": "1m"}},
            'proxy.auth_failure_window: must be a number of seconds > 0, got "1m"',
        ),
        (
            {"proxy": {"auth_failure_window": float("nan")}},
            "proxy.auth_failure_window: must be a number of seconds > 0",
        ),
        (
            {"proxy": {"max_packet_size": 10}},
            "proxy.max_packet_size: must be an integer >= 1024, got 10",
        ),
        (
            {"proxy": {"track_extra_parameters": "IntervalStyle"}},
            "proxy.track_extra_parameters: must be an array of parameter names",
        ),
        ({"proxy": {"server_reset_query": 1}}, "proxy.server_reset_query: must be a string, got 1"),
        ({"proxy": []}, "proxy: must be a table ([proxy]), got []"),
        (
            {"admin": {"token": "t", "enabled": "yes"}},
            'admin.enabled: must be true or false, got "yes"',
        ),
        ({"admin": {"token": ""}}, 'admin.token: must be a non-empty string, got ""'),
        (
            {"admin": {"token": "t", "state_path": ""}},
            "admin.state_path: must be a non-empty string",
        ),
        (
            {"admin": {"token": "t", "state_dsn": "host=db user=x"}},
            "admin.state_dsn: must be a postgresql:// URL (or empty for the SQLite state_path), "
            'got "host=db user=x"',
        ),
        (
            {"admin": {"token": "t", "listen": "[::1]:99999"}},
            "admin.listen: the port must be a number 0..65535",
        ),
        (
            {"admin": {"token": "t", "tokn_env": "X"}},
            'admin.tokn_env: unknown key; did you mean "token_env"?',
        ),
        ({"clusters": {}}, "clusters: must be an array of tables ([[clusters]]), got a table"),
        ({"clusters": [1]}, "clusters[0]: must be a table, got 1"),
    ],
)
def test_top_level_rules(data: dict[str, Any], expected: str) -> None:
    data = {"admin": {"token": "t"}} | data
    assert one_error(data).startswith(expected)


CLUSTER_CASES = [
    (
        {"id": "not-a-uuid"},
        'clusters[0].id: must be a UUID like "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30", '
        'got "not-a-uuid"',
    ),
    ({"id": 7}, "clusters[0].id: must be a UUID"),
    ({"port": 0}, "clusters[0].port: must be an integer 1..65535, got 0"),
    ({"port": 65536}, "clusters[0].port: must be an integer 1..65535, got 65536"),
    ({"host": "bad host"}, 'clusters[0].host: must be an IP address or host name, got "bad host"'),
    ({"ram_gib": 0}, "clusters[0].ram_gib: must be a number >= 0.16"),
    ({"ram_gib": True}, "clusters[0].ram_gib: must be a number >= 0.16"),
    ({"max_connections": 0}, "clusters[0].max_connections: must be an integer >= 1, got 0"),
    (
        {"ram_gib": 4, "max_connections": 97},
        "clusters[0]: set either ram_gib or max_connections, not both",
    ),
    ({"pool": []}, 'clusters[0].pool: unknown key; did you mean "pools"?'),
    (
        {"users": [{"name": "a", "password": "x"}, {"name": "a", "password": "y"}]},
        'clusters[0].users[1].name: user "a" is listed twice',
    ),
    ({"users": [{"password": "x"}]}, "clusters[0].users[0].name: required"),
    (
        {"users": [{"name": "doadmin"}]},
        'clusters[0].users[0].password: required (the password of user "doadmin")',
    ),
    (
        {"users": [{"name": "doadmin", "password": "x", "pasword": 1}]},
        'clusters[0].users[0].pasword: unknown key; did you mean "password"?',
    ),
]


@pytest.mark.parametrize(("cluster", "expected"), CLUSTER_CASES)
def test_cluster_rules(cluster: dict[str, Any], expected: str) -> None:
    assert one_error(minimal(**cluster)).startswith(expected)


def test_missing_cluster_id_is_required() -> None:
    data = minimal()
    del data["clusters"][0]["id"]
    assert one_error(data).startswith("clusters[0].id: required; set it to the cluster's UUID")


def test_cluster_ids_are_unique_ignoring_case() -> None:
    data = minimal()
    data["clusters"].append({"id": CID.upper()})
    assert one_error(data) == (
        f"clusters[1].id: {CID} is already used by clusters[0].id; ids must be unique"
    )


def test_any_uuid_version_is_accepted() -> None:
    data = minimal(id="00000000-0000-0000-0000-000000000000")
    assert parse_config(data, env={}).clusters[0].id == "00000000-0000-0000-0000-000000000000"


POOL_CASES = [
    ({"size": 0}, "clusters[0].pools[0].size: must be an integer >= 1, got 0"),
    ({"size": True}, "clusters[0].pools[0].size: must be an integer >= 1, got true"),
    ({"size": 2.0}, "clusters[0].pools[0].size: must be an integer >= 1, got 2.0"),
    (
        {"mode": "sesion"},
        "clusters[0].pools[0].mode: must be one of session, transaction, statement, "
        'got "sesion" (did you mean "session"?)',
    ),
    (
        {"user": "bob"},
        'clusters[0].pools[0].user: "bob" is not a user of this cluster (users: doadmin)',
    ),
    ({"db": ""}, 'clusters[0].pools[0].db: must be a non-empty string, got ""'),
    ({"name": ""}, "clusters[0].pools[0].name: must be 1 to 63 bytes (a PostgreSQL database name)"),
    ({"name": "x" * 64}, "clusters[0].pools[0].name: must be 1 to 63 bytes"),
    ({"name": "caf\u00e9" + "x" * 59}, "clusters[0].pools[0].name: must be 1 to 63 bytes"),
    (
        {"query_wait_timeout": -5},
        "clusters[0].pools[0].query_wait_timeout: must be a number of seconds >= 0",
    ),
    (
        {"min_pool_size": 11},
        "clusters[0].pools[0].min_pool_size: min_pool_size 11 is larger than size 10",
    ),
    (
        {"max_client_conn": -1},
        "clusters[0].pools[0].max_client_conn: must be an integer >= 0, got -1",
    ),
    ({"sizee": 3}, 'clusters[0].pools[0].sizee: unknown key; did you mean "size"?'),
]


@pytest.mark.parametrize(("pool", "expected"), POOL_CASES)
def test_pool_rules(pool: dict[str, Any], expected: str) -> None:
    assert one_error(with_pool(**pool)).startswith(expected)


@pytest.mark.parametrize("key", ["name", "db", "size"])
def test_pool_keys_are_required(key: str) -> None:
    data = minimal()
    del data["clusters"][0]["pools"][0][key]
    assert one_error(data).startswith(f"clusters[0].pools[0].{key}: required; ")


def test_pool_user_may_be_empty_or_a_cluster_user() -> None:
    assert parse_config(with_pool(user=""), env={}).clusters[0].pools[0].user == ""
    assert parse_config(with_pool(user="doadmin"), env={}).clusters[0].pools[0].user == "doadmin"


def test_min_pool_size_inherited_from_proxy_is_checked_against_size() -> None:
    data = with_pool(size=2)
    data["proxy"] = {"min_pool_size": 3}
    assert one_error(data).startswith(
        "clusters[0].pools[0].min_pool_size: min_pool_size (from [proxy]) 3 is larger than size 2"
    )


def test_pool_names_are_unique_across_the_proxy() -> None:
    data = minimal()
    other = {"id": CID2, "pools": [{"name": "backend-pool", "db": "x", "size": 1}]}
    data["clusters"].append(other)
    assert one_error(data) == (
        'clusters[1].pools[0].name: pool "backend-pool" is already defined at '
        "clusters[0].pools[0].name"
    )


def test_no_clusters_is_allowed() -> None:
    assert parse_config({"admin": {"token": "t"}}, env={}).clusters == ()


def test_several_errors_are_reported_together() -> None:
    data = with_pool(size=0, mode="x")
    data["proxy"] = {"auth_type": "plain", "bogus": 1}
    errs = errors_of(data)
    assert len(errs) == 4, errs
    assert [e.split(":")[0] for e in errs] == [
        "proxy.bogus",
        "proxy.auth_type",
        "clusters[0].pools[0].size",
        "clusters[0].pools[0].mode",
    ]


# --- admin token ----------------------------------------------------------------------------


def test_token_is_read_from_the_default_env_variable() -> None:
    cfg = parse_config({}, env={"PYPROXY_ADMIN_TOKEN": "from-env"})
    assert cfg.admin.token == "from-env"


def test_token_env_names_the_variable() -> None:
    cfg = parse_config({"admin": {"token_env": "MY_TOKEN"}}, env={"MY_TOKEN": "abc"})
    assert cfg.admin.token == "abc"


def test_token_given_directly_wins_over_env() -> None:
    cfg = parse_config({"admin": {"token": "direct"}}, env={"PYPROXY_ADMIN_TOKEN": "env"})
    assert cfg.admin.token == "direct"


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPROXY_TEST_TOKEN_VAR", "osenv")
    cfg = parse_config({"admin": {"token_env": "PYPROXY_TEST_TOKEN_VAR"}})
    assert cfg.admin.token == "osenv"


def test_missing_token_is_refused_with_the_ways_out() -> None:
    err = one_error({"admin": {"token_env": "MY_TOKEN"}}, env={"MY_TOKEN": ""})
    assert err.startswith(
        "admin.token: the admin API needs a token: set the environment variable MY_TOKEN"
    )
    assert "allow_no_token = true" in err and "admin.enabled = false" in err


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "127.1.2.3:0", "[::1]:8080", "localhost:1"])
def test_allow_no_token_on_loopback(listen: str) -> None:
    cfg = parse_config({"admin": {"listen": listen, "allow_no_token": True}}, env={})
    assert cfg.admin.token is None and cfg.admin.allow_no_token


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "10.0.0.1:8080", "example.com:80"])
def test_allow_no_token_refused_off_loopback(listen: str) -> None:
    err = one_error({"admin": {"listen": listen, "allow_no_token": True}}, env={})
    assert err.startswith(
        "admin.allow_no_token: only allowed when admin.listen is a loopback address"
    )


def test_disabled_admin_needs_no_token() -> None:
    cfg = parse_config({"admin": {"enabled": False, "listen": "0.0.0.0:80"}}, env={})
    assert cfg.admin.enabled is False and cfg.admin.token is None


# --- state_path -------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "conf" / "pyproxy.toml"
    path.parent.mkdir()
    path.write_text(text)
    return path


def test_relative_state_path_is_resolved_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, '[admin]\ntoken = "t"\nstate_path = "data/../state.db"\n')
    cfg = load_config(os.path.relpath(path), env={})
    assert cfg.admin.state_path == str(tmp_path / "conf" / "state.db")
    assert cfg.path == str(path)


def test_absolute_and_memory_state_paths_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.db"
    cfg = load_config(write(tmp_path, f'[admin]\ntoken = "t"\nstate_path = "{target}"\n'), env={})
    assert cfg.admin.state_path == str(target)
    cfg = parse_config({"admin": {"token": "t", "state_path": ":memory:"}}, path=str(target))
    assert cfg.admin.state_path == ":memory:"


def test_state_path_without_a_config_file_is_left_as_given() -> None:
    cfg = parse_config({"admin": {"token": "t", "state_path": "s.db"}}, env={})
    assert cfg.admin.state_path == "s.db"


# --- file errors --------------------------------------------------------------------------


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[proxy\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not valid TOML"):
        load_config(path, env={})


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: cannot read the config file"):
        load_config(path, env={})


# --- budget --------------------------------------------------------------------------------


def pools_of(*sizes: int) -> list[PoolConfig]:
    return [PoolConfig(name=f"pool{i}", db="d", size=s) for i, s in enumerate(sizes)]


def test_budget_from_ram_gib() -> None:
    cluster = ClusterConfig(id=CID, ram_gib=4)
    assert check_budget(cluster, pools_of(90, 7)) is None
    msg = check_budget(cluster, pools_of(100, 20))
    assert msg is not None
    assert msg.startswith(
        f"cluster {CID}: pools need 120 server connections "
        "but the budget is 97 (25 * ram_gib 4 - 3)"
    )


def test_budget_from_max_connections_and_default() -> None:
    msg = check_budget(ClusterConfig(id=CID, max_connections=5), pools_of(3, 3))
    assert (
        msg is not None
        and "need 6 server connections but the budget is 5 (max_connections 5)" in msg
    )
    msg = check_budget(ClusterConfig(id=CID), pools_of(23))
    assert msg is not None and "budget is 22 (25 * ram_gib 1 - 3; ram_gib defaults to 1)" in msg


def test_budget_is_checked_when_loading() -> None:
    data = minimal(ram_gib=4)
    data["clusters"][0]["pools"] = [
        {"name": "one-pool", "db": "d", "size": 100},
        {"name": "two-pool", "db": "d", "size": 20},
    ]
    err = one_error(data)
    assert err.startswith(f"clusters[0].pools: cluster {CID}: pools need 120 server connections")
    assert "budget is 97 (25 * ram_gib 4 - 3)" in err


def test_fractional_ram_gib() -> None:
    pools = [{"name": "big", "db": "d", "size": 9}]
    cluster = parse_config(minimal(ram_gib=0.5, pools=pools), env={}).clusters[0]
    assert cluster.budget == 9
    pools[0]["size"] = 10
    err = one_error(minimal(ram_gib=0.5, pools=pools))
    assert "budget is 9 (25 * ram_gib 0.5 - 3)" in err
    assert err.endswith(
        "make the pool sizes add up to at most 9 or raise ram_gib / max_connections"
    )


# --- pool names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abc", "a" * 60, "backend-pool", "db_1.v2", "_x_", "123", "A-B"])
def test_valid_pool_names(name: str) -> None:
    assert validate_pool_name(name) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ab", "must be 3 to 60 characters long, got 2"),
        ("a" * 61, "must be 3 to 60 characters long, got 61"),
        ("", "must be 3 to 60 characters long, got 0"),
        ("has space", "may contain only"),
        ("a/b/c", "may contain only"),
        ("nul\x00x", "may contain only"),
        ("tab\tx", "may contain only"),
        ("-dash", "may contain only"),
        (".dot", "may contain only"),
        ("caf\u00e9", "may contain only"),
        ("semi;colon", "may contain only"),
        (123, "must be a string, got 123"),
        (None, "must be a string, got None"),
    ],
)
def test_invalid_pool_names(name: object, expected: str) -> None:
    msg = validate_pool_name(name)
    assert msg is not None and msg.startswith(expected)


def test_input_mapping_is_not_modified() -> None:
    data = with_pool(query_wait_timeout=1)
    before = copy.deepcopy(data)
    parse_config(data, env={})
    assert data == before


@pytest.mark.parametrize("name", ["db", "a", "bad/name", "My DB", "caf\u00e9", "x" * 63])
def test_config_pools_take_any_database_name_postgresql_accepts(name: str) -> None:
    """PgBouncer [databases] entries move over unchanged; the API keeps its 3..60 rule."""
    cfg = parse_config(with_pool(name=name))
    assert [p.name for p in cfg.clusters[0].pools] == [name]
    assert validate_pool_name(name) is not None or 3 <= len(name) <= 60


def test_replay_parameters_is_gone_and_says_what_replaced_it() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"proxy": {"replay_parameters": ["search_path"]}, "admin": {"token": "t"}})
    assert "replay_exclude" in str(info.value)
    cfg = parse_config({"proxy": {"replay_exclude": ["Work_Mem"]}, "admin": {"token": "t"}})
    assert cfg.proxy.replay_exclude == ("Work_Mem",)


def test_session_state_defaults_by_pool_mode() -> None:
    assert PoolSettings().session_state == ""
    cfg = parse_config({"proxy": {"session_state": "pin"}, "admin": {"token": "t"}})
    assert cfg.proxy.defaults.session_state == "pin"
