"""Benchmark: document ingestion and file_search retrieval.

    .venv/bin/python bench/ingestion.py --out bench/results/ingestion.json

Issue targets (2 cores): >= 20 PDF pages/s parsed + chunked; search p95 <= 100 ms with 100k chunks
in one store.

1. **Parse + chunk**: a generated ~50-page text PDF (reportlab) through `ingestion.ingest_file`
   (auto chunking), in this process: the code a worker runs, without the queue or the database.
   Also end to end through the server: upload + `vector_stores.files.upload_and_poll` (queue,
   parse, chunk, embed, COPY into Postgres).
2. **Embedding**: chunks/s of the default model (WordLlama) on ~800-token chunks (`auto` size).
3. **Search latency at 100k chunks**: a store gets one real file through the API, then 100k
   synthetic chunks are copied straight into `chunks` under that file (random unit vectors of the
   store's dimension; text drawn from a ~6k-word Zipf vocabulary plus real sentences, for the
   full-text side), the HNSW index is (re)built and the table analysed. Latency is measured
   through the real `POST /v1/vector_stores/{id}/search` endpoint with the SDK: natural-language
   questions, keyword queries and a filtered query. The plan of the semantic query is checked
   with EXPLAIN (it must use the HNSW index).
4. **Recall@5** on `bench/retrieval_set.py` (30 questions, 40 passages of which 10 are hard
   distractors) through the same endpoint: each passage is a file; `short` = the passage alone,
   `long` = the passage buried in ~800 tokens of neutral filler (an `auto`-sized chunk).

Starts its own scripted model and `assistgraph serve` (embedded Postgres, temp data dir) and stops
both at the end.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import openai
import psycopg

from bench._harness import environment, percentile, print_table, sdk_kwargs, stack, summary_ms, verdict, write_json
from bench.retrieval_set import FILLER, QUESTIONS, all_passages, long_chunks

TARGET_PAGES_PER_S = 20.0
TARGET_SEARCH_P95_MS = 100.0

# --- documents -----------------------------------------------------------------------------------

_TOPICS = [
    "maintenance schedules", "supplier contracts", "quarterly revenue", "safety inspections",
    "staff training", "network outages", "customer complaints", "inventory levels",
    "energy consumption", "travel policy", "software releases", "warehouse layout",
]


def make_pdf(path: Path, pages: int, seed: int = 3) -> None:
    """A text PDF: a title and ~9 paragraphs (~450 words) per page."""
    from reportlab.lib.pagesizes import letter
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

    rng = random.Random(seed)
    styles = getSampleStyleSheet()
    story = []
    sentences = FILLER + list(all_passages().values())
    for page in range(1, pages + 1):
        topic = rng.choice(_TOPICS)
        story.append(Paragraph(f"Section {page}: {topic.title()}", styles["Heading2"]))
        for _ in range(9):
            text = " ".join(rng.choice(sentences) for _ in range(3))
            story.append(Paragraph(f"Regarding {topic}, {text}", styles["BodyText"]))
        story.append(PageBreak())
    SimpleDocTemplate(str(path), pagesize=letter).build(story)


def pdf_pages(path: Path) -> int:
    import pypdfium2

    doc = pypdfium2.PdfDocument(str(path))
    try:
        return len(doc)
    finally:
        doc.close()


# --- 1 + 2: in-process ingestion speed --------------------------------------------------------------


def bench_parse(pdf: Path, repeats: int) -> dict:
    from ingestion import ingest_file

    pages = pdf_pages(pdf)
    ingest_file(pdf, pdf.name)  # warm-up: imports, tokenizer, NLP tables
    times, chunks = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        chunks = ingest_file(pdf, pdf.name)
        times.append(time.perf_counter() - t0)
    best, median = min(times), sorted(times)[len(times) // 2]
    return {
        "pages": pages,
        "chunks": len(chunks),
        "tokens": sum(c.token_count for c in chunks),
        "seconds_median": round(median, 3),
        "seconds_best": round(best, 3),
        "pages_per_s_median": round(pages / median, 1),
        "pages_per_s_best": round(pages / best, 1),
    }


def bench_embed(n_chunks: int) -> dict:
    from ingestion import count_tokens, embed_texts, embeddings_from_settings

    model = embeddings_from_settings("default")
    texts = list(long_chunks(800, count_tokens=count_tokens).values())
    texts = (texts * (n_chunks // len(texts) + 1))[:n_chunks]
    embed_texts(texts[:8], model.embeddings)  # load the model
    t0 = time.perf_counter()
    vectors = embed_texts(texts, model.embeddings, dimension=model.dimension)
    wall = time.perf_counter() - t0
    q = []
    for question, _ in QUESTIONS:
        t = time.perf_counter()
        model.embeddings.embed_query(question)
        q.append(time.perf_counter() - t)
    return {
        "model": model.model,
        "dimension": model.dimension,
        "chunks": len(vectors),
        "avg_tokens_per_chunk": round(sum(count_tokens(t) for t in texts[:50]) / min(50, len(texts)), 1),
        "seconds": round(wall, 3),
        "chunks_per_s": round(len(vectors) / wall, 1),
        "query_embed_ms": summary_ms(q),
    }


# --- 3: search latency at 100k chunks ------------------------------------------------------------


def _vocabulary(size: int, rng: random.Random) -> list[str]:
    words = sorted({w.strip(".,;:'()").lower() for s in (*FILLER, *all_passages().values()) for w in s.split()} - {""})
    syllables = ["ka", "lo", "mi", "ser", "tan", "vo", "rel", "dun", "pi", "gor", "za", "mel", "tri", "os", "ven", "bra"]
    while len(words) < size:
        words.append("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return words


def synthetic_rows(vector_store_id: str, file_id: str, n: int, dim: int, words_per_chunk: int, seed: int = 11):
    """(vector_store_id, file_id, chunk_index, content, token_count, metadata, embedding) rows."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    vocab = _vocabulary(6000, rng)
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.07  # Zipf-like word frequencies
    cum = np.cumsum(weights / weights.sum())
    sentences = FILLER + list(all_passages().values())
    for i in range(n):
        picks = np.searchsorted(cum, nrng.random(words_per_chunk - 40))
        words = [vocab[j] for j in picks]
        text = " ".join(rng.choice(sentences) for _ in range(2)) + " " + " ".join(words) + "."
        v = nrng.standard_normal(dim).astype(np.float32)
        v /= np.linalg.norm(v)
        yield (
            vector_store_id, file_id, 1000 + i, text, int(len(text.split()) * 1.3), "{}",
            "[" + ",".join(f"{x:.6f}" for x in v.tolist()) + "]",
        )


