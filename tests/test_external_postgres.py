"""An external PostgreSQL, as a deployment brings its own: `assistgraph serve` with DATABASE_URL on a
cluster of Debian's own server (PostgreSQL 15, pgvector built from Debian's source package by .ci/run),
not the embedded one. The schema and the queue's migrations apply, pgvector's extension is created,
and a run completes on it. Vector stores and file_search on that server are in tests/test_multinode.py,
whose processes share one of its databases."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from api.storage.database import queue_migrations
from api.storage.migrations import MIGRATIONS
from tests.conftest import _extra_server, sdk, stop_process
from tests.debian_postgres import Cluster


@pytest.fixture(scope="module")
def external(scripted, workdir: Path, debian_postgres: Cluster):
    url = debian_postgres.database("external")
    srv = _extra_server(scripted, workdir, "external-pg", url)
    yield srv, url
    stop_process(srv.proc)


def test_migrations_and_pgvector_apply_to_debians_postgres(external):
    _, url = external
    with psycopg.connect(url) as conn:
        (version,) = conn.execute("SHOW server_version_num").fetchone()
        applied = [v for (v,) in conn.execute("SELECT v FROM assistgraph_migrations ORDER BY v")]
        queue = {name for (name,) in conn.execute("SELECT name FROM assistgraph_queue_migrations")}
        (vector,) = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        (distance,) = conn.execute("SELECT '[1,0]'::vector <=> '[0,1]'::vector").fetchone()
    assert int(version) >= 140000  # the oldest Postgres the README names
    assert applied == list(range(len(MIGRATIONS)))
    assert queue == set(queue_migrations())
    assert vector and distance == 1


def test_a_run_completes(external, scripted, model_name):
    srv, _ = external
    client = sdk(srv.url)
    scripted.script(model_name, [{"content": "Stored in an external database."}])
    assistant = client.beta.assistants.create(model=model_name)
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hi"}]}, poll_interval_ms=50
    )
    assert run.status == "completed", run.last_error
    (message,) = client.beta.threads.messages.list(thread_id=run.thread_id, run_id=run.id).data
    assert message.content[0].text.value == "Stored in an external database."
