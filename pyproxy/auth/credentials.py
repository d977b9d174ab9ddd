"""Credentials a client's login is checked against: SCRAM secrets of configured users, and a
stable fake one for an unknown user, so both fail the same way."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict

from pyproxy.auth.scram import make_scram_secret
from pyproxy.auth.verifiers import PLAIN, SCRAM, secret_kind

MOCK_CACHE = 1024  # fake secrets remembered (one per unknown user name)


class Credentials:
    """SCRAM secrets by (cluster, user, password), derived once; fake ones for unknown users."""

    def __init__(self) -> None:
        self._secrets: dict[tuple[str, str, str], str] = {}
        self._mock: OrderedDict[str, str] = OrderedDict()
        self._mock_key = secrets.token_bytes(16)

    def forget(self) -> None:
        """The configuration changed: passwords may have been rotated."""
        self._secrets.clear()

    def scram_secret(self, cluster_id: str, user: str, password: str | None) -> str:
        """The SCRAM secret for a user's stored ``password`` (itself when it is a verifier),
        or a stable fake one when the user is unknown (``password`` None) or has only an md5
        hash (SCRAM cannot be checked against it)."""
        kind = None if password is None else secret_kind(password)
        if kind == SCRAM:
            assert password is not None
            return password
        if kind == PLAIN:
            assert password is not None
            key = (cluster_id, user, password)
            secret = self._secrets.get(key)
            if secret is None:
                secret = self._secrets[key] = make_scram_secret(password)
            return secret
        secret = self._mock.get(user)
        if secret is None:
            salt = hmac.new(self._mock_key, user.encode(), hashlib.sha256).digest()[:16]
            secret = self._mock[user] = make_scram_secret(secrets.token_hex(16), salt=salt)
            if len(self._mock) > MOCK_CACHE:
                self._mock.popitem(last=False)
        return secret
