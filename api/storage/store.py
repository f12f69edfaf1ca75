"""Persistence of API objects. SQL lives here as named statements; callers pass a connection."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from psycopg import AsyncConnection, sql
from psycopg.types.json import Jsonb

from api.contract.run_status import ACTIVE as ACTIVE_RUN_STATUSES
from api.contract.run_status import EXECUTING, sql_list
from api.observability import runs as observed_runs

Table = Literal[
    "assistants", "threads", "messages", "runs", "run_steps", "api_keys", "files", "vector_stores", "vector_store_files",
    "actions",
    "mcp_servers",
]

# Every lookup a client can reach is scoped by tenant: another tenant's ids simply do not exist.
SELECT_OBJ = "SELECT obj FROM {table} WHERE id = %s AND tenant_id = %s"
SELECT_OBJ_FOR_UPDATE = "SELECT obj FROM {table} WHERE id = %s AND tenant_id = %s FOR UPDATE"
UPDATE_OBJ = "UPDATE {table} SET obj = %s WHERE id = %s"
DELETE_OBJ = "DELETE FROM {table} WHERE id = %s AND tenant_id = %s"

INSERT_ASSISTANT = "INSERT INTO assistants (id, tenant_id, obj) VALUES (%s, %s, %s)"
INSERT_THREAD = "INSERT INTO threads (id, tenant_id, obj) VALUES (%s, %s, %s)"
INSERT_MESSAGE = "INSERT INTO messages (id, thread_id, run_id, tenant_id, obj) VALUES (%s, %s, %s, %s, %s)"
INSERT_RUN = """
    INSERT INTO runs (id, thread_id, status, tenant_id, expires_at, config, obj)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
"""

SELECT_ACTIVE_RUN = "SELECT id FROM runs WHERE thread_id = %s AND status = ANY(%s) LIMIT 1"
# What creating a run reads: the thread (locked: serialises "is a run active?" decisions) and the
# assistant the run starts from (absent: not found, or not asked). The active run is read by
# SELECT_ACTIVE_RUN in a statement of its own, after this one holds the lock: under READ COMMITTED a
# statement that waited for the row lock re-checks the locked row, but a subquery of that statement
# still reads the snapshot taken before the wait and misses the run the lock holder just committed.
LOCK_THREAD_FOR_RUN = """
    SELECT t.obj AS thread, a.obj AS assistant
    FROM threads t
    LEFT JOIN assistants a ON a.id = %(assistant)s AND a.tenant_id = %(tenant)s
    WHERE t.id = %(thread)s AND t.tenant_id = %(tenant)s
    FOR UPDATE OF t
"""
SELECT_RUN_ROW = "SELECT obj, status, config, tenant_id FROM runs WHERE id = %s"
# The run's internal settings: resume values, usage of its executions so far, ...
MERGE_RUN_CONFIG = "UPDATE runs SET config = config || %s WHERE id = %s"
# Polling reads a run as the JSON text the API returns: no decoding and re-encoding per poll.
SELECT_RUN_JSON = "SELECT obj::text AS json, status FROM runs WHERE id = %s AND thread_id = %s AND tenant_id = %s"
# The status list is the one of the `runs_expiring` partial index (a literal, so the planner uses it).
SELECT_OVERDUE_RUNS = f"""
    SELECT id FROM runs
    WHERE status IN {sql_list(ACTIVE_RUN_STATUSES)} AND expires_at <= %s
    ORDER BY expires_at LIMIT %s
"""
# What a run's prompt needs of each message, not the whole object (decoding is per run, per message);
# conversation items that are not Assistants messages (kind 'item': system and developer messages,
# function calls and their outputs) come whole.
SELECT_THREAD_HISTORY = """
    SELECT obj->>'role' AS role, obj->'content' AS content, CASE WHEN kind = 'item' THEN obj END AS item
    FROM messages WHERE thread_id = %s ORDER BY seq
"""
# What an execution starts from: the run, and for a run no execution has started yet (queued, with
# no submitted outputs) the thread's history as SELECT_THREAD_HISTORY reads it, in the same statement.
SELECT_RUN_START = (
    "SELECT obj, status, config, tenant_id, CASE WHEN status = 'queued' AND NOT config ? 'resume' THEN ("
    "SELECT coalesce(json_agg(h), '[]'::json) FROM (" + SELECT_THREAD_HISTORY.replace("%s", "runs.thread_id") + ") h"
    ") END AS history FROM runs WHERE id = %s"
)
SELECT_OPEN_STEPS = "SELECT obj, pending_usage FROM run_steps WHERE run_id = %s AND obj->>'status' = 'in_progress' ORDER BY seq"
SELECT_OPEN_MESSAGES = "SELECT obj FROM messages WHERE run_id = %s AND obj->>'status' = 'in_progress' ORDER BY seq"
# A run's own steps and messages, whatever their status: what a recovering execution takes over.
SELECT_RUN_STEPS = "SELECT obj, pending_usage FROM run_steps WHERE run_id = %s ORDER BY seq"
SELECT_RUN_MESSAGES = "SELECT obj FROM messages WHERE run_id = %s ORDER BY seq"
# Active runs no job will ever move on (their job was lost between a crash and a hand-back, or
# ended without settling the run), quiet for a while so a transition in flight is not taken for one.
SELECT_ORPHANED_RUNS = f"""
    SELECT r.id, r.status FROM runs r
    WHERE r.status IN {sql_list(EXECUTING)}
      AND r.updated_at < now() - make_interval(secs => %s)
      AND NOT EXISTS (
          SELECT 1 FROM procrastinate_jobs j WHERE j.lock = r.id AND j.status IN ('todo', 'doing')
      )
    LIMIT 100
