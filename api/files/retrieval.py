"""Hybrid search over vector stores: semantic (pgvector, HNSW) + keyword (Postgres full text),
fused with reciprocal rank fusion.

Per query:
1. **Semantic**: the query is embedded with each store's own model (stores are grouped by
   recorded model and dimension), then the nearest chunks by cosine distance on
   `embedding::vector(<dim>)`. That expression, with `WHERE vector_dims(embedding) = <dim>`
   written as literals, is what the per-dimension partial HNSW index `chunks_hnsw_<dim>` is built
   on, so the planner can use it; for a small store it prefers the (store, file) b-tree and an exact
   sort instead, which is faster there. HNSW runs with `hnsw.iterative_scan = relaxed_order`, so a
   store that is a small part of the table, or an attribute filter, still gets its full quota of
   neighbours (the relaxed order is re-sorted).
2. **Keyword** (Postgres full text on the generated `chunks.tsv`, `simple` configuration): the
   query's words are its `simple` lexemes minus English stop words (the `assistgraph_query` text
   search configuration). Candidates are chunks containing all of them (`websearch_to_tsquery`, so
   quotes, `or` and `-word` work), then chunks containing any *selective* word (one found in
   fewer than `KEYWORD_CANDIDATES` chunks of the searched stores), rarest word first; each kind is
   capped at `KEYWORD_CANDIDATES` rows, so a common word can't make a query rank half the table.
   Candidates rank all-words matches first, then by the sum of the BM25 IDF (store-local document
   frequency) of the words they contain. Plain `ts_rank_cd` has no IDF, so "days" counted as much as
   "espresso": on the labelled set (bench/ingestion.py) the IDF ranking lifted recall@5 on
   800-token chunks from 0.80 to 0.90.
3. **Fusion**: RRF, score(chunk) = sum over lists of 1 / (60 + rank). The reported score is that sum
   divided by the best score a chunk could get (first in every list the query had: its semantic
   list, and its keyword list when the query has words left after stop words), so it lies in 0-1:
   1.0 = first by meaning and by keywords, ~0.5 = found by only one of the two. `score_threshold`
   applies to this score.

Rankers (`ranking_options.ranker` of the REST search): `auto` and `default-2024-11-15` are the
hybrid ranking above. `none` skips it: chunks come in order of semantic similarity alone, scored
by cosine similarity (clipped to 0-1), with no keyword list and no fusion.

Query rewriting (`rewrite_query`, `rewrite`): the query becomes its keywords, in order. Postgres's
own text search parser splits it (`ts_debug` over the `assistgraph_query` configuration, the one
the keyword search uses), English stop words are dropped, words are lower-cased and repeated ones
kept once: "What is the return policy for electronics?" searches "return policy electronics".
A query made only of stop words is kept as it was.

Attribute filters (comparison / compound, on the vector store file's `attributes`) are applied
before ranking: the matching (store, file) pairs are selected first and both searches are
restricted to them. Expired stores are skipped. A search makes its stores active
(`last_active_at`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from api.files import vector_stores as vs
from api.settings import Settings, get_settings

log = logging.getLogger(__name__)

RRF_K = 60
KEYWORD_CANDIDATES = 1000
MIN_DEPTH = 40

SELECT_SEARCHABLE = f"""
    SELECT vs.id, vs.embedding_model, vs.embedding_dimension
    FROM vector_stores vs WHERE vs.id = ANY(%(ids)s) AND NOT {vs._EXPIRED}
"""
ANALYSE_QUERY = """
    SELECT websearch_to_tsquery('assistgraph_query', %(q)s)::text AS strict,
           ARRAY(SELECT DISTINCT t FROM unnest(tsvector_to_array(to_tsvector('assistgraph_query', %(q)s))) AS t
                 ORDER BY t) AS terms,
           (SELECT coalesce(sum(chunk_count), 0) FROM vector_store_files
            WHERE vector_store_id = ANY(%(stores)s) AND status = 'completed') AS total
"""
# The query's tokens in order with their lexemes ({} for stop words, NULL for spaces and
# punctuation); the parts of hyphenated words come after the whole word and are skipped.
REWRITE_QUERY = """
    SELECT lexemes[1] AS word FROM ts_debug('assistgraph_query', %s)
    WHERE alias NOT IN ('hword_part', 'hword_asciipart', 'hword_numpart') AND cardinality(lexemes) > 0
