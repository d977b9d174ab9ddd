"""TLS keys checked at load: modes known, files there and readable, key matching certificate,
verify-* with a CA, admin pair complete; every error names its key. The running contexts keep
their predecessor when a file is broken at reload."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyproxy.config import parse_config
from pyproxy.errors import ConfigError
from pyproxy.tls.contexts import TlsFiles
from pyproxy.tls.live import LiveTls
from tests.support.tls_pg import CertPair, TestCA

CID = "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestCA]:
    yield TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def pair(ca: TestCA) -> CertPair:
    return ca.server_pair(stem="unit")


def load(proxy: dict[str, Any], cluster: dict[str, Any] | None = None, **more: Any) -> Any:
    data = {
        "proxy": proxy,
        "admin": {"enabled": False},
        "clusters": [{"id": CID, "max_connections": 10, **(cluster or {})}],
        **more,
    }
    return parse_config(data, env={})


def errors(proxy: dict[str, Any], cluster: dict[str, Any] | None = None, **more: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(proxy, cluster, **more)
    return str(caught.value)


def test_defaults_are_client_disable_and_server_prefer() -> None:
    cfg = load({})
    assert cfg.proxy.client_tls.mode == "disable"
    assert cfg.proxy.server_tls.mode == "prefer"
    assert cfg.clusters[0].server_tls.mode == "prefer"


def test_unknown_mode_and_protocols_name_the_key(pair: CertPair) -> None:
    text = errors({"client_tls_sslmode": "required", "server_tls_sslmode": "verify_full"})
    assert "proxy.client_tls_sslmode:" in text and "proxy.server_tls_sslmode:" in text
    text = errors(
        {"client_tls_sslmode": "require", "client_tls_cert_file": str(pair.cert),
         "client_tls_key_file": str(pair.key), "client_tls_protocols": "tls1.3"}
    )  # fmt: skip
    assert "proxy.client_tls_protocols: unknown tls1.3" in text


def test_require_needs_a_certificate_and_a_key_that_exist(tmp_path: Path) -> None:
    text = errors({"client_tls_sslmode": "require"})
    assert "proxy.client_tls_cert_file: required with client_tls_sslmode = 'require'" in text
    missing = tmp_path / "nope.crt"
    text = errors(
        {"client_tls_sslmode": "prefer", "client_tls_cert_file": str(missing),
         "client_tls_key_file": str(missing)}
    )  # fmt: skip
    assert f"proxy.client_tls_cert_file: {missing}: no such file" in text


def test_a_key_that_does_not_match_the_certificate_is_refused(ca: TestCA, pair: CertPair) -> None:
    other = ca.server_pair(stem="other")
    text = errors(
        {"client_tls_sslmode": "require", "client_tls_cert_file": str(pair.cert),
         "client_tls_key_file": str(other.key)}
    )  # fmt: skip
    assert f"proxy.client_tls_key_file: {other.key}: does not match the certificate" in text


def test_verify_modes_need_a_ca_and_clusters_override_server_keys(
    ca: TestCA, pair: CertPair
) -> None:
    text = errors(
        {"client_tls_sslmode": "verify-full", "client_tls_cert_file": str(pair.cert),
         "client_tls_key_file": str(pair.key)}
    )  # fmt: skip
    assert "proxy.client_tls_ca_file: required for verify-ca and verify-full" in text
    text = errors({}, {"server_tls_sslmode": "verify-ca"})
    assert "clusters[0].server_tls_ca_file: required for verify-ca and verify-full" in text
    own = {"server_tls_sslmode": "verify-full", "server_tls_ca_file": str(ca.cert)}
    cfg = load({"server_tls_sslmode": "require"}, own)
    assert cfg.proxy.server_tls.mode == "require"
    assert cfg.clusters[0].server_tls == TlsFiles("verify-full", ca_file=str(ca.cert))


def test_relative_paths_are_taken_from_the_config_files_folder(pair: CertPair) -> None:
    data = {
        "proxy": {"client_tls_sslmode": "require", "client_tls_cert_file": pair.cert.name,
                  "client_tls_key_file": pair.key.name},
        "admin": {"enabled": False},
    }  # fmt: skip
    cfg = parse_config(data, env={}, path=str(pair.cert.parent / "pyproxy.toml"))
    assert cfg.proxy.client_tls.cert_file == str(pair.cert)


def test_admin_tls_needs_both_files(pair: CertPair) -> None:
    admin = {"enabled": True, "allow_no_token": True, "tls_cert_file": str(pair.cert)}
    with pytest.raises(ConfigError, match=r"admin\.tls_key_file: required"):
        parse_config({"admin": admin}, env={})
    admin["tls_key_file"] = str(pair.key)
    cfg = parse_config({"admin": admin}, env={})
    assert (cfg.admin.tls_cert_file, cfg.admin.tls_key_file) == (str(pair.cert), str(pair.key))


def test_a_broken_file_at_reload_keeps_the_previous_context(
    ca: TestCA, pair: CertPair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(pair.key.read_bytes())
    files = TlsFiles("require", str(pair.cert), str(key))
    live = LiveTls(files, [TlsFiles("prefer")])
    before = live.client
    assert before is not None
    key.write_text("not a key")
    with caplog.at_level(logging.ERROR, logger="pyproxy.tls"):
        assert live.load(files, [TlsFiles("prefer")]) is False
    assert live.client is before
    assert f"client_tls_key_file: {key}" in caplog.text
    key.write_bytes(pair.key.read_bytes())
    assert live.load(files, [TlsFiles("prefer")]) is True
    assert live.client is not before
