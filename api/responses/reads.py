"""Reading Responses objects and conversation items from what threads and runs stored."""

from __future__ import annotations

from psycopg import AsyncConnection

from api.contract.errors import InvalidRequest, NotFound
from api.responses import items as item_views
from api.responses import objects, records
from api.responses.ids import call_of_item, container_id
from api.storage import store


async def _filenames(conn: AsyncConnection, run_id: str | None, messages: dict[str, dict], tenant: str) -> dict[str, str]:
    """Names of the files the messages cite: from the run's file_search results, else the Files."""
    names = await records.searched_files(conn, run_id) if run_id else {}
    missing = objects.cited_files(messages) - set(names)
    if missing:
        names.update(await records.filenames(conn, missing, tenant))
    return names


async def response(conn: AsyncConnection, row: dict, include: set[str]) -> dict:
    """The Response of a `responses` row, as it stands."""
    run = await store.run_row(conn, row["run_id"])
    if run is None:  # deleted with its thread meanwhile
        raise NotFound(f"Response with id '{row['id']}' not found.", param="response_id")
    steps = await records.steps_after(conn, row["run_id"], row["steps_after"])
    kinds = item_views.tool_kinds(run["obj"]["tools"])
    own, _ = objects.segment(steps, kinds)
    messages = await records.messages(conn, objects.message_ids(own))
    return objects.response(
        row["obj"],
        run["obj"],
        steps,
        messages,
        whole_run=row["steps_after"] == 0,
        include=include,
        filenames=await _filenames(conn, row["run_id"], messages, row["tenant_id"]),
        container=container_id(row["thread_id"]),
        leading=row.get("leading") or [],
    )


async def stream_filenames(conn: AsyncConnection, row: dict) -> dict[str, str]:
    """File names a stream of the response may need for citations, known before it starts."""
    return await records.searched_files(conn, row["run_id"])


def _expand(rows: list[dict], run_tools: dict[str, list[dict]], include: set[str], filenames: dict[str, str],
            container: str) -> list[dict]:
    out: list[dict] = []
    for row in rows:
        obj = row["obj"]
        if row["kind"] == "message":
            out.append(item_views.input_message_item(obj, filenames, container))
        elif row["kind"] == "item":
            out.append(item_views.shown_kept_item(obj, include))
        else:
            kinds = item_views.tool_kinds(run_tools.get(obj["run_id"]) or [])
            out += item_views.step_items(obj, kinds, include, container, with_outputs=True)
    return out


async def conversation_items(conn: AsyncConnection, thread_id: str, tenant: str, include: set[str]) -> list[dict]:
    """Every item of the conversation, oldest first."""
    rows = await records.conversation_rows(conn, thread_id)
    run_tools = await records.run_tools_of_thread(conn, thread_id)
    messages = {r["obj"]["id"]: r["obj"] for r in rows if r["kind"] == "message"}
    files = objects.cited_files(messages) | {
        a["file_id"] for m in messages.values() for a in m.get("attachments") or []
    }
    filenames = await records.filenames(conn, files, tenant)
    return _expand(rows, run_tools, include, filenames, container_id(thread_id))


async def conversation_item(conn: AsyncConnection, thread_id: str, tenant: str, item_id: str, include: set[str]) -> dict:
    row = await records.item_row(conn, item_id, thread_id, tenant)
    if row is not None:
        rows = [row]
    else:
        derived = call_of_item(item_id)
        step = await records.step_with_call(conn, thread_id, tenant, derived[1]) if derived else None
        if step is None:
            raise NotFound(f"Item with id '{item_id}' not found.", param="item_id")
        rows = [{"kind": "step", "obj": step}]
    messages = {r["obj"]["id"]: r["obj"] for r in rows if r["kind"] == "message"}
    files = objects.cited_files(messages) | {a["file_id"] for m in messages.values() for a in m.get("attachments") or []}
    run_tools = await records.run_tools_of_thread(conn, thread_id) if row is None else {}
    found = _expand(rows, run_tools, include, await records.filenames(conn, files, tenant), container_id(thread_id))
    for item in found:
        if item["id"] == item_id:
            return item
    raise NotFound(f"Item with id '{item_id}' not found.", param="item_id")


def page(items: list[dict], *, limit: int, order: str, after: str | None, before: str | None = None) -> dict:
    """Cursor pagination over a list of items (oldest first), by item id."""
    ordered = list(reversed(items)) if order == "desc" else list(items)
    ids = [item["id"] for item in ordered]
    start, stop = 0, len(ordered)
    for cursor, name in ((after, "after"), (before, "before")):
        if cursor is None:
            continue
        if cursor not in ids:
            raise InvalidRequest(f"Invalid '{name}': no item with id '{cursor}' is in this list.", param=name)
        if name == "after":
            start = ids.index(cursor) + 1
        else:
            stop = ids.index(cursor)
    window = ordered[start:stop]
    if before is not None and after is None:
        chosen = window[-limit:]
        has_more = len(window) > limit
    else:
        chosen = window[:limit]
        has_more = len(window) > limit
    return {
        "object": "list",
        "data": chosen,
        "first_id": chosen[0]["id"] if chosen else None,
        "last_id": chosen[-1]["id"] if chosen else None,
        "has_more": has_more,
    }