"""
SEMANTIC = """
    WITH nn AS MATERIALIZED (
        SELECT c.id, c.embedding::vector({dim}) <=> %(v)s::vector({dim}) AS dist
        FROM chunks c
        WHERE vector_dims(c.embedding) = {dim} AND c.vector_store_id = ANY(%(stores)s) {files}
        ORDER BY c.embedding::vector({dim}) <=> %(v)s::vector({dim})
        LIMIT %(n)s
    )
    SELECT id, dist FROM nn ORDER BY dist, id
"""
# Keyword candidates and their ranking, in one statement:
# - weights: in how many of the stores' chunks each query word occurs (counted up to the cap), and
#   its BM25 IDF;
# - candidates: chunks with every word (websearch semantics), then chunks with any *selective* word
#   (found in fewer chunks than the cap), rarest word first; KEYWORD_CANDIDATES rows per kind;
# - rank: all-words matches first, then the sum of the IDF of the words a chunk contains (its
#   lexemes are read once per candidate).
KEYWORD = """
    WITH counts AS MATERIALIZED (
        SELECT t, q, (SELECT count(*) FROM (
            SELECT 1 FROM chunks c
            WHERE c.vector_store_id = ANY(%(stores)s) {files} AND c.tsv @@ terms.q LIMIT %(cap)s
        ) x) AS n
        FROM unnest(%(terms)s::text[], %(queries)s::tsquery[]) AS terms(t, q)
    ), weights AS MATERIALIZED (
        SELECT t, q, n, ln(1 + (greatest(%(total)s, n) - n + 0.5) / (n + 0.5)) AS idf FROM counts
    ), cand AS MATERIALIZED (
        (SELECT c.id, 1 AS tier FROM chunks c
         WHERE %(use_strict)s AND c.vector_store_id = ANY(%(stores)s) {files} AND c.tsv @@ %(strict)s::tsquery
         LIMIT %(cap)s)
        UNION ALL
        (SELECT m.id, 0 FROM (SELECT t, q, n FROM weights WHERE n > 0 AND n < %(cap)s ORDER BY n, t) w
         CROSS JOIN LATERAL (
             SELECT c.id FROM chunks c
             WHERE c.vector_store_id = ANY(%(stores)s) {files} AND c.tsv @@ w.q
         ) m
         LIMIT %(cap)s)
    ), uniq AS (
        SELECT id, max(tier) AS tier FROM cand GROUP BY id
    )
    SELECT u.id, u.tier, (SELECT coalesce(sum(w.idf), 0) FROM weights w WHERE w.t = ANY(l.lex)) AS score
    FROM uniq u
    JOIN chunks c ON c.id = u.id
    CROSS JOIN LATERAL (SELECT tsvector_to_array(c.tsv) AS lex OFFSET 0) l
    ORDER BY u.tier DESC, score DESC, u.id
    LIMIT %(n)s
"""
SELECT_HITS = """
    SELECT c.id, c.vector_store_id, c.file_id, c.content,
           coalesce(fl.obj->>'filename', c.file_id) AS filename, f.obj->'attributes' AS attributes
    FROM chunks c
    JOIN vector_store_files f ON f.vector_store_id = c.vector_store_id AND f.file_id = c.file_id
    LEFT JOIN files fl ON fl.id = c.file_id
    WHERE c.id = ANY(%s)