def load_synthetic(db_url: str, vector_store_id: str, file_id: str, n: int, dim: int, words: int) -> dict:
    out: dict = {}
    index = f"chunks_hnsw_{dim}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"DROP INDEX IF EXISTS {index}")  # bulk load first, build the graph once
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(
            "COPY chunks (vector_store_id, file_id, chunk_index, content, token_count, metadata, embedding) FROM STDIN"
        ) as copy:
            for row in synthetic_rows(vector_store_id, file_id, n, dim, words):
                copy.write_row(row)
        out["copy_s"] = round(time.perf_counter() - t0, 1)
        # As ingestion would have recorded them (keyword search reads the store's chunk count).
        conn.execute(
            "UPDATE vector_store_files f SET chunk_count = c.n, usage_bytes = c.bytes FROM ("
            " SELECT count(*) AS n, sum(octet_length(content)) AS bytes FROM chunks"
            " WHERE vector_store_id = %s AND file_id = %s) c WHERE f.vector_store_id = %s AND f.file_id = %s",
            (vector_store_id, file_id, vector_store_id, file_id),
        )
        t0 = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute(
            f"CREATE INDEX {index} ON chunks USING hnsw ((embedding::vector({dim})) vector_cosine_ops) "
            f"WHERE vector_dims(embedding) = {dim}"
        )
        out["hnsw_build_s"] = round(time.perf_counter() - t0, 1)
        conn.execute("VACUUM ANALYZE chunks")
        out["table_size_mb"] = round(conn.execute("SELECT pg_total_relation_size('chunks')").fetchone()[0] / 2**20, 1)
        out["chunks_in_store"] = conn.execute(
            "SELECT count(*) FROM chunks WHERE vector_store_id = %s", (vector_store_id,)
        ).fetchone()[0]
    return out


