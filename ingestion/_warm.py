"""Imported once by the ingestion fork server (see `ingestion.isolation`): the parsers, the tokenizer
and the default embedding model are loaded here, so every child forked to ingest a file starts with
them in memory instead of spending seconds loading them again."""

from __future__ import annotations

import logging

try:  # a fork server whose warm-up fails still serves: its children load what they need themselves
    from ingestion import chunking, embeddings
    from ingestion.parse import _ensure_nlp

    _ensure_nlp()
    import pypdfium2  # noqa: F401
    from unstructured.partition import csv, docx, html, md, pptx, text, xlsx  # noqa: F401

    chunking.get_encoding()
    embeddings.WordLlamaEmbeddings().embed_documents(["warm up"])
except Exception:  # pragma: no cover - depends on the installation
    logging.getLogger(__name__).warning("the ingestion fork server could not preload everything", exc_info=True)
