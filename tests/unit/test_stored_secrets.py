"""Stored secrets without sockets: secret kinds, md5 from a hash, SCRAM pass-through from the
keys a client's proof gives, the server login's choices and errors, and their config keys."""

from __future__ import annotations

from typing import Any

import pytest

from pyproxy.auth.exchange import ClientExchange
from pyproxy.auth.md5 import md5_password_hash, md5_response
from pyproxy.auth.passthrough import KeyStore, PassThroughClient, ScramKeys, keys_from
from pyproxy.auth.scram import AuthFailed, ScramClient, ScramServer, make_scram_secret
from pyproxy.auth.server_login import ServerLogin
from pyproxy.auth.verifiers import md5_response_from_hash, md5_verify_hash, secret_kind
from pyproxy.config import parse_config
from pyproxy.errors import ConfigError
from pyproxy.proto import messages as m
from pyproxy.proto.codes import AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL, AUTH_SASL_CONTINUE

VERIFIER = make_scram_secret("pencil", salt=b"0123456789abcdef")
CID = "9cc10173-e9ea-4176-9dbc-a4cee4c4ff30"


def keys_of_client_login(verifier: str = VERIFIER, password: str = "pencil") -> ScramKeys:
    """A client logs in against ``verifier``; the keys pyproxy recovers from its proof."""
    server = ScramServer(secret=verifier)
    client = ScramClient(password)
    server_first = server.handle_client_first(client.client_first())
    final = server.handle_client_final(client.handle_server_first(server_first))
    client.verify_server_final(final)
    keys = keys_from(server)
    assert keys is not None
    return keys


def test_secret_kinds() -> None:
    assert secret_kind(VERIFIER) == "scram"
    assert secret_kind(md5_password_hash("bob", "pw")) == "md5"
    assert secret_kind("md5-but-plain") == "plain"
    assert secret_kind("hunter2") == "plain"
    with pytest.raises(ValueError):
        secret_kind("SCRAM-SHA-256$4096:broken")


def test_md5_from_the_hash_equals_md5_from_the_password() -> None:
    md5_hash, salt = md5_password_hash("bob", "pw"), b"\x01\x02\x03\x04"
    assert md5_response_from_hash(md5_hash, salt) == md5_response("bob", "pw", salt)
    assert md5_verify_hash(md5_hash, salt, md5_response("bob", "pw", salt) + b"\x00")
    assert not md5_verify_hash(md5_hash, salt, md5_response("bob", "other", salt))


def test_pass_through_proof_is_accepted_by_a_server_holding_the_same_verifier() -> None:
    keys = keys_of_client_login()
    postgres = ScramServer(secret=VERIFIER)  # PostgreSQL, same verifier
    through = PassThroughClient(keys, "bob")
    server_first = postgres.handle_client_first(through.client_first())
    final = postgres.handle_client_final(through.handle_server_first(server_first))
    through.verify_server_final(final)


def test_pass_through_refuses_another_salt_with_a_clear_reason() -> None:
    keys = keys_of_client_login()
    postgres = ScramServer(secret=make_scram_secret("pencil"))  # same password, other salt
    through = PassThroughClient(keys, "bob")
    server_first = postgres.handle_client_first(through.client_first())
    with pytest.raises(AuthFailed, match="another salt or iteration count"):
        through.handle_server_first(server_first)


def test_pass_through_checks_the_servers_signature() -> None:
    keys = keys_of_client_login()
    through = PassThroughClient(keys, "bob")
    postgres = ScramServer(secret=VERIFIER)
    through.handle_server_first(postgres.handle_client_first(through.client_first()))
    with pytest.raises(AuthFailed, match="signature"):
        through.verify_server_final(b"v=" + b"A" * 44)


def test_a_failed_client_login_recovers_no_keys() -> None:
    server = ScramServer(secret=VERIFIER)
    client = ScramClient("wrong")
    server_first = server.handle_client_first(client.client_first())
    with pytest.raises(AuthFailed):
        server.handle_client_final(client.handle_server_first(server_first))
    assert keys_from(server) is None


def test_key_store_is_bounded_and_says_when_keys_are_new() -> None:
    store, keys = KeyStore(limit=2), keys_of_client_login()
    assert store.put("c", "a", keys) is True
    assert store.put("c", "a", keys) is False
    store.put("c", "b", keys)
    store.put("c", "d", keys)
    assert store.get("c", "a") is None and store.get("c", "d") == keys


def sasl(*mechs: str) -> bytes:
    return b"".join(x.encode() + b"\0" for x in mechs) + b"\0"