def explain_semantic(db_url: str, vector_store_id: str, dim: int) -> list[str]:
    from api.files.retrieval import SEMANTIC

    v = np.random.default_rng(5).standard_normal(dim)
    v /= np.linalg.norm(v)
    query = SEMANTIC.format(dim=dim, files="")
    with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
        conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.ef_search', '40', true)")
        rows = conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF) " + query,
            {"v": "[" + ",".join(map(str, v.tolist())) + "]", "stores": [vector_store_id], "files": None, "n": 40},
        ).fetchall()
    return [r[0] for r in rows if "::vector" not in r[0] or len(r[0]) < 200]


def time_searches(client: openai.OpenAI, vector_store_id: str, requests: list[dict], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        for body in requests:
            t0 = time.perf_counter()
            client.vector_stores.search(vector_store_id, **body)
            times.append(time.perf_counter() - t0)
    return times


# --- 4: recall ------------------------------------------------------------------------------------


def recall(client: openai.OpenAI, docs: dict[str, str], label: str) -> dict:
    store = client.vector_stores.create(name=f"recall-{label}")
    files = [(f"{pid}.txt", text.encode()) for pid, text in docs.items()]
    batch = client.vector_stores.file_batches.upload_and_poll(vector_store_id=store.id, files=files)
    assert batch.file_counts.completed == len(docs), batch
    by_name = {f"{pid}.txt": pid for pid in docs}
    hits1 = hits5 = 0
    rr = 0.0
    for question, answer in QUESTIONS:
        results = client.vector_stores.search(store.id, query=question, max_num_results=5).data
        ranked = [by_name.get(r.filename) for r in results]
        if ranked[:1] == [answer]:
            hits1 += 1
        if answer in ranked:
            hits5 += 1
            rr += 1 / (ranked.index(answer) + 1)
    n = len(QUESTIONS)
    return {"questions": n, "recall@1": round(hits1 / n, 3), "recall@5": round(hits5 / n, 3), "mrr@5": round(rr / n, 3)}


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=50, help="pages of the generated PDF (default 50)")
    parser.add_argument("--parse-repeats", type=int, default=5)
    parser.add_argument("--embed-chunks", type=int, default=400)
    parser.add_argument("--chunks", type=int, default=100_000, help="synthetic chunks in the search store")
    parser.add_argument("--words", type=int, default=200, help="words per synthetic chunk")
    parser.add_argument("--search-rounds", type=int, default=5, help="passes over the query set")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results: dict = {"environment": environment(), "args": vars(args) | {"out": str(args.out)}}

    with tempfile.TemporaryDirectory(prefix="bench-ingestion-") as tmp:
        pdf = Path(tmp) / "report.pdf"
        make_pdf(pdf, args.pages)
        pdf_bytes = pdf.read_bytes()
        make_pdf(Path(tmp) / "warm.pdf", 1, seed=4)
        warm_pdf = (Path(tmp) / "warm.pdf").read_bytes()
        print(f"# parse + chunk: {args.pages}-page PDF ({len(pdf_bytes) // 1024} KiB)", flush=True)
        results["parse_chunk"] = bench_parse(pdf, args.parse_repeats)
    print("# embedding", flush=True)
    results["embedding"] = bench_embed(args.embed_chunks)

    with stack() as st:
        client = openai.OpenAI(**sdk_kwargs(st.server_url))
        db_url = f"postgresql://postgres:@/postgres?host={st.workdir / 'data' / 'pgdata'}"

        print("# recall@5 through the search endpoint", flush=True)
        passages = all_passages()
        from ingestion import count_tokens

        results["recall"] = {
            "short": recall(client, passages, "short"),
            "long": recall(client, long_chunks(800, count_tokens=count_tokens), "long"),
        }

        # End to end, on a warm server (the recall stores loaded the parsers and the model): upload +
        # poll until the file is completed (queue, parse, chunk, embed, COPY into Postgres).
        store = client.vector_stores.create(name="pdf")
        client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("warm.pdf", warm_pdf))
        t0 = time.perf_counter()
        vf = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("report.pdf", pdf_bytes))
        wall = time.perf_counter() - t0
        results["end_to_end_pdf"] = {
            "status": vf.status,
            "seconds": round(wall, 3),
            "pages_per_s": round(results["parse_chunk"]["pages"] / wall, 1),
        }

        print(f"# loading {args.chunks:,} synthetic chunks", flush=True)
        big = client.vector_stores.create(name="100k")
        seed_file = client.vector_stores.files.upload_and_poll(
            vector_store_id=big.id, file=("seed.txt", " ".join(passages.values()).encode())
        )
        assert seed_file.status == "completed", seed_file
        with psycopg.connect(db_url, autocommit=True) as conn:
            dim = conn.execute("SELECT embedding_dimension FROM vector_stores WHERE id = %s", (big.id,)).fetchone()[0]
        load = load_synthetic(db_url, big.id, seed_file.id, args.chunks, dim, args.words)
        results["search_store"] = load | {"dimension": dim}
        print(f"  {load}", flush=True)
        plan = explain_semantic(db_url, big.id, dim)
        results["semantic_plan"] = plan
        uses_hnsw = any(f"chunks_hnsw_{dim}" in line for line in plan)

        questions = [q for q, _ in QUESTIONS]
        keywords = ["lighthouse keepers", "AMBER-4471", "autovacuum dead rows", "vacation carried over", "kalomi"]
        requests = {
            "questions": [{"query": q} for q in questions],
            "keywords": [{"query": q} for q in keywords],
            "questions, 50 results": [{"query": q, "max_num_results": 50} for q in questions[:10]],
            "filtered": [
                {"query": q, "filters": {"type": "eq", "key": "kind", "value": "seed"}} for q in questions[:10]
            ],
        }
        client.vector_stores.files.update(seed_file.id, vector_store_id=big.id, attributes={"kind": "seed"})
        time_searches(client, big.id, requests["questions"], 1)  # warm-up (caches, model load)
        latency = {}
        all_times: list[float] = []
        with st.cpu_usage(cpu := {}):
            for name, reqs in requests.items():
                times = time_searches(client, big.id, reqs, args.search_rounds)
                latency[name] = summary_ms(times) | {"p95": round(percentile([t * 1000 for t in times], 95), 3)}
                all_times += times
        latency["all"] = summary_ms(all_times) | {"p95": round(percentile([t * 1000 for t in all_times], 95), 3)}
        results["search_latency_ms"] = latency
        results["search_cpu_cores"] = cpu
        results["server_log_problems"] = st.server_log_problems()[:20]

    pc, em, lat = results["parse_chunk"], results["embedding"], results["search_latency_ms"]
    print_table(
        "Ingestion",
        [
            ("PDF parse + chunk (in process), pages/s", pc["pages_per_s_median"], TARGET_PAGES_PER_S,
             verdict(pc["pages_per_s_median"], TARGET_PAGES_PER_S, at_most=False)),
            ("PDF end to end (upload_and_poll), pages/s", results["end_to_end_pdf"]["pages_per_s"], None, ""),
            (f"chunks embedded/s ({em['model']}, ~{em['avg_tokens_per_chunk']:.0f} tokens)", em["chunks_per_s"], None, ""),
        ],
        ("measure", "value", "target", "verdict"),
    )
    print_table(
        f"Search latency through the endpoint, {results['search_store']['chunks_in_store']:,} chunks in the store (ms)",
        [(name, s["p50"], s["p95"], s["p99"], s["n"]) for name, s in lat.items()],
        ("queries", "p50", "p95", "p99", "n"),
    )
    print(f"  target p95 <= {TARGET_SEARCH_P95_MS} ms: {verdict(lat['all']['p95'], TARGET_SEARCH_P95_MS, at_most=True)}"
          f"; semantic query uses the HNSW index: {uses_hnsw}")
    rec = results["recall"]
    print_table(
        "Retrieval quality (hybrid search endpoint, 30 questions)",
        [(name, r["recall@1"], r["recall@5"], r["mrr@5"]) for name, r in rec.items()],
        ("passages", "recall@1", "recall@5", "MRR@5"),
    )
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
