"""SCRAM-SHA-256 in both roles: RFC 7677's example, round trips, refusals, PostgreSQL secrets."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from pyproxy.auth.scram import (
    AuthFailed,
    ScramClient,
    ScramServer,
    make_scram_secret,
    parse_scram_secret,
    saslprep,
)

# RFC 7677, section 3.
RFC_CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

# Secrets stored by PostgreSQL 15 (password_encryption = 'scram-sha-256') for these passwords.
PG_SECRETS = {
    "pencil": "SCRAM-SHA-256$4096:CPt723zz7LFTU7O3d71Y1Q==$"
    "ki7eqsVCdzwbRdYo90Ko/ylHrnZfv/foBVcD1ISNmCo=:yLI6KYxIdt4/Kl2NeIFajQXGT9apZowamoiVg/kg3mM=",
    "I\u00adX": "SCRAM-SHA-256$4096:OP0so271gjNGZt8grMCCqQ==$"
    "SyXddJ9K10/rKcW/fbg/HdemnyD9+S8InIWa4lHVJbw=:2pQrLW54GGZY002c0xeyg0tBx0NHmPt1+qYwEWGchtI=",
    "p\u00e4ssw\u00f6rd": "SCRAM-SHA-256$4096:WFi4qadyP3DdqTol7SVb7g==$"
    "uqgMIyV9CKOrwwRUxWxhI3MR2PSJrDL/KqcTaA56pG0=:5OkfryX/Qe5kf0hBmrnFEBI8SklAyhVsKlToeaEJI+Q=",
    "\u0627\u0031": "SCRAM-SHA-256$4096:sE6UkimMe+zw4JSZWwu64g==$"
    "UVHM9dZsPHdMDlvxfV3uIHQDCnRU7LdipqGRzwyH9L4=:AUI+yfXs3qAPwp/URJNjQukYYpNCciYIlEkp4nzSBhk=",
}


def rfc_server() -> ScramServer:
    return ScramServer(secret=make_scram_secret("pencil", RFC_SALT, 4096), nonce=RFC_SERVER_NONCE)


def exchange(client: ScramClient, server: ScramServer) -> None:
    server_first = server.handle_client_first(client.client_first())
    server_final = server.handle_client_final(client.handle_server_first(server_first))
    client.verify_server_final(server_final)


def server_after_first(password: str = "pencil") -> tuple[ScramServer, bytes]:
    server = ScramServer(password=password, nonce="SERVERNONCE")
    return server, server.handle_client_first(b"n,,n=,r=CLIENTNONCE")


def test_rfc7677_server_side_byte_for_byte() -> None:
    server = rfc_server()
    assert server.handle_client_first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.handle_client_final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_rfc7677_client_side_byte_for_byte() -> None:
    client = ScramClient("pencil", nonce=RFC_CLIENT_NONCE, user="user")
    assert client.client_first() == RFC_CLIENT_FIRST
    assert client.handle_server_first(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    client.verify_server_final(RFC_SERVER_FINAL)


def test_client_first_has_empty_user_name_by_default() -> None:
    client = ScramClient("pencil", nonce="abc")
    assert client.client_first() == b"n,,n=,r=abc"


def test_round_trip_with_password_and_random_nonces() -> None:
    exchange(ScramClient("s3cret"), ScramServer(password="s3cret"))


def test_round_trip_with_stored_secret() -> None:
    exchange(ScramClient("s3cret"), ScramServer(secret=make_scram_secret("s3cret")))


def rfc5802_client_final(
    password: str, gs2_header: str, client_first_bare: str, server_first: str
) -> str:
    """Compute a client-final-message straight from RFC 5802's formulas."""
    attrs = dict(part.split("=", 1) for part in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    without_proof = f"c={base64.b64encode(gs2_header.encode()).decode()},r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}"


def test_server_accepts_y_gs2_header() -> None:
    server = ScramServer(password="pencil", nonce="SERVERNONCE")
    server_first = server.handle_client_first(b"y,,n=,r=CLIENTNONCE").decode()
    final = rfc5802_client_final("pencil", "y,,", "n=,r=CLIENTNONCE", server_first)
    assert final.startswith("c=eSws,")
    assert server.handle_client_final(final.encode()).startswith(b"v=")


def test_server_refuses_channel_binding_that_differs_from_gs2_header() -> None:
    server = ScramServer(password="pencil", nonce="SERVERNONCE")
    server_first = server.handle_client_first(b"n,,n=,r=CLIENTNONCE").decode()
    final = rfc5802_client_final("pencil", "y,,", "n=,r=CLIENTNONCE", server_first)
    with pytest.raises(AuthFailed, match="channel binding"):
        server.handle_client_final(final.encode())


def test_independent_rfc5802_client_matches_rfc7677() -> None:
    final = rfc5802_client_final(
        "pencil", "n,,", RFC_CLIENT_FIRST[3:].decode(), RFC_SERVER_FIRST.decode()
    )
    assert final.encode() == RFC_CLIENT_FINAL


def test_wrong_password_fails() -> None:
    client = ScramClient("wrong")
    server = ScramServer(password="right")
    server_first = server.handle_client_first(client.client_first())
    with pytest.raises(AuthFailed, match="password authentication failed"):
        server.handle_client_final(client.handle_server_first(server_first))


def test_mock_mode_runs_the_exchange_and_always_fails() -> None:
    client = ScramClient("anything")
    server = ScramServer()
    server_first = server.handle_client_first(client.client_first())
    assert b",s=" in server_first and server_first.endswith(b",i=4096")
    with pytest.raises(AuthFailed) as mock_error:
        server.handle_client_final(client.handle_server_first(server_first))
    client = ScramClient("wrong")
    server = ScramServer(password="right")
    with pytest.raises(AuthFailed) as real_error:
        server.handle_client_final(
            client.handle_server_first(server.handle_client_first(client.client_first()))
        )
    assert str(mock_error.value) == str(real_error.value)


def test_channel_binding_p_is_refused() -> None:
    with pytest.raises(AuthFailed, match="channel binding"):
        ScramServer(password="x").handle_client_first(b"p=tls-server-end-point,,n=,r=abc")


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"n,,",
        b"n",
        b"x,,n=,r=abc",
        b"n,a=admin,n=,r=abc",
        b"n,,m=ext,n=,r=abc",
        b"n,,r=abc",
        b"n,,n=",
        b"n,,n=,r=",
        b"n,,n=,r=a\x7fb",
        b"n,,n=,r=abc,junk",
        b"\xff\xfe",
    ],
)
def test_malformed_client_first_raises_auth_failed(message: bytes) -> None:
    with pytest.raises(AuthFailed):
        ScramServer(password="x").handle_client_first(message)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"c=biws,r=CLIENTNONCESERVERNONCE",
        b"c=biws,r=CLIENTNONCESERVERNONCE,p=",
        b"c=biws,r=CLIENTNONCESERVERNONCE,p=not base64!",
        b"c=biws,r=CLIENTNONCESERVERNONCE,p=AAAA",
        b"c=eSws,r=CLIENTNONCESERVERNONCE,p=" + base64.b64encode(bytes(32)),
        b"c=!!,r=CLIENTNONCESERVERNONCE,p=" + base64.b64encode(bytes(32)),
        b"r=CLIENTNONCESERVERNONCE,p=" + base64.b64encode(bytes(32)),
        b"c=biws,p=" + base64.b64encode(bytes(32)),
        b"\xff,p=AAAA",
    ],
)
def test_malformed_client_final_raises_auth_failed(message: bytes) -> None:
    server, _ = server_after_first()
    with pytest.raises(AuthFailed):
        server.handle_client_final(message)