"""


@dataclass
class SearchHit:
    file_id: str
    filename: str
    score: float  # 0-1, see the module docstring
    content: str  # the chunk's text
    vector_store_id: str
    attributes: dict = field(default_factory=dict)


class SearchError(RuntimeError):
    """The search cannot run (e.g. a store's embedding model is unavailable)."""


RANKERS = ("none", "auto", "default-2024-11-15")


async def rewrite(pool, queries: Sequence[str]) -> list[str]:
    """Each query as its keywords (see the module docstring)."""
    out = []
    async with pool.connection() as conn:
        for query in queries:
            rows = await (await conn.execute(REWRITE_QUERY, (query,))).fetchall()
            words = list(dict.fromkeys(row["word"] for row in rows))
            out.append(" ".join(words) if words else query)
    return out


async def search(
    pool,
    vector_store_ids: list[str],
    query: str,
    *,
    max_num_results: int = 20,
    score_threshold: float = 0.0,
    filters: dict | None = None,
    settings: Settings | None = None,
) -> list[SearchHit]:
    """The best chunks of the given stores for `query`, best first (the file_search tool's search).
    Stores are not tenant-checked here: callers pass ids they resolved for the tenant."""
    return await search_queries(
        pool,
        vector_store_ids,
        [query],
        max_num_results=max_num_results,
        score_threshold=score_threshold,
        filters=filters,
        settings=settings,
    )


async def search_queries(
    pool,
    vector_store_ids: Sequence[str],
    queries: Sequence[str],
    *,
    max_num_results: int = 20,
    score_threshold: float = 0.0,
    filters: dict | None = None,
    settings: Settings | None = None,
    ranker: str = "auto",
) -> list[SearchHit]:
    """Like `search`, for one or more queries fused together (the REST search's `query` list);
    `ranker` `none` ranks by semantic similarity alone."""
    if ranker not in RANKERS:
        raise ValueError(f"unknown ranker {ranker!r}")
    settings = settings or get_settings()
    hybrid = ranker != "none"
    queries = [q for q in queries if q and q.strip()]
    if not vector_store_ids or not queries:
        return []
    depth = max(MIN_DEPTH, 2 * max_num_results)
    async with pool.connection() as conn:
        stores = await (await conn.execute(SELECT_SEARCHABLE, {"ids": list(vector_store_ids), "now": vs.now()})).fetchall()
        if not stores:
            return []
        store_ids = [row["id"] for row in stores]
        await vs.touch(conn, store_ids)
        allowed: set[tuple[str, str]] | None = None
        if filters:
            allowed = await _filtered_files(conn, store_ids, filters)
            if not allowed:
                return []
        groups: dict[tuple[str, int], list[str]] = {}
        for row in stores:
            groups.setdefault((row["embedding_model"], row["embedding_dimension"]), []).append(row["id"])
        models = {}
        for key in groups:
            try:
                models[key] = await asyncio.to_thread(vs.store_model, key[0], key[1], settings)
            except vs.EmbeddingUnavailable as exc:
                raise SearchError(str(exc)) from exc
        file_ids = sorted({f for _, f in allowed}) if allowed is not None else None

        fused: dict[int, float] = {}
        similarity: dict[int, float] = {}  # ranker `none`: best cosine similarity of each chunk
        best = 0.0
        for query in queries:
            lists: list[list[int]] = []
            vectors = await asyncio.gather(
                *(asyncio.to_thread(models[key].embeddings.embed_query, query) for key in groups)
            )
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                    "set_config('hnsw.ef_search', %s, true)",
                    (str(max(depth, 40)),),
                )
                for (key, ids), vector in zip(groups.items(), vectors):
                    if len(vector) != key[1] or not any(vector) or not all(map(math.isfinite, vector)):
                        continue  # no usable query vector (e.g. no known word): keyword only
                    nearest = await _semantic(conn, key[1], ids, vector, file_ids, depth)
                    lists.append([chunk_id for chunk_id, _ in nearest])
                    for chunk_id, dist in nearest:
                        similarity[chunk_id] = max(similarity.get(chunk_id, 0.0), 1.0 - dist)
            if not hybrid:
                continue
            keyword, has_terms = await _keyword(conn, store_ids, query, file_ids, depth)
            lists.append(keyword)
            best += (1 + (1 if has_terms else 0)) / (RRF_K + 1)
            for ranked in lists:
                for rank, chunk_id in enumerate(ranked, start=1):
                    fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
        if not hybrid:
            # No re-ranking: semantic neighbours by similarity, which is also the reported score.
            fused = {chunk_id: max(0.0, min(1.0, sim)) for chunk_id, sim in similarity.items()}
            best = 1.0
        if not fused or best == 0:
            return []
        ranked_ids = sorted(fused, key=lambda i: (-fused[i], i))
        rows = {
            row["id"]: row
            for row in await (await conn.execute(SELECT_HITS, (ranked_ids[: max(depth, max_num_results) * 2],))).fetchall()
        }
    hits: list[SearchHit] = []
    for chunk_id in ranked_ids:
        row = rows.get(chunk_id)
        if row is None:
            continue  # deleted meanwhile
        if allowed is not None and (row["vector_store_id"], row["file_id"]) not in allowed:
            continue
        score = min(1.0, fused[chunk_id] / best)
        if score < score_threshold:
            break
        hits.append(
            SearchHit(
                file_id=row["file_id"],
                filename=row["filename"],
                score=round(score, 6),
                content=row["content"],
                vector_store_id=row["vector_store_id"],
                attributes=row["attributes"] or {},
            )
        )
        if len(hits) >= max_num_results:
            break
    return hits


