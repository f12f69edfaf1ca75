"""Persistence of responses and conversation items. SQL as named statements, every statement a
client can reach scoped by tenant; callers pass a connection."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from api.contract.run_status import EXECUTING, sql_list
from api.responses.objects import with_sampling_defaults

INSERT_RESPONSE = """
    INSERT INTO responses (id, tenant_id, thread_id, run_id, stored, in_conversation, steps_after, first_event, input, obj)
    VALUES (%(id)s, %(tenant_id)s, %(thread_id)s, %(run_id)s, %(stored)s, %(in_conversation)s, %(steps_after)s,
            %(first_event)s, %(input)s, %(obj)s)
"""
SELECT_RESPONSE = "SELECT * FROM responses WHERE id = %s AND tenant_id = %s"
SELECT_RESPONSE_FOR_UPDATE = "SELECT * FROM responses WHERE id = %s AND tenant_id = %s FOR UPDATE"
DELETE_RESPONSE = "DELETE FROM responses WHERE id = %s AND tenant_id = %s"
# The response that continued a run last (the one a client's function outputs continue).
SELECT_LATEST_OF_RUN = "SELECT * FROM responses WHERE run_id = %s ORDER BY seq DESC LIMIT 1"
SELECT_LATEST_OF_THREAD = "SELECT id FROM responses WHERE thread_id = %s ORDER BY seq DESC LIMIT 1"
COUNT_OF_THREAD = "SELECT count(*) AS n FROM responses WHERE thread_id = %s"
# The steps after a response's start, with the usage of a step still waiting for outputs.
SELECT_STEPS_AFTER = """
    SELECT obj, pending_usage, seq, item_seq FROM run_steps WHERE run_id = %s AND seq > %s ORDER BY seq
"""
SELECT_LAST_STEP_SEQ = "SELECT coalesce(max(seq), 0) AS seq FROM run_steps WHERE run_id = %s"
SELECT_MESSAGES = "SELECT obj FROM messages WHERE id = ANY(%s)"
SELECT_FILENAMES = "SELECT id, obj->>'filename' AS filename FROM files WHERE id = ANY(%s) AND tenant_id = %s"
# Every file a run's file_search calls returned, with its name (for citations).
SELECT_RUN_SEARCHED_FILES = """
    SELECT DISTINCT r->>'file_id' AS id, r->>'file_name' AS filename
    FROM run_steps s,
         jsonb_array_elements(s.obj->'step_details'->'tool_calls') c,
         jsonb_array_elements(c->'file_search'->'results') r
    WHERE s.run_id = %s AND s.obj->>'type' = 'tool_calls' AND c->>'type' = 'file_search'
"""

INSERT_ITEM = """
    INSERT INTO messages (id, thread_id, run_id, tenant_id, kind, obj) VALUES (%s, %s, NULL, %s, 'item', %s)
"""
# A conversation: its messages and items, and the tool_calls steps of its runs, in writing order.
SELECT_CONVERSATION_ROWS = """
    SELECT item_seq, kind, obj FROM messages WHERE thread_id = %(thread)s
    UNION ALL
    SELECT s.item_seq, 'step', s.obj FROM run_steps s JOIN runs r ON r.id = s.run_id
    WHERE r.thread_id = %(thread)s AND s.obj->>'type' = 'tool_calls'
    ORDER BY item_seq
"""
SELECT_ITEM = "SELECT kind, obj FROM messages WHERE id = %s AND thread_id = %s AND tenant_id = %s"
SELECT_STEP_WITH_CALL = """
    SELECT s.obj FROM run_steps s JOIN runs r ON r.id = s.run_id
    WHERE r.thread_id = %s AND r.tenant_id = %s AND s.obj->>'type' = 'tool_calls'
      AND s.obj->'step_details'->'tool_calls' @> %s
"""
# A thread's messages and items up to a point, copied into a fork.
SELECT_THREAD_ROWS_UPTO = """
    SELECT kind, obj FROM messages WHERE thread_id = %s AND item_seq <= %s ORDER BY seq
"""
SELECT_MAX_ITEM_SEQ = "SELECT max(item_seq) AS n FROM messages WHERE id = ANY(%s)"
# store: false responses whose run has settled (or is gone): they are deleted, and so is the thread
# of those that had one of their own. The given ones at once (their request is done with them); any
# other of the tenant's a minute after it settled (the request that made it was cut off).
SELECT_SETTLED_UNSTORED = f"""
    SELECT r.id, r.thread_id, r.in_conversation FROM responses r LEFT JOIN runs u ON u.id = r.run_id
    WHERE r.tenant_id = %s AND NOT r.stored
      AND (r.id = ANY(%s) OR (%s AND (u.id IS NULL OR u.updated_at < now() - interval '1 minute')))
      AND (u.status IS NULL OR u.status NOT IN {sql_list(EXECUTING)})
    LIMIT 50
