"""The job queue's schema is upgraded through procrastinate's own migration files: a database made
while an older procrastinate was installed gets the newer releases' migrations when a server starts
on it, and ends with the same queue schema as a new database."""

from __future__ import annotations

import re

import psycopg
from procrastinate.schema import SchemaManager

from api.storage.database import UNTRACKED_QUEUE_SCHEMA, queue_migration_sql, queue_migrations
from api.storage.migrations import MIGRATIONS
from tests.conftest import _extra_server, _own_database, sdk, stop_process

# Every object procrastinate's schema is made of, as the catalog describes it (whitespace in
# function bodies aside: a migration may write a function with other line breaks than schema.sql).
QUEUE_SCHEMA_CATALOG = {
    "columns": """
        SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = 'public' AND table_name LIKE 'procrastinate%'
    """,
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid), p.prosrc
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proname LIKE 'procrastinate%'
    """,
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename LIKE 'procrastinate%'",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid::regclass::text LIKE 'procrastinate%'
    """,
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE NOT tgisinternal AND tgrelid::regclass::text LIKE 'procrastinate%'
    """,
    "types": """
        SELECT t.typname, e.enumlabel FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
        WHERE t.typname LIKE 'procrastinate%'
    """,
}


def queue_schema(url: str) -> dict[str, set[tuple]]:
    with psycopg.connect(url) as conn:
        return {
            name: {tuple(re.sub(r"\s+", " ", v) if isinstance(v, str) else v for v in row) for row in conn.execute(sql)}
            for name, sql in QUEUE_SCHEMA_CATALOG.items()
        }


def _release(name: str) -> str:
    return name.split("_", 1)[0]


def _database_of_an_older_queue(url: str, applied: list[str]) -> None:
    """Our schema, with procrastinate's as the migration files `applied` (from the first one on) make
    it, recorded as this code records them."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("CREATE TABLE assistgraph_migrations (v integer PRIMARY KEY)")
        conn.execute("CREATE TABLE assistgraph_queue_migrations (name text PRIMARY KEY)")
        for version, sql in enumerate(MIGRATIONS):
            if sql == "PROCRASTINATE_SCHEMA":
                for name in applied:
                    conn.execute(queue_migration_sql(name))
                    conn.execute("INSERT INTO assistgraph_queue_migrations (name) VALUES (%s)", (name,))
            else:
                conn.execute(sql)
            conn.execute("INSERT INTO assistgraph_migrations (v) VALUES (%s)", (version,))


def test_a_server_applies_the_queue_migrations_of_newer_procrastinate_releases(
    scripted, workdir, database_url, tool_env, model_name
):
    shipped = queue_migrations()
    newest = _release(shipped[-1])
    older = [name for name in shipped if _release(name) < newest]
    assert shipped[0].startswith("00.00.00_01") and len(older) < len(shipped)
    url = _own_database(database_url, "olderqueue")
    _database_of_an_older_queue(url, older)
    fresh = _own_database(database_url, "freshqueue")
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute(SchemaManager.get_schema())
    assert queue_schema(url) != queue_schema(fresh)

    server = _extra_server(scripted, workdir, "olderqueue", url, ASSISTGRAPH_DATA_DIR=str(workdir / "olderqueue"), **tool_env)
    try:
        with psycopg.connect(url) as conn:
            recorded = [row[0] for row in conn.execute("SELECT name FROM assistgraph_queue_migrations ORDER BY name")]
        assert recorded == shipped
        assert queue_schema(url) == queue_schema(fresh)
        # The queue works on the upgraded schema: a run is deferred, claimed and completed.
        client = sdk(server.url)
        scripted.script(model_name, [{"content": "queued and done"}])
        assistant = client.beta.assistants.create(model=model_name)
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50)
        assert run.status == "completed", run.last_error
    finally:
        stop_process(server.proc)


def test_a_database_made_before_the_queue_migrations_were_tracked_has_the_current_ones(database_url):
    """Such a database got procrastinate's whole schema through the sentinel entry: it is taken to have
    every migration up to the release it was made with, and none is applied again."""
    import asyncio

    from tests.test_upgrade import _upgrade

    url = _own_database(database_url, "untracked")
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("CREATE TABLE assistgraph_migrations (v integer PRIMARY KEY)")
        for version, sql in enumerate(MIGRATIONS):
            conn.execute(SchemaManager.get_schema() if sql == "PROCRASTINATE_SCHEMA" else sql)
            conn.execute("INSERT INTO assistgraph_migrations (v) VALUES (%s)", (version,))
    assert UNTRACKED_QUEUE_SCHEMA in queue_migrations()
    assert asyncio.run(_upgrade(url)) == list(range(len(MIGRATIONS)))
    with psycopg.connect(url) as conn:
        recorded = [row[0] for row in conn.execute("SELECT name FROM assistgraph_queue_migrations ORDER BY name")]
    assert recorded == [name for name in queue_migrations() if name <= UNTRACKED_QUEUE_SCHEMA]