async def _semantic(
    conn: AsyncConnection, dim: int, store_ids: list[str], vector: list[float], file_ids: list[str] | None, depth: int
) -> list[tuple[int, float]]:
    """(chunk id, cosine distance), nearest first."""
    dim = int(dim)
    files = "AND c.file_id = ANY(%(files)s)" if file_ids is not None else ""
    query = sql.SQL(SEMANTIC.format(dim=dim, files=files))
    params = {"v": vs.vector_literal(vector), "stores": store_ids, "files": file_ids, "n": depth}
    return [(row["id"], float(row["dist"])) for row in await (await conn.execute(query, params)).fetchall()]


def _tsquery_lexeme(lexeme: str) -> str:
    """A one-lexeme tsquery (text form), quoted verbatim (no parsing, no normalisation)."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


async def _keyword(
    conn: AsyncConnection, store_ids: list[str], query: str, file_ids: list[str] | None, depth: int
) -> tuple[list[int], bool]:
    """(ranked chunk ids, whether the query has any word to look for)."""
    row = await (await conn.execute(ANALYSE_QUERY, {"q": query, "stores": store_ids})).fetchone()
    strict, terms = row["strict"] or "", list(row["terms"] or [])
    if not terms:
        return [], False
    files = "AND c.file_id = ANY(%(files)s)" if file_ids is not None else ""
    params = {
        "use_strict": bool(strict),
        "strict": strict or "x",
        "terms": terms,
        "queries": [_tsquery_lexeme(t) for t in terms],
        "total": int(row["total"]),
        "stores": store_ids,
        "files": file_ids,
        "cap": KEYWORD_CANDIDATES,
        "n": depth,
    }
    cur = await conn.execute(sql.SQL(KEYWORD.format(files=files)), params)
    return [r["id"] for r in await cur.fetchall()], True


# --- attribute filters -------------------------------------------------------------------------

_SELECT_FILTERED = "SELECT vector_store_id, file_id FROM vector_store_files f WHERE f.vector_store_id = ANY({stores}) AND f.status = 'completed' AND ({cond})"
_COMPARE = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


async def _filtered_files(conn: AsyncConnection, store_ids: list[str], filters: dict) -> set[tuple[str, str]]:
    cond = filter_sql(filters)
    query = sql.SQL(_SELECT_FILTERED).format(stores=sql.Literal(store_ids), cond=cond)
    return {(r["vector_store_id"], r["file_id"]) for r in await (await conn.execute(query)).fetchall()}


def filter_sql(node: dict) -> sql.Composable:
    """A SQL condition on `f.obj->'attributes'` for a ComparisonFilter / CompoundFilter (as JSON).

    eq / ne compare JSON values (strings, numbers, booleans; a number equals the same number whatever
    its spelling); gt / gte / lt / lte compare numbers with numbers and strings with strings (an
    attribute of another type, or missing, does not match); in / nin test membership in a list.
    `ne` and `nin` match files that lack the attribute."""
    kind = node.get("type")
    if kind in ("and", "or"):
        parts = [filter_sql(child) for child in node.get("filters") or []]
        if not parts:
            return sql.SQL("TRUE" if kind == "and" else "FALSE")
        return sql.SQL("(") + sql.SQL(f" {kind.upper()} ").join(parts) + sql.SQL(")")
    key, value = node["key"], node["value"]
    attr = sql.SQL("(f.obj->'attributes'->{})").format(sql.Literal(key))
    if kind in ("in", "nin"):
        values = value if isinstance(value, list) else [value]
        member = sql.SQL("coalesce({}::jsonb @> jsonb_build_array({}), false)").format(sql.Literal(Jsonb(values)), attr)
        return member if kind == "in" else sql.SQL("NOT ") + member
    if kind == "eq":
        return sql.SQL("coalesce({} = {}::jsonb, false)").format(attr, sql.Literal(Jsonb(value)))
    if kind == "ne":
        return sql.SQL("({} IS DISTINCT FROM {}::jsonb)").format(attr, sql.Literal(Jsonb(value)))
    op = sql.SQL(_COMPARE[kind])
    if isinstance(value, bool):
        return sql.SQL("coalesce({} {} {}::jsonb, false)").format(attr, op, sql.Literal(Jsonb(value)))
    if isinstance(value, (int, float)):
        return sql.SQL(
            "(CASE WHEN jsonb_typeof({a}) = 'number' THEN ({a} #>> '{{}}')::numeric {op} {v} ELSE false END)"
        ).format(a=attr, op=op, v=sql.Literal(value))
    return sql.SQL(
        "(CASE WHEN jsonb_typeof({a}) = 'string' THEN ({a} #>> '{{}}') {op} {v} ELSE false END)"
    ).format(a=attr, op=op, v=sql.Literal(str(value)))
