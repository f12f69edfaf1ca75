"""Turning a kernel's output stream into text a model can read: colour codes out, length capped."""

from __future__ import annotations

import re

# CSI and OSC escape sequences (colours, cursor moves, hyperlinks) as IPython and libraries emit them.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


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
