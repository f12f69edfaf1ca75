"""Vector stores, vector store files, file batches and search, through the real server and the
official SDK in strict mode (raw httpx where exact error bodies matter, psycopg where a test
needs to move time: expiry).

Documents are generated here (reportlab PDF, python-docx, HTML, Markdown, text). Ingestion runs
in the server's job queue workers; the offline default embedding model (WordLlama) embeds.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import openai
import psycopg
import pytest

from api.files import vector_stores
from tests.conftest import _extra_server, _own_database, assert_error, server_env, start_process, stop_process
from tests.test_tenancy import as_key, new_key

WORDLLAMA = "wordllama/l2_supercat-256"

# --- generated documents -------------------------------------------------------------------------

LIGHTHOUSE = [
    "Harwick Point Lighthouse: annual report",
    "The lighthouse stands on a granite island two miles off the northern coast.",
    "The Harwick Point lighthouse was automated in 1987; before that, three keepers lived on the "
    "island and rotated four-week shifts.",
    "Supply boats visit the island every second Tuesday when the sea allows.",
]
VACATION = [
    "Employee handbook: time off",
    "Full-time employees accrue 1.5 vacation days per month, and up to ten unused days may be "
    "carried over into the next calendar year.",
    "The vault in room B12 is opened with the code ZEPHYR-5521.",
]
SHIPPING_HTML = (
    "<html><head><title>Shipping</title></head><body><h1>Shipping policy</h1>"
    "<p>Standard shipping takes 3 to 5 business days; express orders placed before 2 p.m. are "
    "delivered the next business day.</p></body></html>"
)
ESPRESSO_MD = (
    "# Coffee guide\n\nTo pull a balanced espresso shot, grind the beans fine, dose about 18 grams, "
    "and aim for roughly 36 grams of liquid in 25 to 30 seconds.\n\n- Use fresh beans\n- Preheat the cup\n"
)
VOLCANO_TXT = (
    "Shield volcanoes such as Mauna Loa are built from fluid basaltic lava flows, giving them broad, "
    "gently sloping sides.\n"
)


def make_pdf(lines: list[str], pages: int = 2) -> bytes:
    from reportlab.lib.pagesizes import letter
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=letter)
    per_page = max(1, len(lines) // pages)
    for start in range(0, len(lines), per_page):
        y = 720
        for line in lines[start : start + per_page]:
            c.setFont("Helvetica", 11)
            for piece in re.findall(r".{1,85}(?:\s|$)", line):
                c.drawString(72, y, piece.strip())
                y -= 14
            y -= 10
        c.showPage()
    c.save()
    return buf.getvalue()


def make_docx(paragraphs: list[str]) -> bytes:
    import docx

    d = docx.Document()
    d.add_heading(paragraphs[0], level=1)
    for p in paragraphs[1:]:
        d.add_paragraph(p)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


CORRUPT_PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\nthis is not really a pdf\n%%EOF"


def documents() -> dict[str, bytes]:
    return {
        "lighthouse.pdf": make_pdf(LIGHTHOUSE),
        "handbook.docx": make_docx(VACATION),
        "shipping.html": SHIPPING_HTML.encode(),
        "coffee.md": ESPRESSO_MD.encode(),
        "volcano.txt": VOLCANO_TXT.encode(),
    }


def upload(client: openai.OpenAI, name: str, data: bytes):
    return client.files.create(file=(name, io.BytesIO(data)), purpose="assistants")


@pytest.fixture
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer sk-client"}, timeout=30) as c:
        yield c


def counts(obj) -> dict:
    return obj.file_counts.model_dump()


@pytest.fixture(scope="module")
def corpus(server):
    """One store with five documents (PDF, DOCX, HTML, Markdown, text), each with attributes."""
    client = openai.OpenAI(base_url=server.url, api_key="sk-client", _strict_response_validation=True, max_retries=0)
    store = client.vector_stores.create(name="corpus")
    attributes = {
        "lighthouse.pdf": {"dept": "ops", "year": 2019, "public": True},
        "handbook.docx": {"dept": "hr", "year": 2024, "public": False},
        "shipping.html": {"dept": "sales", "year": 2023, "public": True},
        "coffee.md": {"dept": "kitchen", "year": 2021, "public": True},
        "volcano.txt": {"dept": "science", "year": 2020, "public": True},
    }
    files = {name: upload(client, name, data) for name, data in documents().items()}
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id,
        files=[{"file_id": f.id, "attributes": attributes[name]} for name, f in files.items()],
    )
    assert batch.status == "completed" and batch.file_counts.completed == 5, batch
    return client, store, files


# --- vector stores -------------------------------------------------------------------------------


def test_vector_store_crud_and_pagination(client):
    created = client.vector_stores.create(
        name="crud",
        description="for the crud test",
        metadata={"team": "search"},
        expires_after={"anchor": "last_active_at", "days": 30},
    )
    assert created.id.startswith("vs_") and created.object == "vector_store"
    assert created.name == "crud" and created.metadata == {"team": "search"}
    assert created.status == "completed" and created.usage_bytes == 0
    assert counts(created) == {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0}
    assert created.last_active_at == created.created_at
    assert created.expires_after.days == 30 and created.expires_at == created.last_active_at + 30 * 86400

    assert client.vector_stores.retrieve(created.id) == created

    updated = client.vector_stores.update(created.id, name="renamed", metadata={"team": "core"}, expires_after=None)
    assert updated.name == "renamed" and updated.metadata == {"team": "core"}
    assert updated.expires_after is None and updated.expires_at is None
    again = client.vector_stores.update(created.id, expires_after={"anchor": "last_active_at", "days": 2})
    assert again.name == "renamed" and again.expires_at == again.last_active_at + 2 * 86400

    unnamed = client.vector_stores.create()
    assert unnamed.name == "" and unnamed.metadata == {} and unnamed.expires_after is None

    ids = [client.vector_stores.create(name=f"page-{i}").id for i in range(3)]
    page = client.vector_stores.list(limit=2)
    assert [s.id for s in page.data] == ids[::-1][:2] and page.has_more
    assert [s.id for s in client.vector_stores.list(limit=2, after=ids[1]).data][:1] == [ids[0]]
    asc = [s.id for s in client.vector_stores.list(order="asc", limit=100).data]
    assert asc.index(created.id) < asc.index(ids[0]) < asc.index(ids[2])
    every = [s.id for s in client.vector_stores.list(limit=2)]  # auto-pagination
    assert set(ids) <= set(every) and created.id in every

    deleted = client.vector_stores.delete(created.id)
    assert deleted.id == created.id and deleted.deleted and deleted.object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(created.id)


def test_vector_store_errors(http, client):
    missing = f"vs_{uuid.uuid4().hex[:24]}"
    assert_error(http.get(f"/vector_stores/{missing}"), 404, message=f"No vector store found with id '{missing}'.")
    assert_error(http.delete(f"/vector_stores/{missing}"), 404)
    assert_error(http.post(f"/vector_stores/{missing}/search", json={"query": "x"}), 404)
    assert_error(http.get("/vector_stores/asst_123"), 400, param="vector_store_id")
    assert_error(http.post("/vector_stores", json={"file_ids": ["file-x"] * 501}), 400, param="file_ids")
    assert_error(
        http.post("/vector_stores", json={"expires_after": {"anchor": "last_active_at", "days": 0}}),
        400,
        param="expires_after.days",
    )
    assert_error(
        http.post("/vector_stores", json={"expires_after": {"anchor": "created_at", "days": 3}}),
        400,
        param="expires_after.anchor",
    )
    bad_static = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 60}}
    assert_error(
        http.post("/vector_stores", json={"chunking_strategy": bad_static}),
        400,
        param="chunking_strategy.static.chunk_overlap_tokens",
    )
    for bad, param in (
        ({"type": "dynamic"}, "chunking_strategy.type"),
        ({"type": "static"}, "chunking_strategy.static"),
        ({"type": "static", "static": {"max_chunk_size_tokens": 99, "chunk_overlap_tokens": 0}}, "chunking_strategy.static.max_chunk_size_tokens"),
        ({"type": "static", "static": {"max_chunk_size_tokens": 5000, "chunk_overlap_tokens": 0}}, "chunking_strategy.static.max_chunk_size_tokens"),
        ({"type": "auto", "static": {}}, "chunking_strategy.static"),
    ):
        assert_error(http.post("/vector_stores", json={"chunking_strategy": bad}), 400, param=param)
    assert_error(http.post("/vector_stores", json={"metadata": {str(i): "v" for i in range(17)}}), 400, param="metadata")
    # An unknown file: nothing is created.
    before = len(client.vector_stores.list(limit=100).data)
    assert_error(
        http.post("/vector_stores", json={"name": "x", "file_ids": ["file-doesnotexist"]}),
        404,
        param="file_ids",
        message="No such File object: file-doesnotexist",
    )
    assert len(client.vector_stores.list(limit=100).data) == before
    store = client.vector_stores.create(name="errors")
    assert_error(
        http.post(f"/vector_stores/{store.id}/files", json={"file_id": "file-nope"}),
        404,
        param="file_id",
        message="No such File object: file-nope",
    )
    assert_error(http.get(f"/vector_stores/{store.id}/files/file-nope"), 404)
    assert_error(http.get(f"/vector_stores/{store.id}/file_batches/vsfb_nope"), 404)
    assert_error(http.get(f"/vector_stores/{store.id}/file_batches/batch_nope"), 400, param="batch_id")
    assert_error(http.post(f"/vector_stores/{store.id}/file_batches", json={}), 400, param="file_ids")
    assert_error(http.post(f"/vector_stores/{store.id}/file_batches", json={"file_ids": []}), 400, param="file_ids")
    f = upload(client, "a.txt", b"alpha beta")
    both = {"file_ids": [f.id], "files": [{"file_id": f.id}]}
    assert http.post(f"/vector_stores/{store.id}/file_batches", json=both).status_code == 400
    too_many = {"file_id": f.id, "attributes": {f"k{i}": i for i in range(17)}}
    assert_error(http.post(f"/vector_stores/{store.id}/files", json=too_many), 400, param="attributes")
    long_value = {"file_id": f.id, "attributes": {"k": "x" * 513}}
    assert http.post(f"/vector_stores/{store.id}/files", json=long_value).status_code == 400
    for body, param in (
        ({"query": "x", "max_num_results": 0}, "max_num_results"),
        ({"query": "x", "max_num_results": 51}, "max_num_results"),
        ({"query": "x", "ranking_options": {"score_threshold": 1.5}}, "ranking_options.score_threshold"),
        ({"query": "x", "ranking_options": {"ranker": "bm25"}}, "ranking_options.ranker"),
        ({"query": "x", "filters": {"type": "eq", "key": "k"}}, "filters.value"),
        ({"query": "x", "filters": {"type": "in", "key": "k", "value": "a"}}, "filters.value"),
        ({"query": "x", "filters": {"type": "like", "key": "k", "value": "a"}}, "filters.type"),
        ({"query": "x", "filters": {"type": "and", "filters": [{"type": "eq", "key": 1, "value": "a"}]}}, "filters.filters[0].key"),
        ({"query": "x", "filters": {"type": "or", "filters": [{"type": "eq", "key": "k", "value": None}]}}, "filters.filters[0].value"),
        ({"query": "x", "filters": {"type": "eq", "key": "k", "value": 1, "extra": 1}}, "filters.extra"),
        ({"query": ""}, "query"),
        ({}, "query"),
    ):
        assert_error(http.post(f"/vector_stores/{store.id}/search", json=body), 400, param=param)


def test_another_tenants_files_and_stores_do_not_exist(auth_server):
    a, b = (as_key(auth_server, new_key(auth_server, name=n)) for n in ("vs tenant A", "vs tenant B"))
    file_a = upload(a, "secret.txt", b"The launch code is HERON-0042.")
    store_a = a.vector_stores.create(name="A", file_ids=[file_a.id])
    store_b = b.vector_stores.create(name="B")
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        b.vector_stores.files.create(vector_store_id=store_b.id, file_id=file_a.id)
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        b.vector_stores.create(file_ids=[file_a.id])
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        b.vector_stores.file_batches.create(vector_store_id=store_b.id, file_ids=[file_a.id])
    for call in (
        lambda: b.vector_stores.retrieve(store_a.id),
        lambda: b.vector_stores.search(store_a.id, query="launch code"),
        lambda: b.vector_stores.files.list(vector_store_id=store_a.id),
        lambda: b.vector_stores.files.retrieve(file_a.id, vector_store_id=store_a.id),
        lambda: b.vector_stores.delete(store_a.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert store_a.id not in [s.id for s in b.vector_stores.list()]
    done = a.vector_stores.files.poll(file_a.id, vector_store_id=store_a.id, poll_interval_ms=50)
    assert done.status == "completed"
    assert "HERON-0042" in a.vector_stores.search(store_a.id, query="launch code").data[0].content[0].text


# --- files, batches and the SDK helpers ------------------------------------------------------------


def test_sdk_helpers_and_exact_counts(client, tmp_path):
    store = client.vector_stores.create(name="helpers")
    path = tmp_path / "volcano.txt"
    path.write_bytes(VOLCANO_TXT.encode())
    uploaded = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=path)
    assert uploaded.status == "completed" and uploaded.last_error is None
    assert uploaded.object == "vector_store.file" and uploaded.vector_store_id == store.id
    assert uploaded.chunking_strategy.type == "static"
    assert uploaded.chunking_strategy.static.max_chunk_size_tokens == 800
    assert uploaded.chunking_strategy.static.chunk_overlap_tokens == 400
    assert uploaded.usage_bytes == len(VOLCANO_TXT.strip().encode())

    f = upload(client, "coffee.md", ESPRESSO_MD.encode())
    attached = client.vector_stores.files.create_and_poll(
        file_id=f.id,
        vector_store_id=store.id,
        attributes={"kind": "guide", "rank": 2, "draft": False},
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 100}},
    )
    assert attached.id == f.id and attached.status == "completed"
    assert attached.attributes == {"kind": "guide", "rank": 2, "draft": False}
    assert attached.chunking_strategy.static.max_chunk_size_tokens == 200

    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id,
        files=[("lighthouse.pdf", make_pdf(LIGHTHOUSE)), ("handbook.docx", make_docx(VACATION))],
    )
    assert batch.id.startswith("vsfb_") and batch.object == "vector_store.files_batch"
    assert batch.status == "completed"
    assert counts(batch) == {"in_progress": 0, "completed": 2, "failed": 0, "cancelled": 0, "total": 2}
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert len(listed.data) == 2 and all(x.status == "completed" for x in listed.data)

    g = upload(client, "shipping.html", SHIPPING_HTML.encode())
    batch2 = client.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=[g.id])
    assert batch2.status == "completed" and batch2.file_counts.total == 1
    assert client.vector_stores.file_batches.retrieve(batch2.id, vector_store_id=store.id) == batch2

    current = client.vector_stores.retrieve(store.id)
    assert current.status == "completed"
    assert counts(current) == {"in_progress": 0, "completed": 5, "failed": 0, "cancelled": 0, "total": 5}
    files = list(client.vector_stores.files.list(vector_store_id=store.id))
    assert len(files) == 5
    assert current.usage_bytes == sum(x.usage_bytes for x in files) > 0


def test_bad_files_fail_without_disturbing_their_batch(client):
    store = client.vector_stores.create(name="bad files")
    good = {name: upload(client, name, data) for name, data in documents().items()}
    corrupt = upload(client, "broken.pdf", CORRUPT_PDF)
    empty = upload(client, "empty.txt", b"")
    unsupported = upload(client, "tool.exe", b"MZ\x90\x00\x03\x00\x00\x00\x04\x00")
    ids = [corrupt.id, *(f.id for f in good.values()), empty.id, unsupported.id]
    batch = client.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=ids)
    assert batch.status == "completed"
    assert counts(batch) == {"in_progress": 0, "completed": 5, "failed": 3, "cancelled": 0, "total": 8}
    by_id = {f.id: f for f in client.vector_stores.files.list(vector_store_id=store.id, limit=100)}
    assert by_id[corrupt.id].status == "failed" and by_id[corrupt.id].last_error.code == "invalid_file"
    assert by_id[empty.id].status == "failed" and by_id[empty.id].last_error.code == "invalid_file"
    assert by_id[unsupported.id].last_error.code == "unsupported_file"
    assert all(by_id[f.id].status == "completed" and by_id[f.id].last_error is None for f in good.values())
    assert all(by_id[i].last_error.message for i in (corrupt.id, empty.id, unsupported.id))
    failed = client.vector_stores.files.list(vector_store_id=store.id, filter="failed")
    assert {f.id for f in failed.data} == {corrupt.id, empty.id, unsupported.id}
    completed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id, filter="completed")
    assert {f.id for f in completed.data} == {f.id for f in good.values()}
    current = client.vector_stores.retrieve(store.id)
    assert current.status == "completed" and counts(current) == counts(batch)
    # The good files are searchable.
    hits = client.vector_stores.search(store.id, query="vault code ZEPHYR-5521").data
    assert hits[0].file_id == good["handbook.docx"].id


def test_vector_store_created_with_file_ids_and_static_chunking(client):
    text = " ".join(f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(200))
    f = upload(client, "long.txt", text.encode())
    store = client.vector_stores.create(
        name="with files",
        file_ids=[f.id],
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}},
    )
    assert counts(store)["total"] == 1 and store.status in ("in_progress", "completed")
    done = client.vector_stores.files.poll(f.id, vector_store_id=store.id, poll_interval_ms=50)
    assert done.status == "completed"
    assert done.chunking_strategy.static.max_chunk_size_tokens == 100
    pieces = list(client.vector_stores.files.content(f.id, vector_store_id=store.id))
    assert len(pieces) > 5 and all(p.type == "text" for p in pieces)
    # The pieces are the parsed text without the chunks' overlap.
    joined = "".join(p.text for p in pieces)
    assert re.sub(r"\s+", " ", joined).strip() == text
    assert done.usage_bytes > len(text)  # every chunk's text counts, overlap included


def test_update_attributes_detach_and_file_delete(client, corpus):
    _, store, files = corpus
    scratch = client.vector_stores.create(name="detach")
    a = upload(client, "a.md", ESPRESSO_MD.encode())
    b = upload(client, "b.txt", VOLCANO_TXT.encode())
    for f in (a, b):
        client.vector_stores.files.create_and_poll(file_id=f.id, vector_store_id=scratch.id, attributes={"v": 1})
    before = client.vector_stores.retrieve(scratch.id)
    assert counts(before)["completed"] == 2

    updated = client.vector_stores.files.update(a.id, vector_store_id=scratch.id, attributes={"v": 2, "tag": "new"})
    assert updated.attributes == {"v": 2, "tag": "new"}
    assert client.vector_stores.files.retrieve(a.id, vector_store_id=scratch.id).attributes == {"v": 2, "tag": "new"}
    hits = client.vector_stores.search(scratch.id, query="espresso", filters={"type": "eq", "key": "tag", "value": "new"})
    assert {h.file_id for h in hits.data} == {a.id} and hits.data[0].attributes == {"v": 2, "tag": "new"}

    # Detaching removes the file from the store only.
    usage_b = client.vector_stores.files.retrieve(b.id, vector_store_id=scratch.id).usage_bytes
    gone = client.vector_stores.files.delete(b.id, vector_store_id=scratch.id)
    assert gone.id == b.id and gone.deleted and gone.object == "vector_store.file.deleted"
    assert client.files.retrieve(b.id).id == b.id
    after = client.vector_stores.retrieve(scratch.id)
    assert counts(after) == {"in_progress": 0, "completed": 1, "failed": 0, "cancelled": 0, "total": 1}
    assert after.usage_bytes == before.usage_bytes - usage_b
    assert all(h.file_id != b.id for h in client.vector_stores.search(scratch.id, query="volcano lava").data)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(b.id, vector_store_id=scratch.id)

    # Deleting the File removes it from every store it is in.
    client.vector_stores.files.create_and_poll(file_id=a.id, vector_store_id=store.id)
    assert client.files.delete(a.id).deleted
    for vs_id in (scratch.id, store.id):
        assert a.id not in [f.id for f in client.vector_stores.files.list(vector_store_id=vs_id, limit=100)]
        assert all(h.file_id != a.id for h in client.vector_stores.search(vs_id, query="espresso shot grind").data)
    emptied = client.vector_stores.retrieve(scratch.id)
    assert counts(emptied) == {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 0, "total": 0}
    assert emptied.usage_bytes == 0
    assert counts(client.vector_stores.retrieve(store.id))["total"] == 5


def test_reattaching_a_file_starts_it_over(client):
    store = client.vector_stores.create(name="reattach")
    f = upload(client, "v.txt", VOLCANO_TXT.encode())
    first = client.vector_stores.files.create_and_poll(file_id=f.id, vector_store_id=store.id, attributes={"n": 1})
    second = client.vector_stores.files.create_and_poll(file_id=f.id, vector_store_id=store.id, attributes={"n": 2})
    assert first.status == second.status == "completed" and second.attributes == {"n": 2}
    assert counts(client.vector_stores.retrieve(store.id))["total"] == 1
    hits = client.vector_stores.search(store.id, query="Mauna Loa").data
    assert len(hits) == 1 and hits[0].attributes == {"n": 2}


# --- search --------------------------------------------------------------------------------------


def test_search_finds_a_fact_only_in_one_document(corpus):
    client, store, files = corpus
    semantic = client.vector_stores.search(store.id, query="When did the lighthouse stop needing resident keepers?")
    assert semantic.data[0].file_id == files["lighthouse.pdf"].id
    assert semantic.data[0].filename == "lighthouse.pdf"
    assert "1987" in semantic.data[0].content[0].text
    assert semantic.data[0].attributes == {"dept": "ops", "year": 2019, "public": True}
    assert 0 < semantic.data[0].score <= 1
    assert [h.score for h in semantic.data] == sorted((h.score for h in semantic.data), reverse=True)

    keyword = client.vector_stores.search(store.id, query="ZEPHYR-5521")
    assert keyword.data[0].file_id == files["handbook.docx"].id
    assert "ZEPHYR-5521" in keyword.data[0].content[0].text

    coffee = client.vector_stores.search(store.id, query="how many grams of coffee go into an espresso?")
    assert coffee.data[0].file_id == files["coffee.md"].id
    shipping = client.vector_stores.search(store.id, query="next business day delivery for express orders")
    assert shipping.data[0].file_id == files["shipping.html"].id

    raw = client.vector_stores.with_raw_response.search(store.id, query=["lighthouse", "vault"], rewrite_query=True)
    body = json.loads(raw.text)
    assert body["object"] == "vector_store.search_results.page"
    assert body["search_query"] == ["lighthouse", "vault"] and body["has_more"] is False and body["next_page"] is None
    top2 = {d["file_id"] for d in body["data"][:2]}
    assert top2 == {files["lighthouse.pdf"].id, files["handbook.docx"].id}


def test_search_max_num_results_and_score_threshold(corpus):
    client, store, files = corpus
    assert len(client.vector_stores.search(store.id, query="policy").data) == 5  # one chunk per document
    assert len(client.vector_stores.search(store.id, query="policy", max_num_results=2).data) == 2
    everything = client.vector_stores.search(store.id, query="vault code ZEPHYR-5521", max_num_results=50)
    assert len(everything.data) == 5 and min(h.score for h in everything.data) < 0.6
    strict = client.vector_stores.search(
        store.id, query="vault code ZEPHYR-5521", ranking_options={"score_threshold": 0.75, "ranker": "auto"}
    )
    # Only the chunk found both by meaning and by keywords clears 0.75.
    assert [h.file_id for h in strict.data] == [files["handbook.docx"].id]
    assert strict.data[0].score >= 0.75
    high = client.vector_stores.search(
        store.id, query="vault code", ranking_options={"score_threshold": 0.9, "ranker": "default-2024-11-15"}
    ).data
    assert all(h.score >= 0.9 for h in high)


def test_search_attribute_filters(corpus):
    client, store, files = corpus
    query = "information"

    def found(filters) -> set[str]:
        hits = client.vector_stores.search(store.id, query=query, filters=filters, max_num_results=50).data
        names = {h.filename for h in hits}
        return names

    assert found({"type": "eq", "key": "dept", "value": "hr"}) == {"handbook.docx"}
    assert found({"type": "ne", "key": "dept", "value": "hr"}) == set(files) - {"handbook.docx"}
    assert found({"type": "gt", "key": "year", "value": 2021}) == {"handbook.docx", "shipping.html"}
    assert found({"type": "lte", "key": "year", "value": 2020}) == {"lighthouse.pdf", "volcano.txt"}
    assert found({"type": "eq", "key": "public", "value": False}) == {"handbook.docx"}
    assert found({"type": "in", "key": "dept", "value": ["ops", "kitchen"]}) == {"lighthouse.pdf", "coffee.md"}
    assert found({"type": "nin", "key": "dept", "value": ["ops", "kitchen"]}) == {"handbook.docx", "shipping.html", "volcano.txt"}
    assert found(
        {
            "type": "and",
            "filters": [
                {"type": "eq", "key": "public", "value": True},
                {"type": "or", "filters": [{"type": "gte", "key": "year", "value": 2023}, {"type": "eq", "key": "dept", "value": "ops"}]},
            ],
        }
    ) == {"shipping.html", "lighthouse.pdf"}
    assert found({"type": "eq", "key": "dept", "value": "nobody"}) == set()
    # A filter narrows a semantic query to the matching file even when another ranks higher.
    hits = client.vector_stores.search(
        store.id, query="lighthouse keepers", filters={"type": "eq", "key": "dept", "value": "science"}
    ).data
    assert [h.filename for h in hits] == ["volcano.txt"]


def test_search_makes_the_store_active(corpus, database_url):
    client, store, _ = corpus
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE vector_stores SET last_active_at = last_active_at - 1000 WHERE id = %s", (store.id,))
    stale = client.vector_stores.retrieve(store.id).last_active_at
    assert stale <= int(time.time()) - 999
    client.vector_stores.search(store.id, query="anything")
    assert client.vector_stores.retrieve(store.id).last_active_at >= int(time.time()) - 2


# --- expiry --------------------------------------------------------------------------------------


def test_expiry(client, database_url, http):
    store = client.vector_stores.create(name="expiring", expires_after={"anchor": "last_active_at", "days": 1})
    assert store.expires_at == store.last_active_at + 86400 and store.status == "completed"
    f = upload(client, "v.txt", VOLCANO_TXT.encode())
    client.vector_stores.files.create_and_poll(file_id=f.id, vector_store_id=store.id)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE vector_stores SET last_active_at = %s WHERE id = %s", (int(time.time()) - 2 * 86400, store.id)
        )
    expired = client.vector_stores.retrieve(store.id)
    assert expired.status == "expired" and expired.expires_at <= time.time()
    # The periodic sweep (every minute in the workers) makes it sticky.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(vector_stores.SWEEP_EXPIRED, {"now": int(time.time())})
        assert conn.execute("SELECT expired FROM vector_stores WHERE id = %s", (store.id,)).fetchone()[0] is True
    assert {s.id: s.status for s in client.vector_stores.list(limit=100)}[store.id] == "expired"
    assert_error(http.post(f"/vector_stores/{store.id}/search", json={"query": "lava"}), 400)
    # An expired store stays expired, whatever its policy becomes.
    assert client.vector_stores.update(store.id, expires_after=None).status == "expired"
    assert client.vector_stores.retrieve(store.id).status == "expired"
    # Not expired: a store without a policy, and one whose policy has not run out.
    fresh = client.vector_stores.create(expires_after={"anchor": "last_active_at", "days": 365})
    assert fresh.status == "completed"


# --- cancelling a batch, ingestion only in workers ------------------------------------------------


@pytest.fixture(scope="module")
def no_worker(scripted, workdir: Path, database_url: str):
    """An API process that executes no jobs, in a database of its own: files stay queued until a
    worker runs."""
    url = _own_database(database_url, "vs_no_worker")
    srv = _extra_server(scripted, workdir, "vs-no-worker", url, ASSISTGRAPH_EXECUTOR="false")
    yield srv, url
    stop_process(srv.proc)


def test_cancel_batch_and_background_ingestion(no_worker, scripted, workdir):
    srv, url = no_worker
    client = openai.OpenAI(base_url=srv.url, api_key="x", _strict_response_validation=True, max_retries=0)
    store = client.vector_stores.create(name="cancel")
    files = [upload(client, f"f{i}.txt", f"Document {i} mentions the word kestrel.".encode()) for i in range(4)]
    batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[f.id for f in files[:3]])
    assert batch.status == "in_progress"
    assert counts(batch) == {"in_progress": 3, "completed": 0, "failed": 0, "cancelled": 0, "total": 3}
    single = client.vector_stores.files.create(vector_store_id=store.id, file_id=files[3].id)
    assert single.status == "in_progress"
    # No worker: nothing was ingested in the request, and the four jobs wait in the queue.
    with psycopg.connect(url, autocommit=True) as conn:
        waiting = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s AND status = 'todo'", (vector_stores.INGEST_FILE,)
        ).fetchone()[0]
    assert waiting == 4
    assert client.vector_stores.retrieve(store.id).status == "in_progress"
    assert counts(client.vector_stores.retrieve(store.id))["in_progress"] == 4

    cancelled = client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert cancelled.status == "cancelled"
    assert counts(cancelled) == {"in_progress": 0, "completed": 0, "failed": 0, "cancelled": 3, "total": 3}
    in_batch = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id, filter="cancelled")
    assert len(in_batch.data) == 3
    # The SDK's batch poll stops (no file in progress any more).
    assert client.vector_stores.file_batches.poll(batch.id, vector_store_id=store.id).status == "cancelled"
    assert client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id).status == "cancelled"

    # A worker now runs the queued jobs: the cancelled files stay cancelled, the other completes.
    log_path = workdir / "vs-worker.log"
    # The worker reads the bytes the API process stored: same data_dir.
    worker = start_process(["worker"], server_env(scripted.base_url, workdir / "vs-no-worker", DATABASE_URL=url), log_path)
    try:
        done = client.vector_stores.files.poll(files[3].id, vector_store_id=store.id, poll_interval_ms=100)
        assert done.status == "completed"
        final = client.vector_stores.retrieve(store.id)
        assert final.status == "completed"
        assert counts(final) == {"in_progress": 0, "completed": 1, "failed": 0, "cancelled": 3, "total": 4}
        assert {h.file_id for h in client.vector_stores.search(store.id, query="kestrel").data} == {files[3].id}
    finally:
        stop_process(worker)


# --- embedding models ----------------------------------------------------------------------------

HASH_DIM = 64


def _hash_embedding(text: str) -> list[float]:
    """A deterministic bag-of-words vector: enough to make the right document the nearest."""
    v = np.zeros(HASH_DIM, dtype=np.float32)
    for word in re.findall(r"\w+", text.lower()):
        v[int(hashlib.md5(word.encode()).hexdigest(), 16) % HASH_DIM] += 1.0
    n = np.linalg.norm(v)
    return (v / n if n else v).tolist()


class _EmbeddingsHandler(BaseHTTPRequestHandler):
    calls: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.calls.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for i, text in enumerate(inputs):
            vector = _hash_embedding(text)
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(np.asarray(vector, dtype=np.float32).tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        out = json.dumps({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def openai_embeddings_server(scripted, workdir, database_url):
    """A server whose new stores use an OpenAI-compatible embedding endpoint (a deterministic fake),
    on the main server's database."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EmbeddingsHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    srv = _extra_server(
        scripted,
        workdir,
        "vs-openai-embeddings",
        database_url,
        ASSISTGRAPH_EMBEDDING_PROVIDER="openai",
        ASSISTGRAPH_EMBEDDING_MODEL="hash-embed",
        ASSISTGRAPH_EMBEDDING_BASE_URL=f"http://127.0.0.1:{httpd.server_port}/v1",
        ASSISTGRAPH_EMBEDDING_API_KEY="sk-embed",
        ASSISTGRAPH_DATA_DIR=str(workdir / "data"),  # every process on a database shares the files
    )
    yield srv
    stop_process(srv.proc)
    httpd.shutdown()


