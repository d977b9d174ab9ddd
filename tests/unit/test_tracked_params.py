"""Tracked parameters: equal spellings compare equal, and the SET that aligns a server."""

from __future__ import annotations

from pyproxy.session.params import canonical, differences, set_statements, tracked_set


def test_client_encoding_spellings_postgresql_accepts_compare_equal() -> None:
    for spelling in ("UTF8", "utf-8", "'utf-8'", "Unicode", "utf_8"):
        assert canonical("client_encoding", spelling) == "utf8", spelling
    assert canonical("client_encoding", "LATIN1") != "utf8"


def test_only_differing_tracked_values_are_set() -> None:
    tracked = tracked_set(("IntervalStyle",))
    client = {"client_encoding": "'utf-8'", "timezone": "Asia/Tokyo", "work_mem": "1GB"}
    server = {"client_encoding": "UTF8", "timezone": "Etc/UTC", "work_mem": "4MB"}
    assert differences(client, server, tracked) == [("timezone", "Asia/Tokyo")]
    assert set_statements([("timezone", "it's")]) == "SET timezone TO 'it''s'"
