from __future__ import annotations

from fastapi import APIRouter

from api.contract import objects, schemas
from api.contract.errors import not_found
from api.files import tool_resources
from api.files import vector_stores as vs
from api.http.deps import App, AssistantId, PageParams
from api.security.models import catalog_for, unknown_model_for_assistant
from api.storage import store
from api.tooling import tool_types

router = APIRouter(prefix="/assistants", tags=["assistants"])


def check_model(app: App, model: str) -> None:
    """As on OpenAI, an assistant cannot name a model the server does not serve (its model catalogue)."""
    if not app.caller.own_endpoint and not catalog_for(app.settings).serves(model):
        raise unknown_model_for_assistant(model)


@router.post("")
async def create_assistant(body: schemas.CreateAssistant, app: App) -> dict:
    check_model(app, body.model)
    assistant = objects.assistant(body)
    jobs: list = []
    async with app.pool.connection() as conn, conn.transaction():
        assistant["tools"] = await tool_types.render(conn, app.tools, app.tenant, assistant["tools"])
        assistant["tool_resources"] = await tool_resources.resolve(
            conn, app, body.tool_resources, jobs, for_thread=False
        )
        await store.insert_assistant(conn, assistant, app.tenant)
    await vs.enqueue(app.queue, app.pool, jobs)
    return assistant


@router.get("")
async def list_assistants(app: App, page: PageParams) -> dict:
    async with app.pool.connection() as conn:
        items, more = await store.list_page(conn, "assistants", tenant=app.tenant, filters={}, **vars(page))
    return objects.page(items, more)


@router.get("/{assistant_id}")
async def retrieve_assistant(assistant_id: AssistantId, app: App) -> dict:
    async with app.pool.connection() as conn:
        assistant = await store.get(conn, "assistants", assistant_id, app.tenant)
    if assistant is None:
        raise not_found("assistant", assistant_id)
    return assistant


@router.post("/{assistant_id}")
async def modify_assistant(assistant_id: AssistantId, body: schemas.ModifyAssistant, app: App) -> dict:
    if body.model is not None:
        check_model(app, body.model)
    jobs: list = []
    async with app.pool.connection() as conn, conn.transaction():
        current = await store.get(conn, "assistants", assistant_id, app.tenant, for_update=True)
        if current is None:
            raise not_found("assistant", assistant_id)
        updated = objects.modify_assistant(current, body)
        if "tools" in body.model_fields_set:
            updated["tools"] = await tool_types.render(conn, app.tools, app.tenant, updated["tools"])
        if "tool_resources" in body.model_fields_set:
            updated["tool_resources"] = await tool_resources.resolve(
                conn, app, body.tool_resources, jobs, for_thread=False
            )
        await store.replace(conn, "assistants", updated)
    await vs.enqueue(app.queue, app.pool, jobs)
    return updated


@router.delete("/{assistant_id}")
async def delete_assistant(assistant_id: AssistantId, app: App) -> dict:
    async with app.pool.connection() as conn:
        if not await store.delete(conn, "assistants", assistant_id, app.tenant):
            raise not_found("assistant", assistant_id)
    return objects.deleted(assistant_id, "assistant")