"""
DELETE_THREAD = "DELETE FROM threads WHERE id = %s AND tenant_id = %s"


# Output items a response has before its run's (the compaction `context_management` made), kept with
# the response's settings and taken apart again when read.
LEADING_OUTPUT = "_leading_output"


async def insert_response(conn: AsyncConnection, row: dict) -> None:
    obj = {**row["obj"], LEADING_OUTPUT: row["leading"]} if row.get("leading") else row["obj"]
    await conn.execute(INSERT_RESPONSE, {**row, "input": Jsonb(row["input"]), "obj": Jsonb(obj)})


async def get_response(conn: AsyncConnection, response_id: str, tenant: str, *, for_update: bool = False) -> dict | None:
    cur = await conn.execute(SELECT_RESPONSE_FOR_UPDATE if for_update else SELECT_RESPONSE, (response_id, tenant))
    row = await cur.fetchone()
    if row is not None:
        row["leading"] = row["obj"].pop(LEADING_OUTPUT, [])
        row["obj"] = with_sampling_defaults(row["obj"])
    return row


async def delete_response(conn: AsyncConnection, response_id: str, tenant: str) -> None:
    await conn.execute(DELETE_RESPONSE, (response_id, tenant))


async def latest_of_run(conn: AsyncConnection, run_id: str) -> dict | None:
    return await (await conn.execute(SELECT_LATEST_OF_RUN, (run_id,))).fetchone()


async def latest_of_thread(conn: AsyncConnection, thread_id: str) -> str | None:
    row = await (await conn.execute(SELECT_LATEST_OF_THREAD, (thread_id,))).fetchone()
    return row["id"] if row else None


async def responses_of_thread(conn: AsyncConnection, thread_id: str) -> int:
    return (await (await conn.execute(COUNT_OF_THREAD, (thread_id,))).fetchone())["n"]


async def steps_after(conn: AsyncConnection, run_id: str, after: int) -> list[dict]:
    rows = await (await conn.execute(SELECT_STEPS_AFTER, (run_id, after))).fetchall()
    return [
        {**row["obj"], "_pending_usage": row["pending_usage"], "_seq": row["seq"], "_item_seq": row["item_seq"]}
        for row in rows
    ]


async def last_step_seq(conn: AsyncConnection, run_id: str) -> int:
    return (await (await conn.execute(SELECT_LAST_STEP_SEQ, (run_id,))).fetchone())["seq"]


async def messages(conn: AsyncConnection, ids: list[str]) -> dict[str, dict]:
    if not ids:
        return {}
    rows = await (await conn.execute(SELECT_MESSAGES, (ids,))).fetchall()
    return {row["obj"]["id"]: row["obj"] for row in rows}


async def filenames(conn: AsyncConnection, file_ids: set[str], tenant: str) -> dict[str, str]:
    if not file_ids:
        return {}
    rows = await (await conn.execute(SELECT_FILENAMES, (list(file_ids), tenant))).fetchall()
    return {row["id"]: row["filename"] for row in rows}


async def searched_files(conn: AsyncConnection, run_id: str) -> dict[str, str]:
    rows = await (await conn.execute(SELECT_RUN_SEARCHED_FILES, (run_id,))).fetchall()
    return {row["id"]: row["filename"] for row in rows if row["id"]}


async def insert_item(conn: AsyncConnection, thread_id: str, tenant: str, item: dict) -> None:
    await conn.execute(INSERT_ITEM, (item["id"], thread_id, tenant, Jsonb(item)))


async def conversation_rows(conn: AsyncConnection, thread_id: str) -> list[dict]:
    return await (await conn.execute(SELECT_CONVERSATION_ROWS, {"thread": thread_id})).fetchall()


async def item_row(conn: AsyncConnection, item_id: str, thread_id: str, tenant: str) -> dict | None:
    return await (await conn.execute(SELECT_ITEM, (item_id, thread_id, tenant))).fetchone()


async def step_with_call(conn: AsyncConnection, thread_id: str, tenant: str, call_id: str) -> dict | None:
    row = await (await conn.execute(SELECT_STEP_WITH_CALL, (thread_id, tenant, Jsonb([{"id": call_id}])))).fetchone()
    return row["obj"] if row else None


async def thread_rows_upto(conn: AsyncConnection, thread_id: str, item_seq: int) -> list[dict]:
    return await (await conn.execute(SELECT_THREAD_ROWS_UPTO, (thread_id, item_seq))).fetchall()


async def last_item_seq(conn: AsyncConnection, message_ids: list[str]) -> int:
    row = await (await conn.execute(SELECT_MAX_ITEM_SEQ, (message_ids,))).fetchone()
    return row["n"] or 0


async def settled_unstored(conn: AsyncConnection, tenant: str, ids: list[str], *, any_of_tenant: bool) -> list[dict]:
    return await (await conn.execute(SELECT_SETTLED_UNSTORED, (tenant, ids, any_of_tenant))).fetchall()


async def delete_thread(conn: AsyncConnection, thread_id: str, tenant: str) -> None:
    await conn.execute(DELETE_THREAD, (thread_id, tenant))


SELECT_THREAD_HAS_STORED = "SELECT EXISTS (SELECT 1 FROM responses WHERE thread_id = %s AND stored) AS kept"
SELECT_RUN_TOOLS_OF_THREAD = "SELECT id, obj->'tools' AS tools FROM runs WHERE thread_id = %s"
# A message or kept item anywhere in the tenant (an input `item_reference`).
SELECT_ANY_ITEM = "SELECT kind, obj FROM messages WHERE id = %s AND tenant_id = %s"
SELECT_ANY_STEP_WITH_CALL = """
    SELECT s.obj, r.obj->'tools' AS tools FROM run_steps s JOIN runs r ON r.id = s.run_id
    WHERE s.tenant_id = %s AND s.obj->>'type' = 'tool_calls' AND s.obj->'step_details'->'tool_calls' @> %s
    LIMIT 1
