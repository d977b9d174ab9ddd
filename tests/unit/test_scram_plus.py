"""SCRAM-SHA-256-PLUS (tls-server-end-point) as pyproxy offers it over TLS: the binding data,
the exchange, and the refusals RFC 5802 asks for (a downgrade to ``y``, a missing binding)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import subprocess
from pathlib import Path

import pytest

from pyproxy.auth.scram import AuthFailed, ScramServer
from pyproxy.tls.binding import server_end_point, signature_algorithm
from tests.support.tls_pg import TestCA

CBIND = hashlib.sha256(b"the server certificate").digest()
GS2_PLUS = "p=tls-server-end-point,,"


def client_final(password: str, gs2: str, cbind: bytes, bare: str, server_first: str) -> str:
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c={base64.b64encode(gs2.encode() + cbind).decode()},r={attrs['r']}"
    auth_message = f"{bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}"


def plus_server() -> ScramServer:
    return ScramServer(password="pencil", nonce="SERVERNONCE", channel_binding=CBIND)


def test_plus_is_offered_first_and_a_bound_exchange_succeeds() -> None:
    server = plus_server()
    assert server.mechanisms == ("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256")
    first = server.handle_client_first(f"{GS2_PLUS}n=,r=CN".encode(), "SCRAM-SHA-256-PLUS")
    final = client_final("pencil", GS2_PLUS, CBIND, "n=,r=CN", first.decode())
    assert server.handle_client_final(final.encode()).startswith(b"v=")


def test_other_binding_data_fails() -> None:
    server = plus_server()
    first = server.handle_client_first(f"{GS2_PLUS}n=,r=CN".encode(), "SCRAM-SHA-256-PLUS")
    final = client_final("pencil", GS2_PLUS, b"x" * 32, "n=,r=CN", first.decode())
    with pytest.raises(AuthFailed, match="channel binding"):
        server.handle_client_final(final.encode())


@pytest.mark.parametrize(
    ("message", "mechanism", "why"),
    [
        (b"y,,n=,r=CN", "SCRAM-SHA-256", "negotiation error"),  # a downgrade
        (b"n,,n=,r=CN", "SCRAM-SHA-256-PLUS", "no channel binding"),
        (b"p=tls-unique,,n=,r=CN", "SCRAM-SHA-256-PLUS", "not supported"),
    ],
)
def test_refusals(message: bytes, mechanism: str, why: str) -> None:
    with pytest.raises(AuthFailed, match=why):
        plus_server().handle_client_first(message, mechanism)


def test_without_tls_n_and_y_stay_accepted() -> None:
    for gs2 in ("n,,", "y,,"):
        server = ScramServer(password="pencil", nonce="SERVERNONCE")
        assert server.mechanisms == ("SCRAM-SHA-256",)
        first = server.handle_client_first(f"{gs2}n=,r=CN".encode())
        final = client_final("pencil", gs2, b"", "n=,r=CN", first.decode())
        assert server.handle_client_final(final.encode()).startswith(b"v=")


def test_end_point_hash_follows_the_signature_algorithm(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    pair = ca.server_pair()
    der = ssl.PEM_cert_to_DER_cert(pair.cert.read_text())
    assert signature_algorithm(der) == "1.2.840.10045.4.3.2"  # ecdsa-with-SHA256
    assert server_end_point(der) == hashlib.sha256(der).digest()
    key, crt = tmp_path / "ed.key", tmp_path / "ed.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-subj", "/CN=ed",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    assert server_end_point(ssl.PEM_cert_to_DER_cert(crt.read_text())) is None  # no PLUS