@pytest.mark.parametrize(
    ("password", "keys", "code", "data", "needle"),
    [
        (VERIFIER, None, AUTH_SASL, sasl("SCRAM-SHA-256"), "no client has logged in"),
        (None, None, AUTH_SASL, sasl("SCRAM-SHA-256"), "holds no password"),
        (md5_password_hash("bob", "pw"), None, AUTH_SASL, sasl("SCRAM-SHA-256"), "md5 hash"),
        (VERIFIER, None, AUTH_MD5, b"abcd", "asks for md5; pyproxy holds a SCRAM verifier"),
        (VERIFIER, None, AUTH_CLEARTEXT, b"", "cleartext"),
    ],
)
def test_server_login_says_why_it_cannot_answer(
    password: str | None, keys: ScramKeys | None, code: int, data: bytes, needle: str
) -> None:
    with pytest.raises(AuthFailed, match=needle) as info:
        ServerLogin("bob", password, keys).answer(code, data)
    assert "pencil" not in str(info.value) and VERIFIER not in str(info.value)


def test_server_login_answers_md5_from_a_hash_and_scram_from_keys() -> None:
    md5_hash = md5_password_hash("bob", "pw")
    answer = ServerLogin("bob", md5_hash).answer(AUTH_MD5, b"abcd")
    assert answer == m.password_message(md5_response("bob", "pw", b"abcd") + b"\0")
    login = ServerLogin("bob", VERIFIER, keys_of_client_login())
    first = login.answer(AUTH_SASL, sasl("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"))
    assert b"SCRAM-SHA-256\x00" in first
    postgres = ScramServer(secret=VERIFIER)
    assert login.scram is not None
    server_first = postgres.handle_client_first(login.scram.client_first())
    assert login.answer(AUTH_SASL_CONTINUE, server_first)[:1] == b"p"


def test_md5_clients_of_a_verifier_are_asked_for_scram_and_scram_of_an_md5_hash_fails() -> None:
    exchange = ClientExchange("md5", "bob", VERIFIER, VERIFIER)
    reply, _ = exchange.start()
    assert reply == m.auth_sasl(("SCRAM-SHA-256",))
    md5_hash = md5_password_hash("bob", "pw")
    scram = ClientExchange("scram-sha-256", "bob", md5_hash, make_scram_secret("pw"))
    scram.start()
    client = ScramClient("pw")  # the right password: still refused, as a wrong one
    cont, _ = scram.message(ord("p"), m.sasl_initial_response("SCRAM-SHA-256",
                            client.client_first())[5:])  # fmt: skip
    final = client.handle_server_first(cont[9:])
    with pytest.raises(AuthFailed):
        scram.message(ord("p"), final)


# ---- config ---------------------------------------------------------------------------------


def config(users: list[dict[str, Any]], **cluster: Any) -> dict[str, Any]:
    table = {"id": CID, "users": users, **cluster}
    table.setdefault("pools", [{"name": "backend-pool", "db": "d", "size": 1}])
    return {"admin": {"token": "t"}, "clusters": [table]}


def errors(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, env=env or {})
    return str(info.value)


def test_password_env_is_read_and_never_shown() -> None:
    cfg = parse_config(config([{"name": "u", "password_env": "U_PW"}]), env={"U_PW": "from-env"})
    user = cfg.clusters[0].users[0]
    assert (user.password, user.password_env, user.shown_password) == ("from-env", "U_PW", None)
    assert (
        parse_config(config([{"name": "u", "password": VERIFIER}]), env={})
        .clusters[0]
        .users[0]
        .shown_password
        is None
    )
    assert (
        parse_config(config([{"name": "u", "password": "plain"}]), env={})
        .clusters[0]
        .users[0]
        .shown_password
        == "plain"
    )


@pytest.mark.parametrize(
    ("user", "needle"),
    [
        ({"name": "u", "password_env": "MISSING"}, "users[0].password_env: the environment"),
        ({"name": "u", "password": "x", "password_env": "U"}, "either password or password_env"),
        ({"name": "u", "password": "SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB"}, "key lengths"),
        ({"name": "u", "password": "SCRAM-SHA-256$nope"}, "looks like a SCRAM verifier"),
        ({"name": "u", "password": 8008135}, "must be a string (the value is not shown)"),
    ],
)
def test_bad_user_secrets_are_named_but_not_shown(user: dict[str, Any], needle: str) -> None:
    text = errors(config([user]))
    assert needle in text
    assert "AAAA" not in text and "nope" not in text and "8008135" not in text


def test_auth_user_must_be_a_user_and_auth_query_must_take_the_name() -> None:
    text = errors(config([{"name": "u", "password": "p"}], auth_user="ghost"))
    assert 'clusters[0].auth_user: "ghost" is not a user of this cluster' in text
    data = config([{"name": "u", "password": "p"}])
    data["proxy"] = {"auth_user": "u", "auth_query": "SELECT 1"}
    assert "proxy.auth_query: must use $1" in errors(data)
    data["proxy"] = {"auth_user": "u", "auth_cache_seconds": 5}
    cluster = parse_config(data, env={}).clusters[0]
    assert cluster.auth_user == "u" and "pg_authid" in cluster.auth_query
