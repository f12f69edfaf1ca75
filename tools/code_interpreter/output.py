"""Turning a kernel's output stream into text a model can read and a database can store: colour codes
out, NULs and undecodable bytes escaped, length capped."""

from __future__ import annotations

import re

# CSI and OSC escape sequences (colours, cursor moves, hyperlinks) as IPython and libraries emit them.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


# What JSON or Postgres text cannot hold: NUL (jsonb refuses \u0000) and lone surrogates (bytes that were
# not UTF-8, as Python's surrogateescape keeps them, or halves of a pair).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return "\\x00" if code == 0 else "\ufffd"


def readable(text: str) -> str:
    """`text` with NULs and undecodable bytes written as `\\xNN` (other lone surrogates as U+FFFD)."""
    return _UNSTORABLE.sub(_escape, text)


def clean(text: str) -> str:
    """Kernel output as the model sees it: no colour codes, nothing a database refuses."""
    return readable(strip_ansi(text))


class CappedText:
    """Keeps the first and last `limit / 2` characters of everything appended, and counts the rest.

    Hand-written because the output arrives as a stream of unknown length (a loop printing for a
    minute): holding all of it to cut afterwards would let one call fill the server's memory.
    """

    def __init__(self, limit: int) -> None:
        self._head_limit = max(limit // 2, 0)
        self._tail_limit = max(limit - self._head_limit, 0)
        self._head = ""
        self._tail = ""
        self.total = 0

    def append(self, text: str) -> None:
        if not text:
            return
        self.total += len(text)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += text[:room]
            text = text[room:]
        if text and self._tail_limit:
            self._tail += text
            # Trim in batches so appending many small chunks stays linear.
            if len(self._tail) > 2 * self._tail_limit:
                self._tail = self._tail[-self._tail_limit :]

    @property
    def omitted(self) -> int:
        return max(self.total - len(self._head) - min(len(self._tail), self._tail_limit), 0)

    def render(self) -> str:
        tail = self._tail[-self._tail_limit :] if self._tail_limit else ""
        if not self.omitted:
            return self._head + tail
        return f"{self._head}\n[… {self.omitted} characters of output cut …]\n{tail}"
