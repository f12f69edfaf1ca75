"""The Conversations API over threads: a conversation is its thread (`conv_X` is `thread_X`), its
metadata the thread's, its items the thread's messages and kept items and its runs' tool calls."""

from __future__ import annotations

from api.contract import objects as assistants_objects
from api.contract.errors import InvalidRequest, NotFound
from api.files import vector_stores as vs
from api.responses import items as item_views
from api.responses import params, reads, records, writes
from api.responses.ids import call_of_item, conversation_id, thread_id_of
from api.runs.runtime import Services
from api.storage import store


def conversation(thread: dict) -> dict:
    return {
        "id": conversation_id(thread["id"]),
        "object": "conversation",
        "created_at": thread["created_at"],
        "metadata": thread.get("metadata") or {},
    }


def _not_found(conversation: str) -> NotFound:
    return NotFound(f"Conversation with id '{conversation}' not found.", param="conversation_id")


async def _thread(conn, svc: Services, conversation: str, *, for_update: bool = False) -> dict:
    thread = await store.get(conn, "threads", thread_id_of(conversation), svc.tenant, for_update=for_update)
    if thread is None:
        raise _not_found(conversation)
    return thread


async def create(svc: Services, body: params.CreateConversation) -> dict:
    items = item_views.normalize_input(body.items, "items")
    thread = assistants_objects.thread(body.metadata)
    jobs: list = []
    async with svc.pool.connection() as conn, conn.transaction():
        await store.insert_thread(conn, thread, svc.tenant)
        await writes.write_items(conn, svc, thread["id"], items, jobs, "items")
    await vs.enqueue(svc.queue, svc.pool, jobs)
    return conversation(thread)


async def retrieve(svc: Services, conversation_ref: str) -> dict:
    async with svc.pool.connection() as conn:
        return conversation(await _thread(conn, svc, conversation_ref))


async def update(svc: Services, conversation_ref: str, body: params.UpdateConversation) -> dict:
    async with svc.pool.connection() as conn, conn.transaction():
        thread = await _thread(conn, svc, conversation_ref, for_update=True)
        thread["metadata"] = body.metadata or {}
        await store.replace(conn, "threads", thread)
    return conversation(thread)


async def delete(svc: Services, conversation_ref: str) -> dict:
    async with svc.pool.connection() as conn:
        if not await store.delete(conn, "threads", thread_id_of(conversation_ref), svc.tenant):
            raise _not_found(conversation_ref)
    return {"id": conversation_id(thread_id_of(conversation_ref)), "object": "conversation.deleted", "deleted": True}


# --- items ------------------------------------------------------------------------------------------


async def add_items(svc: Services, conversation_ref: str, body: params.CreateItems, include: set[str]) -> dict:
    items = item_views.normalize_input(body.items, "items")
    jobs: list = []
    async with svc.pool.connection() as conn, conn.transaction():
        thread = await _thread(conn, svc, conversation_ref, for_update=True)
        if await store.active_run_id(conn, thread["id"]):
            raise InvalidRequest(
                f"Conversation '{conversation_id(thread['id'])}' has a response in progress; add items when it is done.",
                param="conversation_id",
            )
        written = await writes.write_items(conn, svc, thread["id"], items, jobs, "items")
    await vs.enqueue(svc.queue, svc.pool, jobs)
    data = [item_views.shown_kept_item(i, include) for i in written]
    return {"object": "list", "data": data, "first_id": data[0]["id"], "last_id": data[-1]["id"], "has_more": False}


async def list_items(
    svc: Services, conversation_ref: str, *, limit: int, order: str, after: str | None, include: set[str]
) -> dict:
    async with svc.pool.connection() as conn:
        thread = await _thread(conn, svc, conversation_ref)
        items = await reads.conversation_items(conn, thread["id"], svc.tenant, include)
    return reads.page(items, limit=limit, order=order, after=after)


async def item(svc: Services, conversation_ref: str, item_id: str, include: set[str]) -> dict:
    async with svc.pool.connection() as conn:
        thread = await _thread(conn, svc, conversation_ref)
        return await reads.conversation_item(conn, thread["id"], svc.tenant, item_id, include)


async def delete_item(svc: Services, conversation_ref: str, item_id: str) -> dict:
    async with svc.pool.connection() as conn, conn.transaction():
        thread = await _thread(conn, svc, conversation_ref, for_update=True)
        if not await records.delete_item(conn, item_id, thread["id"], svc.tenant):
            derived = call_of_item(item_id)
            if derived and await records.step_with_call(conn, thread["id"], svc.tenant, derived[1]):
                raise InvalidRequest(
                    "Tool calls a run made stay in its run steps: this item cannot be deleted on its own "
                    "(delete the conversation, or the message that follows it).",
                    param="item_id",
                )
            raise NotFound(f"Item with id '{item_id}' not found.", param="item_id")
    return conversation(thread)