def test_server_refuses_nonce_mismatch() -> None:
    client = ScramClient("pencil", nonce="CLIENTNONCE")
    server = ScramServer(password="pencil", nonce="SERVERNONCE")
    server_first = server.handle_client_first(client.client_first())
    final = client.handle_server_first(server_first)
    tampered = final.replace(b"r=CLIENTNONCESERVERNONCE", b"r=CLIENTNONCESERVERNONCX")
    with pytest.raises(AuthFailed, match="nonce"):
        server.handle_client_final(tampered)


@pytest.mark.parametrize(
    "server_first",
    [
        b"r=OTHERNONCE,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # does not extend our nonce
        b"r=CLIENTNONCE,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # server added nothing
    ],
)
def test_client_refuses_nonce_mismatch(server_first: bytes) -> None:
    client = ScramClient("pencil", nonce="CLIENTNONCE")
    client.client_first()
    with pytest.raises(AuthFailed, match="nonce"):
        client.handle_server_first(server_first)


@pytest.mark.parametrize(
    "server_first",
    [
        b"",
        b"r=CLIENTNONCEx",
        b"r=CLIENTNONCEx,s=W22ZaJ0SNY7soEsUEjb6gQ==",
        b"r=CLIENTNONCEx,s=%%%,i=4096",
        b"r=CLIENTNONCEx,s=,i=4096",
        b"r=CLIENTNONCEx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
        b"r=CLIENTNONCEx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
        b"r=CLIENTNONCEx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=\xc2\xb2",
        b"m=ext,r=CLIENTNONCEx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"\xff",
    ],
)
def test_client_refuses_malformed_server_first(server_first: bytes) -> None:
    client = ScramClient("pencil", nonce="CLIENTNONCE")
    client.client_first()
    with pytest.raises(AuthFailed):
        client.handle_server_first(server_first)


