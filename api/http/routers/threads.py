from __future__ import annotations

from fastapi import APIRouter, Query

from api.contract import objects, schemas
from api.contract.errors import not_found
from api.files import tool_resources
from api.files import vector_stores as vs
from api.http.deps import App, MessageId, PageParams, ThreadId
from api.runs.control import add_messages, ensure_unlocked_for_messages, lock_thread
from api.storage import store

router = APIRouter(prefix="/threads", tags=["threads"])


@router.post("")
async def create_thread(app: App, body: schemas.CreateThread | None = None) -> dict:
    body = body or schemas.CreateThread()
    thread = objects.thread(body.metadata)
    jobs: list = []
    # Pipelined: the inserts need no answer, so a plain thread with its messages is one round trip.
    async with app.pool.connection() as conn, conn.pipeline(), conn.transaction():
        thread["tool_resources"] = await tool_resources.resolve(conn, app, body.tool_resources, jobs, for_thread=True)
        await store.insert_thread(conn, thread, app.tenant)
        await add_messages(conn, thread["id"], body.messages, app, jobs)
        if any(m.attachments for m in body.messages or []):
            # Attachments may have given the thread a vector store.
            thread = await store.get(conn, "threads", thread["id"], app.tenant)
    await vs.enqueue(app.queue, app.pool, jobs)
    return thread


async def _thread(conn, thread_id: str, tenant: str) -> dict:
    thread = await store.get(conn, "threads", thread_id, tenant)
    if thread is None:
        raise not_found("thread", thread_id)
    return thread


@router.get("/{thread_id}")
async def retrieve_thread(thread_id: ThreadId, app: App) -> dict:
    async with app.pool.connection() as conn:
        return await _thread(conn, thread_id, app.tenant)


@router.post("/{thread_id}")
async def modify_thread(thread_id: ThreadId, body: schemas.ModifyThread, app: App) -> dict:
    jobs: list = []
    async with app.pool.connection() as conn, conn.transaction():
        thread = await store.get(conn, "threads", thread_id, app.tenant, for_update=True)
        if thread is None:
            raise not_found("thread", thread_id)
        if "metadata" in body.model_fields_set:
            thread["metadata"] = body.metadata or {}
        if "tool_resources" in body.model_fields_set:
            thread["tool_resources"] = await tool_resources.resolve(
                conn, app, body.tool_resources, jobs, for_thread=True
            )
        await store.replace(conn, "threads", thread)
    await vs.enqueue(app.queue, app.pool, jobs)
    return thread


@router.delete("/{thread_id}")
async def delete_thread(thread_id: ThreadId, app: App) -> dict:
    async with app.pool.connection() as conn:
        if not await store.delete(conn, "threads", thread_id, app.tenant):
            raise not_found("thread", thread_id)
    return objects.deleted(thread_id, "thread")


# --- messages --------------------------------------------------------------------------------


@router.post("/{thread_id}/messages")
async def create_message(thread_id: ThreadId, body: schemas.CreateMessage, app: App) -> dict:
    jobs: list = []
    async with app.pool.connection() as conn, conn.transaction():
        await lock_thread(conn, thread_id, app.tenant)
        await ensure_unlocked_for_messages(conn, thread_id)
        (message,) = await add_messages(conn, thread_id, [body], app, jobs)
    await vs.enqueue(app.queue, app.pool, jobs)
    return message


@router.get("/{thread_id}/messages")
async def list_messages(thread_id: ThreadId, app: App, page: PageParams, run_id: str | None = Query(None)) -> dict:
    # A thread's conversation items that are not Assistants messages (kind 'item') are not listed.
    filters = {"thread_id": thread_id, "kind": "message"}
    if run_id is not None:
        filters["run_id"] = run_id
    async with app.pool.connection() as conn:
        await _thread(conn, thread_id, app.tenant)
        items, more = await store.list_page(conn, "messages", tenant=app.tenant, filters=filters, **vars(page))
    return objects.page(items, more)


async def _message(conn, thread_id: str, message_id: str, tenant: str, *, for_update: bool = False) -> dict:
    message = await store.get(conn, "messages", message_id, tenant, for_update=for_update)
    if message is None or message.get("object") != "thread.message" or message["thread_id"] != thread_id:
        raise not_found("message", message_id)
    return message


@router.get("/{thread_id}/messages/{message_id}")
async def retrieve_message(thread_id: ThreadId, message_id: MessageId, app: App) -> dict:
    async with app.pool.connection() as conn:
        return await _message(conn, thread_id, message_id, app.tenant)


@router.post("/{thread_id}/messages/{message_id}")
async def modify_message(thread_id: ThreadId, message_id: MessageId, body: schemas.ModifyMessage, app: App) -> dict:
    async with app.pool.connection() as conn, conn.transaction():
        message = await _message(conn, thread_id, message_id, app.tenant, for_update=True)
        if "metadata" in body.model_fields_set:
            message["metadata"] = body.metadata or {}
        await store.replace(conn, "messages", message)
    return message


@router.delete("/{thread_id}/messages/{message_id}")
async def delete_message(thread_id: ThreadId, message_id: MessageId, app: App) -> dict:
    async with app.pool.connection() as conn:
        await _message(conn, thread_id, message_id, app.tenant)
        await store.delete(conn, "messages", message_id, app.tenant)
    return objects.deleted(message_id, "thread.message")
