"""A `serve` killed with SIGKILL leaves nothing running for long: the ingestion it had started ends
with it, and the embedded Postgres it started is taken over by the next start on the same data
directory and stopped when that one stops.

The server is held inside an ingestion (its embedding endpoint waits while the text carries a
marker), so the ingestion child is certainly running when the server is killed.
"""

from __future__ import annotations

import io
import signal
from pathlib import Path

import psutil

from tests.conftest import free_port, sdk, server_env, start_process, stop_process, wait_for, wait_ready
from tests.held_embeddings import HeldEmbeddings

MARKER = "orphanmarker"


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _postgres_of(pgdata: Path) -> list[psutil.Process]:
    """Processes of a Postgres cluster, found by the data directory on the postmaster's command line."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(str(pgdata) == arg for arg in cmdline) and _running(proc):
            found.append(proc)
    return found


def test_a_killed_server_leaves_no_ingestion_and_its_postgres_is_stopped_by_the_next(scripted, workdir):
    embeddings = HeldEmbeddings(MARKER).start()
    data = workdir / "orphans"
    env = server_env(scripted.base_url, data, **embeddings.env())

    def start(name: str):
        port = free_port()
        proc = start_process(["serve", "--port", str(port)], env, workdir / f"{name}.log")
        url = f"http://127.0.0.1:{port}/v1"
        wait_ready(url, proc, workdir / f"{name}.log")
        return proc, url

    first, url = start("orphans-1")
    second = None
    try:
        client = sdk(url)
        store = client.vector_stores.create(name="orphans")
        upload = client.files.create(file=("held.txt", io.BytesIO(f"Basalt. {MARKER}\n".encode())), purpose="assistants")
        client.vector_stores.files.create(vector_store_id=store.id, file_id=upload.id)
        assert embeddings.entered.wait(60), (workdir / "orphans-1.log").read_text(errors="replace")
        descendants = psutil.Process(first.pid).children(recursive=True)
        assert descendants, "the ingestion runs in processes of the server's"
        postgres = _postgres_of(data / "pgdata")
        assert postgres, "the server started its embedded Postgres"

        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # What the server forked ends with it (the fork server, then the child held in its embedding call).
        wait_for(lambda: not [p for p in descendants if _running(p)], timeout=30)

        # The next start on the data directory adopts the Postgres left running; its clean stop stops it.
        second, url = start("orphans-2")
        assert sdk(url).vector_stores.retrieve(store.id).id == store.id
        stop_process(second)
        assert second.returncode == 0, (workdir / "orphans-2.log").read_text(errors="replace")
        wait_for(lambda: not _postgres_of(data / "pgdata"), timeout=30)
    finally:
        embeddings.stop()
        stop_process(first)
        if second is not None:
            stop_process(second)
