"""A light SQL tokenizer: keywords outside comments, quoted strings and dollar quotes."""

from __future__ import annotations

import re

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def strip_sql(sql: str) -> str:
    """Replace comments, string literals, quoted identifiers and dollar-quoted bodies by spaces.

    Statement separators (``;``) outside those survive, so callers can split statements.
    """
    out: list[str] = []
    i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
            out.append(" ")
        elif c == "/" and sql.startswith("/*", i):
            depth = 1
            j = i + 2
            while j < n and depth:
                if sql.startswith("/*", j):
                    depth += 1
                    j += 2
                elif sql.startswith("*/", j):
                    depth -= 1
                    j += 2
                else:
                    j += 1
            i = j
            out.append(" ")
        elif c in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                if c == "'" and sql[j] == "\\" and i > 0 and sql[i - 1] in "eE":
                    j += 2
                    continue
                j += 1
            i = j + 1
            out.append(" '' " if c == "'" else ' "" ')
        elif c == "$":
            m = _DOLLAR_TAG.match(sql, i)
            if m and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                tag = m.group(0)
                j = sql.find(tag, m.end())
                i = n if j < 0 else j + len(tag)
                out.append(" '' ")
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*|[^\sA-Za-z_]")


def first_keywords(sql: str, count: int) -> list[str]:
    """The first ``count`` lower-cased words of the first statement, comments skipped."""
    words: list[str] = []
    for tok in _WORD.findall(strip_sql(sql)):
        if tok == ";":
            if words:
                break
            continue
        words.append(tok.lower())
        if len(words) >= count:
            break
    return words


def statements(sql: str) -> list[list[str]]:
    """Each statement of a query string as its list of lower-cased tokens."""
    out: list[list[str]] = []
    current: list[str] = []
    for tok in _WORD.findall(strip_sql(sql)):
        if tok == ";":
            if current:
                out.append(current)
            current = []
        else:
            current.append(tok.lower())
    if current:
        out.append(current)
    return out
