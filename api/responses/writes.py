"""Writing items into a thread: user and assistant messages as Assistants messages (files given as
`input_file` become attachments searched with file_search), every other item kept beside them; and
forking a thread at a response, for a `previous_response_id` that is not the end of its chain."""

from __future__ import annotations

import copy

from psycopg import AsyncConnection
from pydantic import ValidationError

from api.contract import objects as assistants_objects
from api.contract import schemas
from api.contract.errors import InvalidRequest, NotFound
from api.contract.ids import new_id
from api.files import files_store
from api.responses import items as item_views
from api.responses import compaction, objects, records
from api.responses.ids import call_of_item, container_id, new_item_id
from api.runs.control import add_messages
from api.runs.runtime import Services
from api.storage import store


def _message_from(obj: dict) -> dict:
    """An Assistants message as an input message item (for `item_reference`)."""
    if obj["role"] == "assistant":
        parts = [{"type": "output_text", "text": p["text"]["value"]} for p in obj["content"] if p["type"] == "text"]
    else:
        parts = item_views.input_message_item(obj, {}, "")["content"]
    return {"type": "message", "role": obj["role"], "content": parts}


async def resolve_reference(conn: AsyncConnection, tenant: str, item_id: str, param: str) -> dict:
    """The item an `item_reference` names, as an input item."""
    row = await records.any_item(conn, item_id, tenant)
    if row is not None:
        if row["kind"] == "message":
            return _message_from(row["obj"])
        return {k: v for k, v in row["obj"].items() if k not in ("id", "status")}
    derived = call_of_item(item_id)
    if derived is not None:
        kind, call_id = derived
        found = await records.any_step_with_call(conn, tenant, call_id)
        if found is not None:
            step = found["obj"]
            call = next(c for c in step["step_details"]["tool_calls"] if c["id"] == call_id)
            if kind == "function_call_output":
                answered = item_views.function_output_item(call)
                if answered is not None:
                    return {"type": kind, "call_id": call_id, "output": answered["output"]}
            else:
                kinds = item_views.tool_kinds(found["tools"] or [])
                item = item_views.call_item(call, step["status"], kinds, set(), "")
                if item["type"] == kind:
                    if kind == "function_call":
                        return {k: item[k] for k in ("type", "call_id", "name", "arguments")}
                    return {k: v for k, v in item.items() if k not in ("id", "status")}
    raise NotFound(f"Item with id '{item_id}' not found.", param=param)


async def _check_files(conn: AsyncConnection, tenant: str, item: dict, param: str) -> dict[str, str]:
    """Files a message names must exist; their names (for input_file parts)."""
    names = {}
    for part in item["content"]:
        file_id = part.get("file_id") if part["type"] in ("input_image", "input_file") else None
        if file_id is None:
            continue
        found = await files_store.get(conn, file_id, tenant)
        if found is None:
            raise NotFound(f"No such File object: {file_id}", param=param)
        names[file_id] = found[0]["filename"]
    return names


async def write_items(
    conn: AsyncConnection, svc: Services, thread_id: str, items: list[dict], jobs: list, param: str = "input",
    start: int = 0,
) -> list[dict]:
    """Write the items into the thread (the caller's transaction holds its lock); the items as
    written, with their ids. `start`: the position of the first in the request's list."""
    written = []
    container = container_id(thread_id)
    for i, item in enumerate(items, start=start):
        where = f"{param}[{i}]"
        if item["type"] == "item_reference":
            item = await resolve_reference(conn, svc.tenant, item["id"], f"{where}.id")
        if item["type"] == "compaction":
            # Opened here: the model sees the summary in its place (api/runs/history.py).
            opened = compaction.open_sealed(svc, item["encrypted_content"], f"{where}.encrypted_content")
            kept = item_views.kept_item({"type": "compaction", "encrypted_content": item["encrypted_content"]})
            await records.insert_item(conn, thread_id, svc.tenant, {**kept, **opened.private()})
            written.append(kept)
        elif item["type"] == "message" and item["role"] in ("user", "assistant"):
            names = await _check_files(conn, svc.tenant, item, where)
            try:
                body = schemas.CreateMessage.model_validate(item_views.to_create_message(item))
            except ValidationError as exc:
                raise InvalidRequest(f"Invalid message: {exc.errors()[0].get('msg', 'invalid value')}", param=where) from None
            (message,) = await add_messages(conn, thread_id, [body], svc, jobs)
            written.append(item_views.input_message_item(message, names, container))
        else:
            kept = item_views.kept_item(item)
            await records.insert_item(conn, thread_id, svc.tenant, kept)
            written.append(kept)
    return written


async def fork(conn: AsyncConnection, svc: Services, previous: dict) -> str:
    """A new thread holding the items of `previous`'s thread up to the end of that response (its
    input, and what its run wrote), so a response can follow it without what came after."""
    source = await store.get(conn, "threads", previous["thread_id"], svc.tenant)
    if source is None:
        raise NotFound(f"Previous response with id '{previous['id']}' not found.", param="previous_response_id")
    thread = assistants_objects.thread(None)
    thread["tool_resources"] = copy.deepcopy(source.get("tool_resources") or {})
    await store.insert_thread(conn, thread, svc.tenant)
    # The end of `previous`: its input and its part of the run (up to the function calls it ended with).
    run = await store.run_row(conn, previous["run_id"])
    own, _ = objects.segment(
        await records.steps_after(conn, previous["run_id"], previous["steps_after"]),
        item_views.tool_kinds(run["obj"]["tools"]),
    )
    written = [i["id"] for i in previous["input"]] + objects.message_ids(own)
    cutoff = max([await records.last_item_seq(conn, written), *(s["_item_seq"] for s in own)])
    for row in await records.thread_rows_upto(conn, source["id"], cutoff):
        obj = copy.deepcopy(row["obj"])
        if row["kind"] == "message":
            obj.update(id=new_id("message"), thread_id=thread["id"], run_id=None)
            await store.insert_message(conn, obj, svc.tenant)
        else:
            obj["id"] = new_item_id(obj["type"])
            await records.insert_item(conn, thread["id"], svc.tenant, obj)
    return thread["id"]