"""
SELECT_THREAD_STORES = """
    SELECT ARRAY(SELECT jsonb_array_elements_text(obj->'tool_resources'->'file_search'->'vector_store_ids')) AS ids
    FROM threads WHERE id = %s
"""
COUNT_FILES_IN_PROGRESS = """
    SELECT count(*) AS n FROM vector_store_files WHERE vector_store_id = ANY(%s) AND status = 'in_progress'
"""



@lru_cache(maxsize=None)
def _q(template: str, table: Table) -> sql.Composed:
    # A handful of (template, table) pairs, composed once instead of on every request.
    return sql.SQL(template).format(table=sql.Identifier(table))


async def get(
    conn: AsyncConnection, table: Table, object_id: str, tenant: str, *, for_update: bool = False
) -> dict | None:
    cur = await conn.execute(_q(SELECT_OBJ_FOR_UPDATE if for_update else SELECT_OBJ, table), (object_id, tenant))
    row = await cur.fetchone()
    return row["obj"] if row else None


async def replace(conn: AsyncConnection, table: Table, obj: dict) -> None:
    await conn.execute(_q(UPDATE_OBJ, table), (Jsonb(obj), obj["id"]))


async def delete(conn: AsyncConnection, table: Table, object_id: str, tenant: str) -> bool:
    cur = await conn.execute(_q(DELETE_OBJ, table), (object_id, tenant))
    return cur.rowcount > 0


async def insert_assistant(conn: AsyncConnection, obj: dict, tenant: str) -> None:
    await conn.execute(INSERT_ASSISTANT, (obj["id"], tenant, Jsonb(obj)))


async def insert_thread(conn: AsyncConnection, obj: dict, tenant: str) -> None:
    await conn.execute(INSERT_THREAD, (obj["id"], tenant, Jsonb(obj)))


async def insert_message(conn: AsyncConnection, obj: dict, tenant: str) -> None:
    await conn.execute(INSERT_MESSAGE, (obj["id"], obj["thread_id"], obj["run_id"], tenant, Jsonb(obj)))


async def thread_vector_store_ids(conn: AsyncConnection, thread_id: str) -> list[str]:
    cur = await conn.execute(SELECT_THREAD_STORES, (thread_id,))
    row = await cur.fetchone()
    return list(row["ids"] or []) if row else []


async def files_in_progress(conn: AsyncConnection, vector_store_ids: list[str]) -> int:
    cur = await conn.execute(COUNT_FILES_IN_PROGRESS, (vector_store_ids,))
    return (await cur.fetchone())["n"]


async def insert_run(conn: AsyncConnection, obj: dict, config: dict, tenant: str) -> None:
    await conn.execute(
        INSERT_RUN,
        (obj["id"], obj["thread_id"], obj["status"], tenant, obj["expires_at"], Jsonb(config), Jsonb(obj)),
    )
    observed_runs.transition(obj, tenant)


async def overdue_runs(conn: AsyncConnection, now: int, limit: int = 100) -> list[str]:
    cur = await conn.execute(SELECT_OVERDUE_RUNS, (now, limit))
    return [row["id"] for row in await cur.fetchall()]


async def run_json(conn: AsyncConnection, run_id: str, thread_id: str, tenant: str) -> tuple[str, str] | None:
    """(the run's JSON text, its status)."""
    row = await (await conn.execute(SELECT_RUN_JSON, (run_id, thread_id, tenant))).fetchone()
    return (row["json"], row["status"]) if row else None


async def merge_run_config(conn: AsyncConnection, run_id: str, values: dict) -> None:
    await conn.execute(MERGE_RUN_CONFIG, (Jsonb(values), run_id))


async def run_row(conn: AsyncConnection, run_id: str) -> dict | None:
    cur = await conn.execute(SELECT_RUN_ROW, (run_id,))
    return await cur.fetchone()


async def run_start(conn: AsyncConnection, run_id: str) -> dict | None:
    """The run's row (as `run_row`), with `history`: the thread's messages (as `thread_history`)
    for a run no execution has started, else None."""
    cur = await conn.execute(SELECT_RUN_START, (run_id,))
    return await cur.fetchone()


async def lock_thread_for_run(conn: AsyncConnection, thread_id: str, tenant: str, assistant_id: str | None) -> dict | None:
    """{"thread", "assistant", "active_run"}; None when the thread does not exist. Both statements go
    in one round trip (pipelined); the second starts, with a fresh snapshot, once the first holds the lock."""
    async with conn.pipeline():
        locked = await conn.execute(
            LOCK_THREAD_FOR_RUN, {"thread": thread_id, "tenant": tenant, "assistant": assistant_id}
        )
        active = await conn.execute(SELECT_ACTIVE_RUN, (thread_id, list(ACTIVE_RUN_STATUSES)))
        row = await locked.fetchone()
        active_row = await active.fetchone()
    if row is None:
        return None
    return {**row, "active_run": active_row["id"] if active_row else None}


async def active_run_id(conn: AsyncConnection, thread_id: str) -> str | None:
    cur = await conn.execute(SELECT_ACTIVE_RUN, (thread_id, list(ACTIVE_RUN_STATUSES)))
    row = await cur.fetchone()
    return row["id"] if row else None


async def thread_history(conn: AsyncConnection, thread_id: str) -> list[dict]:
    """The thread's messages, oldest first, as {"role", "content", "item"} (`item`: the whole
    conversation item, for the rows that are not Assistants messages)."""
    cur = await conn.execute(SELECT_THREAD_HISTORY, (thread_id,))
    return await cur.fetchall()


async def open_steps(conn: AsyncConnection, run_id: str) -> list[dict]:
    cur = await conn.execute(SELECT_OPEN_STEPS, (run_id,))
    return [{**row["obj"], "_pending_usage": row["pending_usage"]} for row in await cur.fetchall()]


async def open_messages(conn: AsyncConnection, run_id: str) -> list[dict]:
    cur = await conn.execute(SELECT_OPEN_MESSAGES, (run_id,))
    return [row["obj"] for row in await cur.fetchall()]


async def run_objects(conn: AsyncConnection, run_id: str) -> list[dict]:
    """Every step and message of the run (steps with their pending usage under `_pending_usage`)."""
    steps = await (await conn.execute(SELECT_RUN_STEPS, (run_id,))).fetchall()
    messages = await (await conn.execute(SELECT_RUN_MESSAGES, (run_id,))).fetchall()
    return [{**row["obj"], "_pending_usage": row["pending_usage"]} for row in steps] + [row["obj"] for row in messages]


async def orphaned_runs(conn: AsyncConnection, quiet_for: float) -> list[tuple[str, str]]:
    """(run id, status) of active runs without a job, unchanged for `quiet_for` seconds."""
    rows = await (await conn.execute(SELECT_ORPHANED_RUNS, (quiet_for,))).fetchall()
    return [(row["id"], row["status"]) for row in rows]


async def list_page(
    conn: AsyncConnection,
    table: Table,
    *,
    tenant: str | None,
    filters: dict[str, Any],
    limit: int,
    order: str,
    after: str | None,
    before: str | None,
    cursor_key: str = "id",
) -> tuple[list[dict], bool]:
    """Cursor pagination over insertion order; `after`/`before` name rows by `cursor_key` (the id) and
    are read in the requested order. `tenant=None` lists across tenants (the admin API only)."""
    if tenant is not None:
        filters = {"tenant_id": tenant, **filters}
    where = [sql.SQL("{} = %s").format(sql.Identifier(col)) for col in filters]
    params: list[Any] = list(filters.values())
    desc = order == "desc"
    for cursor, forward in ((after, True), (before, False)):
        if cursor is None:
            continue
        # The cursor is looked up among the listed rows only (same filters, same tenant).
        lookup = sql.SQL("SELECT seq FROM {table} WHERE {key} = %s").format(
            table=sql.Identifier(table), key=sql.Identifier(cursor_key)
        )
        if where:
            lookup = lookup + sql.SQL(" AND ") + sql.SQL(" AND ").join(where[: len(filters)])
        row = await (await conn.execute(lookup, [cursor, *list(filters.values())])).fetchone()
        if row is None:
            continue
        # "after" in descending order means smaller seq; "before" flips it.
        op = "<" if desc == forward else ">"
        where.append(sql.SQL("seq " + op + " %s"))
        params.append(row["seq"])
    # Reading "before" walks away from the cursor, so fetch in reverse and flip back.
    reverse = before is not None and after is None
    direction = "ASC" if (desc == reverse) else "DESC"
    query = sql.SQL("SELECT obj FROM {table} {where} ORDER BY seq " + direction + " LIMIT %s").format(
        table=sql.Identifier(table),
        where=sql.SQL("WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL(""),
    )
    params.append(limit + 1)
    rows = [row["obj"] for row in await (await conn.execute(query, params)).fetchall()]
    has_more = len(rows) > limit
    rows = rows[:limit]
    if reverse:
        rows.reverse()
    return rows, has_more