def test_each_store_keeps_its_embedding_model(client, server, openai_embeddings_server, database_url):
    old = client.vector_stores.create(name="wordllama store")
    f_old = upload(client, "coffee.md", ESPRESSO_MD.encode())
    client.vector_stores.files.create_and_poll(file_id=f_old.id, vector_store_id=old.id)

    other = openai.OpenAI(base_url=openai_embeddings_server.url, api_key="x", _strict_response_validation=True, max_retries=0)
    new = other.vector_stores.create(name="openai store")
    f_new = upload(other, "volcano.txt", VOLCANO_TXT.encode())
    f_new2 = upload(other, "coffee.md", ESPRESSO_MD.encode())
    batch = other.vector_stores.file_batches.create_and_poll(vector_store_id=new.id, file_ids=[f_new.id, f_new2.id])
    assert batch.file_counts.completed == 2, batch
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = dict(
            conn.execute(
                "SELECT id, embedding_model || ':' || embedding_dimension FROM vector_stores WHERE id = ANY(%s)",
                ([old.id, new.id],),
            ).fetchall()
        )
        dims = dict(conn.execute("SELECT vector_store_id, min(vector_dims(embedding)) FROM chunks WHERE vector_store_id = ANY(%s) GROUP BY 1", ([old.id, new.id],)).fetchall())
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks'").fetchall()}
    assert rows == {old.id: f"{WORDLLAMA}:256", new.id: f"openai:hash-embed:{HASH_DIM}"}
    assert dims == {old.id: 256, new.id: HASH_DIM}
    assert {"chunks_hnsw_256", f"chunks_hnsw_{HASH_DIM}"} <= indexes
    assert any(c.get("model") == "hash-embed" for c in _EmbeddingsHandler.calls)

    # The configured provider does not change how an existing store is searched: the new server
    # searches the old store with WordLlama, and its own store with its endpoint.
    assert other.vector_stores.search(old.id, query="espresso grams").data[0].file_id == f_old.id
    assert other.vector_stores.search(new.id, query="basaltic lava volcanoes").data[0].file_id == f_new.id
    # The main server cannot embed with that endpoint (not configured there): its search says so,
    # and its worker leaves that store's files to a worker that can (here, the other server's).
    with pytest.raises(openai.InternalServerError, match="hash-embed"):
        client.vector_stores.search(new.id, query="lava")
    f3 = upload(client, "v.txt", VOLCANO_TXT.encode())
    assert client.vector_stores.files.create_and_poll(file_id=f3.id, vector_store_id=new.id).status == "completed"


