"""How kernel output is made into text a model reads and Postgres stores (pure functions, no sandbox)."""

from __future__ import annotations

import pytest

from tools.code_interpreter.output import CappedText, clean, readable


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("plain text", "plain text"),
        ("a\x00b", "a\\x00b"),
        ("\x00\x00", "\\x00\\x00"),
        (b"caf\xe9".decode("utf-8", "surrogateescape"), "caf\\xe9"),
        (b"\xff\xfe".decode("utf-8", "surrogateescape"), "\\xff\\xfe"),
        ("half of a pair \ud83d", "half of a pair \ufffd"),
        ("emoji \U0001f600 and tabs\t", "emoji \U0001f600 and tabs\t"),
        ("", ""),
    ],
)
def test_readable_escapes_what_a_database_refuses(given, expected):
    assert readable(given) == expected
    readable(given).encode("utf-8")  # strict UTF-8 holds it


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("\x1b[31mred\x1b[0m\x00", "red\\x00"),
        ("\x1b]8;;http://x\x07link\x1b]8;;\x07", "link"),
    ],
)
def test_clean_strips_colour_codes_then_escapes(given, expected):
    assert clean(given) == expected


def test_capped_text_keeps_head_and_tail():
    text = CappedText(10)
    for chunk in ("0123456789", "abcdefghij", "ABCDE"):
        text.append(chunk)
    assert text.omitted == 15
    assert text.render() == "01234\n[… 15 characters of output cut …]\nABCDE"
