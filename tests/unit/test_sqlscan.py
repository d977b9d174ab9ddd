"""The light SQL tokenizer: comments, strings, identifiers and dollar quotes are not keywords."""

from __future__ import annotations

import pytest

from pyproxy.session.sqlscan import first_keywords, mask, split_statements


def test_mask_keeps_length_and_blanks_comments_and_quoted_text() -> None:
    sql = "SELECT 'a;b' -- c;d\n, \"x;y\" /* e;f /* nested */ g */ FROM t"
    masked = mask(sql)
    assert len(masked) == len(sql)
    assert ";" not in masked
    assert masked.startswith("SELECT '   '")
    assert "FROM t" in masked


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select 1; select 2", [["select", "1"], ["select", "2"]]),
        ("select 'it''s; here'; listen x", [["select", "'", "'"], ["listen", "x"]]),
        ("select E'a\\'; b'; reset all", [["select", "e", "'", "'"], ["reset", "all"]]),
        ("select $$ ; set x = 1 $$; discard all", [["select", "'", "'"], ["discard", "all"]]),
        ("select $fn$ a $$ ; b $fn$ ; commit", [["select", "'", "'"], ["commit"]]),
        ("select $1, $2 ; begin", [["select", "$", "1", ",", "$", "2"], ["begin"]]),
        ('select "set" from "listen;"', [["select", '"', '"', "from", '"', '"']]),
        ("/* set x */ -- listen\n select 1", [["select", "1"]]),
        ("  ;  ; select 1 ;", [["select", "1"]]),
        (
            "select a$b$ from t; set x to 1",
            [["select", "a$b$", "from", "t"], ["set", "x", "to", "1"]],
        ),
    ],
)
def test_split_statements_tokens(sql: str, expected: list[list[str]]) -> None:
    assert [tokens for _, tokens in split_statements(sql)] == expected


def test_split_statements_keeps_original_text() -> None:
    parts = split_statements("SET search_path = 'a;b' ; SELECT 1")
    assert [text for text, _ in parts] == ["SET search_path = 'a;b'", "SELECT 1"]


def test_unterminated_quotes_and_comments_swallow_the_rest() -> None:
    for sql in ("select 'abc; listen x", "select 1 /* ; listen x", "select $$ ; listen x"):
        parts = split_statements(sql)
        assert len(parts) == 1
        assert "listen" not in parts[0][1]


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        ("BEGIN", ["begin"]),
        ("  /* hi */ Start Transaction isolation level serializable", ["start", "transaction"]),
        ("-- only a comment", []),
        ("", []),
    ],
)
def test_first_keywords(sql: str, words: list[str]) -> None:
    assert first_keywords(sql, 2) == words