def test_a_store_whose_model_no_worker_has_fails_clearly(client, database_url):
    store = client.vector_stores.create(name="minilm store")
    with psycopg.connect(database_url, autocommit=True) as conn:  # as if created by a server with the minilm extra
        conn.execute(
            "UPDATE vector_stores SET embedding_model = 'sentence-transformers/all-MiniLM-L6-v2', "
            "embedding_dimension = 384 WHERE id = %s",
            (store.id,),
        )
    f = upload(client, "v.txt", VOLCANO_TXT.encode())
    failed = client.vector_stores.files.create_and_poll(file_id=f.id, vector_store_id=store.id)
    assert failed.status == "failed" and failed.last_error.code == "server_error"
    assert "all-MiniLM-L6-v2" in failed.last_error.message and "not available" in failed.last_error.message
    with pytest.raises(openai.InternalServerError, match="all-MiniLM-L6-v2"):
        client.vector_stores.search(store.id, query="lava")


# --- async client --------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_async_client_round_trip(aclient):
    store = await aclient.vector_stores.create(name="async", metadata={"mode": "async"})
    vf = await aclient.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("lighthouse.pdf", make_pdf(LIGHTHOUSE))
    )
    assert vf.status == "completed"
    batch = await aclient.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id,
        files=[("handbook.docx", make_docx(VACATION)), ("broken.pdf", CORRUPT_PDF)],
    )
    assert counts(batch) == {"in_progress": 0, "completed": 1, "failed": 1, "cancelled": 0, "total": 2}
    f = await aclient.files.create(file=("coffee.md", ESPRESSO_MD.encode()), purpose="assistants")
    done = await aclient.vector_stores.files.create_and_poll(file_id=f.id, vector_store_id=store.id)
    assert done.status == "completed"
    batch2 = await aclient.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, files=[{"file_id": f.id, "attributes": {"x": "y"}}]
    )
    assert batch2.status == "completed"
    page = await aclient.vector_stores.search(store.id, query="vacation days carried over")
    assert page.data[0].filename == "handbook.docx"
    files = [x async for x in aclient.vector_stores.files.list(vector_store_id=store.id, limit=1)]
    assert len(files) == 4
    content = [p async for p in aclient.vector_stores.files.content(f.id, vector_store_id=store.id)]
    assert "espresso" in "".join(p.text for p in content)
    current = await aclient.vector_stores.retrieve(store.id)
    assert counts(current) == {"in_progress": 0, "completed": 3, "failed": 1, "cancelled": 0, "total": 4}
    assert (await aclient.vector_stores.delete(store.id)).deleted
