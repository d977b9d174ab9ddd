"""PostgreSQL md5 authentication: stored hash, salted client response, constant-time check."""

from __future__ import annotations

import hashlib

from pyproxy.auth.md5 import md5_password_hash, md5_response, md5_verify

SALT = b"\x01\x02\x03\x04"


def test_password_hash_matches_postgresql() -> None:
    # Values stored by PostgreSQL 15 with password_encryption = 'md5'.
    assert md5_password_hash("postgres", "postgres") == "md53175bce1d3201d16594cebf9d7eb3f9d"
    assert md5_password_hash("d", "pencil") == "md5f6100b06df553dbff70d9a6a8a6d9295"


def test_password_hash_is_md5_of_password_then_user() -> None:
    expected = "md5" + hashlib.md5(b"secretapp").hexdigest()
    assert md5_password_hash("app", "secret") == expected


def test_response_follows_documented_formula() -> None:
    # concat('md5', md5(concat(md5(concat(password, username)), random-salt)))
    inner = hashlib.md5(b"secretapp").hexdigest()
    expected = b"md5" + hashlib.md5(inner.encode() + SALT).hexdigest().encode()
    assert md5_response("app", "secret", SALT) == expected
    assert len(expected) == 35


def test_response_known_value() -> None:
    inner = md5_password_hash("postgres", "postgres")[3:].encode()
    assert inner == b"3175bce1d3201d16594cebf9d7eb3f9d"
    expected = "md5" + hashlib.md5(inner + SALT).hexdigest()
    assert md5_response("postgres", "postgres", SALT).decode() == expected


def test_response_depends_on_salt() -> None:
    assert md5_response("app", "secret", SALT) != md5_response("app", "secret", b"\0\0\0\0")


def test_verify_accepts_right_password() -> None:
    assert md5_verify("app", "secret", SALT, md5_response("app", "secret", SALT))


def test_verify_tolerates_terminating_nul() -> None:
    assert md5_verify("app", "secret", SALT, md5_response("app", "secret", SALT) + b"\x00")


def test_verify_rejects_wrong_password_user_salt_and_garbage() -> None:
    good = md5_response("app", "secret", SALT)
    tampered = good[:-1] + (b"0" if good[-1:] != b"0" else b"1")
    assert not md5_verify("app", "secret", SALT, tampered)
    assert not md5_verify("app", "wrong", SALT, md5_response("app", "wrong!", SALT))
    assert not md5_verify("other", "secret", SALT, good)
    assert not md5_verify("app", "secret", b"\x09\x09\x09\x09", good)
    assert not md5_verify("app", "secret", SALT, b"")
    assert not md5_verify("app", "secret", SALT, b"\xff" * 35)