"""
DELETE_ITEM = "DELETE FROM messages WHERE id = %s AND thread_id = %s AND tenant_id = %s"


async def thread_has_stored(conn: AsyncConnection, thread_id: str) -> bool:
    return (await (await conn.execute(SELECT_THREAD_HAS_STORED, (thread_id,))).fetchone())["kept"]


async def run_tools_of_thread(conn: AsyncConnection, thread_id: str) -> dict[str, list[dict]]:
    rows = await (await conn.execute(SELECT_RUN_TOOLS_OF_THREAD, (thread_id,))).fetchall()
    return {row["id"]: row["tools"] or [] for row in rows}


async def any_item(conn: AsyncConnection, item_id: str, tenant: str) -> dict | None:
    return await (await conn.execute(SELECT_ANY_ITEM, (item_id, tenant))).fetchone()


async def any_step_with_call(conn: AsyncConnection, tenant: str, call_id: str) -> dict | None:
    return await (await conn.execute(SELECT_ANY_STEP_WITH_CALL, (tenant, Jsonb([{"id": call_id}])))).fetchone()


async def delete_item(conn: AsyncConnection, item_id: str, thread_id: str, tenant: str) -> bool:
    cur = await conn.execute(DELETE_ITEM, (item_id, thread_id, tenant))
    return cur.rowcount > 0


SELECT_FIRST_KEPT_EVENT = "SELECT min(seq) AS seq FROM run_events WHERE run_id = %s"


async def first_kept_event(conn: AsyncConnection, run_id: str) -> int | None:
    """The number of the run's oldest event still kept (None: none is)."""
    return (await (await conn.execute(SELECT_FIRST_KEPT_EVENT, (run_id,))).fetchone())["seq"]


SELECT_KEPT_CALL = """
    SELECT EXISTS (
        SELECT 1 FROM messages WHERE thread_id = %s AND kind = 'item'
          AND obj->>'type' = 'function_call' AND obj->>'call_id' = %s
    ) AS found
"""


async def kept_call(conn: AsyncConnection, thread_id: str, call_id: str) -> bool:
    """Whether a function call with this id was given as input to the thread."""
    return (await (await conn.execute(SELECT_KEPT_CALL, (thread_id, call_id))).fetchone())["found"]


SELECT_MCP_SERVERS_NAMED = "SELECT id, url FROM mcp_servers WHERE tenant_id = %s AND obj->>'name' = %s ORDER BY seq"


async def mcp_servers_named(conn: AsyncConnection, tenant: str, name: str) -> list[dict]:
    """The tenant's registered MCP servers with this name: id and URL."""
    return await (await conn.execute(SELECT_MCP_SERVERS_NAMED, (tenant, name))).fetchall()
