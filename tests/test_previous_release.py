"""Today's server on a database the previous release wrote: every object it made is served as it
was, and a thread it made takes a new run.

The database is tests/fixtures/previous_release.sql: the previous release's `serve` (commit a585b49,
the last before the job queue's migrations were tracked) made one object of every kind through its
API and the dump was taken with the embedded Postgres's pg_dump. How to make it again is in
tests/fixtures/previous_release.py; refresh it from the release before this one whenever a release
changes the schema."""

from __future__ import annotations

import json
import subprocess

import psycopg

from api.storage.database import queue_migrations
from api.storage.migrations import MIGRATIONS
from tests.conftest import _extra_server, _own_database, sdk, stop_process
from tests.fixtures.previous_release import DUMP, FILE_TEXT, MODEL, PG_BIN


def _restore(url: str, data_dir) -> dict[str, str]:
    """The dump restored into `url`, the files' bytes where their rows say; the ids of its objects."""
    subprocess.run([PG_BIN / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", DUMP], check=True, capture_output=True)
    with psycopg.connect(url) as conn:
        for (stored,) in conn.execute("SELECT storage_path FROM files"):
            (data_dir / stored).parent.mkdir(parents=True, exist_ok=True)
            (data_dir / stored).write_text(FILE_TEXT)

        def one(sql: str) -> str:
            rows = conn.execute(sql).fetchall()
            assert len(rows) == 1, sql
            return rows[0][0]

        return {
            "assistant": one("SELECT id FROM assistants"),
            "thread": one("SELECT thread_id FROM runs WHERE NOT EXISTS (SELECT 1 FROM responses r WHERE r.run_id = runs.id)"),
            "file": one("SELECT id FROM files"),
            "vector_store": one("SELECT id FROM vector_stores"),
            "response": one("SELECT id FROM responses"),
            "conversation": one("SELECT obj->'conversation'->>'id' FROM responses"),
        }


def test_todays_server_serves_what_the_previous_release_wrote(scripted, workdir, database_url, tool_env):
    url = _own_database(database_url, "previous")
    ids = _restore(url, workdir / "previous")
    server = _extra_server(scripted, workdir, "previous", url, **tool_env)
    try:
        with psycopg.connect(url) as conn:
            assert [r[0] for r in conn.execute("SELECT v FROM assistgraph_migrations ORDER BY v")] == list(range(len(MIGRATIONS)))
            queue = [r[0] for r in conn.execute("SELECT name FROM assistgraph_queue_migrations ORDER BY name")]
        assert queue == queue_migrations()
        client = sdk(server.url)

        assistant = client.beta.assistants.retrieve(ids["assistant"])
        assert (assistant.name, assistant.model, assistant.instructions) == ("previous", MODEL, "Answer briefly.")
        assert assistant.metadata == {"kind": "previous"} and assistant.tools[0].function.name == "lookup"
        assert [a.id for a in client.beta.assistants.list()] == [ids["assistant"]]

        thread = client.beta.threads.retrieve(ids["thread"])
        assert thread.metadata == {"kind": "previous"}
        texts = [(m.role, m.content[0].text.value) for m in client.beta.threads.messages.list(thread.id, order="asc")]
        assert texts == [("user", "When are invoices paid?"), ("assistant", "Invoices are paid within 30 days.")]
        [run] = client.beta.threads.runs.list(thread.id)
        assert run.status == "completed" and run.assistant_id == ids["assistant"]
        steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
        assert [s.type for s in steps] == ["tool_calls", "message_creation"]
        call = steps[0].step_details.tool_calls[0]
        assert (call.function.name, call.function.output) == ("lookup", "30 days")

        file = client.files.retrieve(ids["file"])
        assert (file.filename, file.bytes, file.purpose) == ("terms.txt", len(FILE_TEXT), "assistants")
        assert client.files.content(file.id).text == FILE_TEXT
        assert [f.id for f in client.files.list()] == [file.id]

        store = client.vector_stores.retrieve(ids["vector_store"])
        assert (store.name, store.metadata, store.file_counts.completed, store.status) == ("terms", {"kind": "previous"}, 1, "completed")
        assert [(f.id, f.status) for f in client.vector_stores.files.list(store.id)] == [(file.id, "completed")]
        hits = client.vector_stores.search(store.id, query="when are invoices paid").data
        assert hits and hits[0].file_id == file.id and "30 days" in hits[0].content[0].text

        response = client.responses.retrieve(ids["response"])
        assert response.status == "completed" and response.output_text == "Hello from the Responses API."
        assert [i.content[0].text for i in client.responses.input_items.list(response.id)] == ["Please."]
        conversation = client.conversations.retrieve(ids["conversation"])
        assert conversation.metadata == {"kind": "previous"}
        items = [(i.role, i.content[0].text) for i in client.conversations.items.list(conversation.id, order="asc")]
        assert items == [("user", "Say hello."), ("user", "Please."), ("assistant", "Hello from the Responses API.")]

        # The old thread takes a new run, which sees its history.
        scripted.script(MODEL, [{"content": "Still 30 days."}])
        new = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, additional_messages=[{"role": "user", "content": "Still?"}],
            poll_interval_ms=50,
        )
        assert new.status == "completed", new.last_error
        history = json.dumps(scripted.requests(MODEL)[-1]["body"]["messages"])
        assert "When are invoices paid?" in history and "Invoices are paid within 30 days." in history
        assert client.beta.threads.messages.list(thread.id).data[0].content[0].text.value == "Still 30 days."
    finally:
        stop_process(server.proc)