def rfc_client_after_final() -> ScramClient:
    client = ScramClient("pencil", nonce=RFC_CLIENT_NONCE, user="user")
    client.client_first()
    client.handle_server_first(RFC_SERVER_FIRST)
    return client


@pytest.mark.parametrize(
    "server_final",
    [
        b"v=" + base64.b64encode(bytes(32)),
        b"e=invalid-proof",
        b"v=###",
        b"",
        b"x=1",
    ],
)
def test_client_refuses_bad_server_final(server_final: bytes) -> None:
    with pytest.raises(AuthFailed):
        rfc_client_after_final().verify_server_final(server_final)


def test_client_reports_server_error_text() -> None:
    with pytest.raises(AuthFailed, match="invalid-proof"):
        rfc_client_after_final().verify_server_final(b"e=invalid-proof")


def test_out_of_order_calls_raise_auth_failed() -> None:
    with pytest.raises(AuthFailed):
        ScramServer(password="x").handle_client_final(RFC_CLIENT_FINAL)
    server = rfc_server()
    server.handle_client_first(RFC_CLIENT_FIRST)
    server.handle_client_final(RFC_CLIENT_FINAL)
    with pytest.raises(AuthFailed):
        server.handle_client_final(RFC_CLIENT_FINAL)
    with pytest.raises(AuthFailed):
        ScramClient("x").handle_server_first(RFC_SERVER_FIRST)
    with pytest.raises(AuthFailed):
        ScramClient("x").verify_server_final(RFC_SERVER_FINAL)


def test_server_is_unusable_after_a_failure() -> None:
    server = rfc_server()
    server.handle_client_first(RFC_CLIENT_FIRST)
    with pytest.raises(AuthFailed):
        server.handle_client_final(RFC_CLIENT_FINAL.replace(b"p=d", b"p=e"))
    with pytest.raises(AuthFailed):
        server.handle_client_final(RFC_CLIENT_FINAL)


def test_make_scram_secret_format_and_verification() -> None:
    secret = make_scram_secret("pencil", RFC_SALT, 4096)
    assert secret.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    parsed = parse_scram_secret(secret)
    assert parsed.iterations == 4096 and parsed.salt == RFC_SALT
    exchange(ScramClient("pencil"), ScramServer(secret=secret))
    client = ScramClient("pencil!")
    server = ScramServer(secret=secret)
    with pytest.raises(AuthFailed):
        exchange(client, server)


def test_make_scram_secret_uses_a_fresh_salt() -> None:
    assert make_scram_secret("pencil") != make_scram_secret("pencil")


@pytest.mark.parametrize("password", sorted(PG_SECRETS))
def test_secrets_match_postgresql(password: str) -> None:
    secret = PG_SECRETS[password]
    salt = parse_scram_secret(secret).salt
    assert make_scram_secret(password, salt, 4096) == secret
    exchange(ScramClient(password), ScramServer(secret=secret))


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "md5f6100b06df553dbff70d9a6a8a6d9295",
        "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
        "SCRAM-SHA-256$x:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
    ],
)
def test_bad_secret_is_a_value_error(secret: str) -> None:
    with pytest.raises(ValueError):
        ScramServer(secret=secret)


def test_password_and_secret_together_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        ScramServer(password="x", secret=make_scram_secret("x"))


@pytest.mark.parametrize(
    ("raw", "prepared"),
    [
        ("user", "user"),  # RFC 4013 section 3 examples
        ("I\u00adX", "IX"),
        ("\u00aa", "a"),
        ("\u2168", "IX"),
        ("\u0007", "\u0007"),  # prohibited: PostgreSQL falls back to the raw password
        ("\u0627\u0031", "\u0627\u0031"),  # bidi rule broken: raw password
        ("a\u00a0b", "a b"),  # non-ASCII space maps to space
        ("\u00ad", "\u00ad"),  # maps to empty: raw password
    ],
)
def test_saslprep(raw: str, prepared: str) -> None:
    assert saslprep(raw) == prepared
