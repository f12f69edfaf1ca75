"""A worker killed in the middle of an ingestion: the file does not stay `in_progress`. Another worker
retries the job once procrastinate's heartbeats show the first one dead, and a job that has lost
its worker too often fails its file instead.

The only worker is held inside its embedding call (a fake OpenAI-compatible endpoint that waits
while the text carries a marker), so it is certainly mid-job when it is SIGKILLed. psycopg observes
the job queue; it writes only once, to stand in for earlier lost workers (waiting for real ones
would take half a minute each).
"""

from __future__ import annotations

import signal
import time

import psycopg
import pytest

from api.files import vector_stores
from api.files.ingest_jobs import MAX_STALL_RETRIES
from tests.conftest import _extra_server, _own_database, sdk, server_env, start_process, stop_process, wait_for
from tests.held_embeddings import HeldEmbeddings
from tests.test_vector_stores import upload

MARKER = "stallmarker"
STALL_SECONDS = 6  # a worker silent this long has lost its jobs (the default is longer)


@pytest.fixture(scope="module")
def recovery(scripted, workdir, database_url):
    """An API process that executes nothing, on a database of its own, and the environment of its
    workers (started by the test): same data_dir and embedding endpoint."""
    embeddings = HeldEmbeddings(MARKER).start()
    url = _own_database(database_url, "ingestion_recovery")
    env = dict(
        **embeddings.env(),
        ASSISTGRAPH_DATA_DIR=str(workdir / "ingestion-recovery"),
        ASSISTGRAPH_WORKER_STALL_TIMEOUT=str(STALL_SECONDS),
    )
    api_srv = _extra_server(scripted, workdir, "ingestion-recovery-api", url, ASSISTGRAPH_EXECUTOR="false", **env)
    worker_env = server_env(scripted.base_url, workdir / "ingestion-recovery", DATABASE_URL=url, **env)
    yield api_srv, url, worker_env, embeddings
    stop_process(api_srv.proc)
    embeddings.stop()


def _jobs(url: str, file_ids: list[str]) -> dict[str, tuple[int, str, int]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT args->>'file_id', id, status::text, attempts FROM procrastinate_jobs"
            " WHERE task_name = %s AND args->>'file_id' = ANY(%s)",
            (vector_stores.INGEST_FILE, file_ids),
        ).fetchall()
    return {r[0]: r[1:] for r in rows}


def settled(client, store_id: str, file_id: str):
    """The file once no longer in progress (the SDK's poll would wait forever for a stuck one)."""
    return wait_for(
        lambda: (f := client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)).status != "in_progress" and f,
        timeout=60,
        interval=0.2,
    )


def test_a_killed_workers_ingestion_is_retried_by_another_worker(recovery, workdir):
    api_srv, url, worker_env, embeddings = recovery
    client = sdk(api_srv.url)
    store = client.vector_stores.create(name="recovery")
    text = f"Shield volcanoes are built from fluid basaltic lava flows. {MARKER}\n".encode()
    kept = upload(client, "kept.txt", text)
    doomed = upload(client, "doomed.txt", text)
    ids = [kept.id, doomed.id]

    first = start_process(["worker"], worker_env, workdir / "ingestion-recovery-worker-1.log")
    second = None
    try:
        batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids)
        assert embeddings.entered.wait(30), (workdir / "ingestion-recovery-worker-1.log").read_text(errors="replace")
        jobs = wait_for(lambda: (j := _jobs(url, ids)) and all(s == "doing" for _, s, _ in j.values()) and j)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()
        embeddings.release.set()
        with psycopg.connect(url, autocommit=True) as conn:  # as if it had lost its worker before
            conn.execute("UPDATE procrastinate_jobs SET attempts = %s WHERE id = %s", (MAX_STALL_RETRIES, jobs[doomed.id][0]))
        assert _jobs(url, ids)[kept.id][1] == "doing"
        assert client.vector_stores.files.retrieve(kept.id, vector_store_id=store.id).status == "in_progress"

        second = start_process(["worker"], worker_env, workdir / "ingestion-recovery-worker-2.log")
        done = settled(client, store.id, kept.id)
        assert done.status == "completed", done.last_error
        # Not before the stall threshold: a live worker keeps its jobs.
        assert time.monotonic() - killed_at > STALL_SECONDS
        failed = settled(client, store.id, doomed.id)
        assert failed.status == "failed" and failed.last_error.code == "server_error"
        assert "worker ingesting it stopped" in failed.last_error.message
        assert client.vector_stores.search(store.id, query="basaltic lava").data[0].file_id == kept.id
        final = client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
        assert final.status == "completed" and final.file_counts.completed == 1 and final.file_counts.failed == 1
        # Both jobs end (none is left `doing` to be found again).
        wait_for(lambda: not _jobs(url, ids), timeout=10)
    finally:
        stop_process(first)
        if second is not None:
            stop_process(second)
