from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from api.http.deps import App, Includes, id_pattern
from api.responses import conversations, items, params

router = APIRouter(prefix="/conversations", tags=["conversations"])
# A thread's id is a conversation's too.
ConversationId = Annotated[str, Path(json_schema_extra=id_pattern("conv_", "thread_"))]


@router.post("")
async def create_conversation(app: App, body: params.CreateConversation | None = None) -> dict:
    return await conversations.create(app, body or params.CreateConversation())


@router.get("/{conversation_id}")
async def retrieve_conversation(conversation_id: ConversationId, app: App) -> dict:
    return await conversations.retrieve(app, conversation_id)


@router.post("/{conversation_id}")
async def update_conversation(conversation_id: ConversationId, body: params.UpdateConversation, app: App) -> dict:
    return await conversations.update(app, conversation_id, body)


@router.delete("/{conversation_id}")
async def delete_conversation(conversation_id: ConversationId, app: App) -> dict:
    return await conversations.delete(app, conversation_id)


@router.post("/{conversation_id}/items")
async def create_items(conversation_id: ConversationId, body: params.CreateItems, app: App, include: Includes) -> dict:
    return await conversations.add_items(app, conversation_id, body, items.check_include(include))


@router.get("/{conversation_id}/items")
async def list_items(
    conversation_id: ConversationId,
    app: App,
    include: Includes,
    limit: int = Query(20, ge=1, le=100),
    order: Literal["asc", "desc"] = Query("desc"),
    after: str | None = Query(None),
) -> dict:
    return await conversations.list_items(
        app, conversation_id, limit=limit, order=order, after=after, include=items.check_include(include)
    )


@router.get("/{conversation_id}/items/{item_id}")
async def retrieve_item(conversation_id: ConversationId, item_id: str, app: App, include: Includes) -> dict:
    return await conversations.item(app, conversation_id, item_id, items.check_include(include))


@router.delete("/{conversation_id}/items/{item_id}")
async def delete_item(conversation_id: ConversationId, item_id: str, app: App) -> dict:
    return await conversations.delete_item(app, conversation_id, item_id)
