"""A light SQL tokenizer: statements and keywords outside comments, strings and dollar quotes.

Not a parser: it masks comments, quoted strings, quoted identifiers and dollar-quoted bodies
(keeping every offset), splits on the semicolons that remain, and lower-cases words.
"""

from __future__ import annotations

import re

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*|[0-9]+|'|\"|[^\sA-Za-z_0-9]")


def mask(sql: str) -> str:
    """``sql`` with comments blanked and quoted text replaced by spaces, same length.

    Quote characters themselves are kept, so a masked string literal reads ``'   '``.
    """
    out = list(sql)
    i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
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
            out[i:j] = " " * (j - i)
            i = j
        elif c == "'" or c == '"':
            escapes = c == "'" and i > 0 and sql[i - 1] in "eE"
            j = i + 1
            while j < n:
                ch = sql[j]
                if escapes and ch == "\\":
                    j += 2
                    continue
                if ch == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            end = min(j, n)
            out[i + 1 : end] = " " * (end - i - 1)
            i = end + 1
        elif c == "$":
            m = _DOLLAR_TAG.match(sql, i)
            if m and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
                tag = m.group(0)
                j = sql.find(tag, m.end())
                end = n if j < 0 else j + len(tag)
                out[i:end] = "'" + " " * (end - i - 2) + "'" if end - i >= 2 else " " * (end - i)
                i = end
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def split_statements(sql: str) -> list[tuple[str, list[str]]]:
    """Each non-empty statement: (its original text, its lower-cased tokens)."""
    masked = mask(sql)
    out: list[tuple[str, list[str]]] = []
    start = 0
    for pos in [*(i for i, ch in enumerate(masked) if ch == ";"), len(masked)]:
        tokens = [t.lower() for t in _WORD.findall(masked, start, pos)]
        if tokens:
            out.append((sql[start:pos].strip(), tokens))
        start = pos + 1
    return out


def first_keywords(sql: str, count: int) -> list[str]:
    """The first ``count`` lower-cased words of the first statement."""
    for _, tokens in split_statements(sql):
        return tokens[:count]
    return []
