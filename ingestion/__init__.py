"""Document ingestion for file_search: parse -> chunk -> embed.

Standalone: imports neither ``api`` nor ``graph``. Everything here is synchronous and CPU-bound;
run it in a worker thread or process, never on the event loop. Nothing downloads anything at run
time (no model hub, no tiktoken BPE, no spaCy model); heavy libraries load on first use.

    from ingestion import ChunkingStrategy, embed_chunks, embeddings_from_settings, ingest_file

    chunks = ingest_file("/data/files/file-abc", "report.pdf", {"type": "auto"})
    emb, model, dim = embeddings_from_settings("default")   # record model + dim with the store
    vectors = embed_chunks(chunks, emb, dimension=dim)

To bound what one file may cost, :mod:`ingestion.isolation` runs all of it (parse, chunk, embed) in
a child process under memory, CPU-time and wall-time limits, and ``ingest_file`` takes token and
unpacked-size limits; crossing one raises :class:`LimitExceeded` (``invalid_file``).

Failures the user should see raise :class:`IngestionError` subclasses whose ``code`` is the vector
store file's ``last_error.code``: :class:`UnsupportedFile` (``unsupported_file``),
:class:`InvalidFile` / :class:`EmptyFile` (``invalid_file``). A bad ``chunking_strategy`` raises
:class:`InvalidChunkingStrategy` (a ``ValueError``; a 400 at the API).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.embeddings import Embeddings

from ingestion.chunking import (
    TOKENIZER,
    Chunk,
    ChunkingStrategy,
    chunk_elements,
    count_tokens,
)
from ingestion.embeddings import (
    DEFAULT_KIND,
    EmbeddingModel,
    MiniLMEmbeddings,
    WordLlamaEmbeddings,
    embed_texts,
    embeddings_from_settings,
)
from ingestion.errors import (
    EmptyFile,
    IngestionError,
    InvalidChunkingStrategy,
    InvalidFile,
    LimitExceeded,
    UnsupportedFile,
)
from ingestion.parse import SUPPORTED_EXTENSIONS, Element, PdfEngine, detect_kind, parse_file

__all__ = [
    "DEFAULT_KIND",
    "SUPPORTED_EXTENSIONS",
    "TOKENIZER",
    "Chunk",
    "ChunkingStrategy",
    "Element",
    "EmbeddingModel",
    "EmptyFile",
    "IngestionError",
    "InvalidChunkingStrategy",
    "InvalidFile",
    "LimitExceeded",
    "MiniLMEmbeddings",
    "PdfEngine",
    "UnsupportedFile",
    "WordLlamaEmbeddings",
    "chunk_elements",
    "count_tokens",
    "detect_kind",
    "embed_chunks",
    "embeddings_from_settings",
    "ingest_file",
    "parse_file",
]


def ingest_file(
    path: str | os.PathLike[str],
    filename: str | None = None,
    chunking: ChunkingStrategy | Mapping[str, Any] | None = None,
    *,
    mime_type: str | None = None,
    max_tokens: int | None = None,
    max_unzipped_bytes: int | None = None,
    pdf_engine: PdfEngine = "pdfium",
) -> list[Chunk]:
    """Parse and chunk one file. ``chunking`` is a :class:`ChunkingStrategy` or the API's
    ``chunking_strategy`` object (``None`` = ``auto``: 800 tokens, 400 overlap). ``max_tokens``
    bounds the document's text (checked before chunking) and ``max_unzipped_bytes`` the unpacked
    size of Office packages (checked before unpacking); crossing either raises
    :class:`LimitExceeded`. ``pdf_engine`` picks what reads a PDF (see :func:`parse_file`).

    Raises :class:`UnsupportedFile`, :class:`InvalidFile`, :class:`EmptyFile`,
    :class:`InvalidChunkingStrategy`, :class:`LimitExceeded`.
    """
    strategy = ChunkingStrategy.from_api(chunking)
    elements = parse_file(path, filename, mime_type, max_unzipped_bytes=max_unzipped_bytes, pdf_engine=pdf_engine)
    if max_tokens is not None:
        _check_tokens(elements, max_tokens, filename or os.path.basename(path))
    return chunk_elements(elements, strategy)


def _check_tokens(elements: Sequence[Element], max_tokens: int, name: str) -> None:
    # A token is at least one UTF-8 byte, so at most 4 per character: short documents need no count.
    if 4 * sum(len(element.text) for element in elements) <= max_tokens:
        return
    total = 0
    for element in elements:
        total += count_tokens(element.text)
        if total > max_tokens:
            raise LimitExceeded(
                "tokens", f"{name} holds more than {max_tokens:,} tokens of text, the most one file may have to be indexed."
            )


def embed_chunks(
    chunks: Sequence[Chunk],
    embeddings: Embeddings,
    *,
    batch_size: int = 256,
    dimension: int | None = None,
) -> list[list[float]]:
    """One vector per chunk, in order. With ``dimension`` (the store's recorded dimension) every
    vector is checked against it and a mismatch raises ``ValueError``."""
    return embed_texts(
        [c.text for c in chunks], embeddings, batch_size=batch_size, dimension=dimension
    )
