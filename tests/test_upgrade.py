"""Upgrading a database written by a version before the Responses and Conversations APIs: its threads
become conversations whose items keep the order they were written in, and a server on the upgraded
database serves them through both APIs."""

from __future__ import annotations

import asyncio
import json

import psycopg
from procrastinate.schema import SchemaManager

from api.storage.database import migrate, open_pool
from api.storage.migrations import MIGRATIONS
from tests.conftest import _extra_server, _own_database, sdk, stop_process

# The last migration before the one that added conversation items.
BEFORE = next(i for i, sql in enumerate(MIGRATIONS) if "CREATE TABLE responses" in sql)


def _message(message_id: str, thread_id: str, role: str, text: str, created_at: int, run_id: str | None) -> dict:
    return {
        "id": message_id, "object": "thread.message", "created_at": created_at, "thread_id": thread_id,
        "status": "completed", "incomplete_details": None, "completed_at": created_at, "incomplete_at": None,
        "role": role, "content": [{"type": "text", "text": {"value": text, "annotations": []}}],
        "assistant_id": "asst_old" if run_id else None, "run_id": run_id, "attachments": [], "metadata": {},
    }


def _legacy_database(url: str) -> None:
    """A database as a version with MIGRATIONS[:BEFORE] left it: one thread, one run that called a
    server tool, then answered."""
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("CREATE TABLE assistgraph_migrations (v integer PRIMARY KEY)")
            for version, sql in enumerate(MIGRATIONS[:BEFORE]):
                conn.execute(SchemaManager.get_schema() if sql == "PROCRASTINATE_SCHEMA" else sql)
                conn.execute("INSERT INTO assistgraph_migrations (v) VALUES (%s)", (version,))
        thread = {"id": "thread_old", "object": "thread", "created_at": 100, "tool_resources": {}, "metadata": {}}
        conn.execute("INSERT INTO threads (id, obj) VALUES (%s, %s)", (thread["id"], json.dumps(thread)))
        run = {"id": "run_old", "object": "thread.run", "thread_id": "thread_old", "assistant_id": "asst_old",
               "status": "completed", "tools": []}
        conn.execute(
            "INSERT INTO runs (id, thread_id, status, config, obj) VALUES ('run_old', 'thread_old', 'completed', '{}', %s)",
            (json.dumps(run),),
        )
        # Written in this order, at these seconds; each table's own seq says nothing of the other's.
        conn.execute(
            "INSERT INTO messages (id, thread_id, run_id, obj) VALUES ('msg_q', 'thread_old', NULL, %s)",
            (json.dumps(_message("msg_q", "thread_old", "user", "What is 6*7?", 100, None)),),
        )
        conn.execute(
            "INSERT INTO messages (id, thread_id, run_id, obj) VALUES ('msg_a', 'thread_old', 'run_old', %s)",
            (json.dumps(_message("msg_a", "thread_old", "assistant", "42.", 101, "run_old")),),
        )
        step = {
            "id": "step_calc", "object": "thread.run.step", "created_at": 101, "assistant_id": "asst_old",
            "thread_id": "thread_old", "run_id": "run_old", "type": "tool_calls", "status": "completed",
            "step_details": {"type": "tool_calls", "tool_calls": [{
                "id": "call_calc", "type": "function",
                "function": {"name": "calculator", "arguments": "{\"expression\": \"6*7\"}", "output": "42"},
            }]},
            "last_error": None, "expired_at": None, "cancelled_at": None, "failed_at": None, "completed_at": 101,
            "metadata": {}, "usage": None,
        }
        conn.execute("INSERT INTO run_steps (id, run_id, obj) VALUES ('step_calc', 'run_old', %s)", (json.dumps(step),))


async def _upgrade(url: str) -> list[int]:
    pool = await open_pool(url, 2)
    try:
        await migrate(pool)
        async with pool.connection() as conn:
            rows = await (await conn.execute("SELECT v FROM assistgraph_migrations ORDER BY v")).fetchall()
        return [row["v"] for row in rows]
    finally:
        await pool.close()


def test_a_legacy_thread_reads_as_a_conversation_after_the_upgrade(scripted, workdir, database_url, tool_env):
    url = _own_database(database_url, "legacy")
    _legacy_database(url)
    assert asyncio.run(_upgrade(url)) == list(range(len(MIGRATIONS)))
    server = _extra_server(scripted, workdir, "legacy", url, ASSISTGRAPH_DATA_DIR=str(workdir / "data"), **tool_env)
    try:
        client = sdk(server.url)
        items = list(client.conversations.items.list("conv_old", order="asc"))
        assert [(i.type, i.id) for i in items] == [("message", "msg_q"), ("mcp_call", "mcp_calc"), ("message", "msg_a")]
        assert items[1].output == "42" and items[1].name == "calculator"
        assert [m.id for m in client.beta.threads.messages.list("thread_old", order="asc")] == ["msg_q", "msg_a"]
        # New items follow the old ones.
        client.conversations.items.create("conv_old", items=[{"role": "user", "content": "And 7*8?"}])
        assert [i.type for i in client.conversations.items.list("conv_old", order="asc")][-1] == "message"
        assert client.conversations.items.list("conv_old").data[0].content[0].text == "And 7*8?"
    finally:
        stop_process(server.proc)
