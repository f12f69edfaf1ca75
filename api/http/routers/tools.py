"""GET /v1/tools: the installed tools an assistant can enable with `{"type": "<name>"}`."""

from __future__ import annotations

from fastapi import APIRouter

from api.contract import objects
from api.http.deps import App

router = APIRouter(prefix="/tools", tags=["tools"])


@router.get("")
async def list_tools(app: App) -> dict:
    items = [
        {
            "id": installed.name,
            "object": "tool",
            "type": installed.name,
            "function": installed.function(),
            "source": installed.source,
        }
        for installed in app.tools
    ]
    return objects.page(items, False)
