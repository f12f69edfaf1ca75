"""Ingestion is bounded: each file is parsed, chunked and embedded in a child process under memory,
CPU-time and wall-time limits, Office packages are measured before they are unpacked, and a file
over a limit fails with a `last_error` naming it. A zip bomb, a 300 MB text file and a 4 MB one-line
CSV ingested together leave the server's own memory flat, and another tenant's small file is
ingested within seconds meanwhile."""

from __future__ import annotations

import threading
import time
import zipfile
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ADMIN_KEY, _extra_server, _own_database, stop_process
from tests.test_tenancy import as_key, new_key

MB = 1024 * 1024


@pytest.fixture(scope="module")
def bounded(scripted, workdir, database_url):
    """An authenticating server (two tenants) on a database of its own, with test-sized limits."""
    srv = _extra_server(
        scripted,
        workdir,
        "bounded",
        _own_database(database_url, "bounded"),
        ASSISTGRAPH_AUTH="true",
        ASSISTGRAPH_ADMIN_KEY=ADMIN_KEY,
        ASSISTGRAPH_INGESTION_MEMORY_LIMIT_MB="1024",
        ASSISTGRAPH_INGESTION_CPU_SECONDS="8",
        ASSISTGRAPH_INGESTION_WALL_SECONDS="60",
        ASSISTGRAPH_INGESTION_MAX_TOKENS="200000",
    )
    yield srv
    stop_process(srv.proc)


@pytest.fixture(scope="module")
def hostile_files(workdir) -> dict[str, Path]:
    folder = workdir / "hostile"
    folder.mkdir(exist_ok=True)
    bomb = folder / "bomb.docx"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        with z.open("word/document.xml", "w", force_zip64=True) as part:  # 1 GiB of one byte: ~1 MB packed
            block = b"A" * MB
            for _ in range(1024):
                part.write(block)
    text = folder / "huge.txt"
    with text.open("w") as f:
        line = "The quarterly ledger lists every shipment of copper wire by weight and port. " * 13 + "\n"
        while f.tell() < 300 * MB:
            f.write(line * 1000)
    csv = folder / "one-line.csv"
    csv.write_text(",".join(f"column{i}" for i in range(400_000)))
    return {"bomb": bomb, "text": text, "csv": csv}


def _upload(server, key: dict, path: Path) -> str:
    with path.open("rb") as fh:  # streamed: the test process does not hold 300 MB either
        resp = httpx.post(
            f"{server.url}/files",
            headers={"Authorization": f"Bearer {key['value']}"},
            data={"purpose": "assistants"},
            files={"file": (path.name, fh)},
            timeout=120,
        )
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


class RssSampler(threading.Thread):
    """The largest resident set of the server process (and, apart, of its descendants) while it runs."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.peak_children = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
                children = 0
                for child in self.process.children(recursive=True):
                    try:
                        children = max(children, child.memory_info().rss)
                    except psutil.Error:
                        pass
                self.peak_children = max(self.peak_children, children)
            except psutil.Error:
                return
            time.sleep(0.05)


def test_hostile_files_fail_on_their_limits_while_the_server_stays_small_and_others_proceed(bounded, hostile_files):
    tenant_a, tenant_b = new_key(bounded, name="a"), new_key(bounded, name="b")
    a, b = as_key(bounded, tenant_a), as_key(bounded, tenant_b)
    sampler = RssSampler(bounded.proc.pid)
    sampler.start()
    try:
        ids = {name: _upload(bounded, tenant_a, path) for name, path in hostile_files.items()}
        store = a.vector_stores.create(name="hostile")
        batch = a.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=list(ids.values()))

        # Another tenant's small file, while the hostile ones are being worked on.
        small = b.files.create(file=("notes.txt", b"The harbour master keeps the tide tables in the blue binder."), purpose="assistants")
        other = b.vector_stores.create(name="small")
        done = b.vector_stores.files.create_and_poll(vector_store_id=other.id, file_id=small.id, poll_interval_ms=100)
        assert done.status == "completed", done.last_error
        hostile_busy = a.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id).file_counts.in_progress

        final = a.vector_stores.file_batches.poll(batch.id, vector_store_id=store.id, poll_interval_ms=200)
    finally:
        sampler.halt.set()
        sampler.join()
    assert final.file_counts.failed == 3, final.file_counts
    errors = {name: a.vector_stores.files.retrieve(file_id, vector_store_id=store.id).last_error for name, file_id in ids.items()}
    assert errors["bomb"].code == "invalid_file" and "unpack" in errors["bomb"].message and "limit" in errors["bomb"].message
    assert errors["text"].code == "invalid_file" and "memory" in errors["text"].message and "1024 MB" in errors["text"].message
    assert errors["csv"].code == "invalid_file" and "CPU time" in errors["csv"].message and "8 seconds" in errors["csv"].message
    print(
        f"\nserver peak RSS {sampler.peak / MB:.0f} MB, largest child {sampler.peak_children / MB:.0f} MB, "
        f"other tenant's small file ingested while {hostile_busy} hostile files were still in progress"
    )
    assert sampler.peak < 1024 * MB
    assert hostile_busy > 0  # it really was ingested while a hostile file held a slot

    assert "Traceback" not in bounded.log()  # expected failures, not crashes
    metrics = httpx.get(bounded.url.removesuffix("/v1") + "/metrics").text
    for limit in ("unzipped_size", "memory", "cpu_time"):
        assert f'assistgraph_ingestion_limit_exceeded_total{{limit="{limit}"}} 1.0' in metrics


def test_a_file_with_too_many_tokens_fails_naming_the_limit(bounded):
    key = new_key(bounded, name="tokens")
    client = as_key(bounded, key)
    text = " ".join(f"ledger{i}" for i in range(150_000)).encode()  # well over 200,000 tokens
    file = client.files.create(file=("long.txt", text), purpose="assistants")
    store = client.vector_stores.create(name="tokens")
    result = client.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=file.id, poll_interval_ms=100)
    assert result.status == "failed"
    assert result.last_error.code == "invalid_file" and "200,000 tokens" in result.last_error.message
