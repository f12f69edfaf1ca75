"""MCP servers (`/mcp_servers`): register an MCP server whose tools assistants can enable with
`{"type": "mcp", "id": ...}`. Its tools are listed at registration (and on refresh); headers given
in `headers` are stored encrypted and never returned."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import Field, field_validator

from api.contract import objects
from api.contract.schemas import WithMetadata, refuse_null
from api.http.deps import App, PageParams, _id_checker
from api.tooling import mcp_servers
from api.tooling.sources import Edits

router = APIRouter(prefix="/mcp_servers", tags=["mcp_servers"])

McpServerId = Annotated[str, Depends(_id_checker("mcp_server_id", "mcp_"))]
Transport = Literal["streamable_http", "sse"]


class CreateMcpServer(WithMetadata):
    url: str = Field(description="The server's streamable HTTP (or SSE) endpoint, e.g. https://example.com/mcp.")
    transport: Transport = Field(default="streamable_http", description="`streamable_http` (default) or `sse`.")
    name: str | None = Field(default=None, min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=2048)
    # Checked by mcp_servers.validate_headers, whose errors name `headers.<name>` and never the value.
    headers: dict[str, Any] | None = None
    allowed_tools: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, max_length=256, description="Names of the server's tools offered to the model (unset: all)."
    )


class ModifyMcpServer(CreateMcpServer):
    """Only the fields given change; `headers: null` removes the stored headers."""

    url: str | None = None  # type: ignore[assignment]
    transport: Transport | None = None  # type: ignore[assignment]

    # A server always has a URL and a transport.
    _not_null = field_validator("url", "transport")(refuse_null("a string"))


@router.post("")
async def create_mcp_server(body: CreateMcpServer, app: App) -> dict:
    url = mcp_servers.check_url(body.url)
    headers = mcp_servers.validate_headers(body.headers)
    sealed = mcp_servers.seal_headers(app.settings, headers)
    listing = await mcp_servers.discover(app.settings, url, body.transport, headers)
    mcp_servers.check_allowed_tools(body.allowed_tools, listing.tools)
    obj = mcp_servers.new_server_object(
        url=url,
        transport=body.transport,
        name=body.name,
        description=body.description,
        headers=headers,
        allowed_tools=body.allowed_tools,
        metadata=body.metadata,
        listing=listing,
    )
    async with app.pool.connection() as conn:
        await mcp_servers.insert_server(conn, obj, app.tenant, listing.tools, sealed)
    return obj


@router.get("")
async def list_mcp_servers(app: App, page: PageParams) -> dict:
    items, more = await mcp_servers.list_servers(app.pool, app.settings, app.tenant, **vars(page))
    return objects.page(items, more)


@router.get("/{mcp_server_id}")
async def retrieve_mcp_server(mcp_server_id: McpServerId, app: App) -> dict:
    return await mcp_servers.get_server(app.pool, app.settings, mcp_server_id, app.tenant)


@router.post("/{mcp_server_id}")
async def modify_mcp_server(mcp_server_id: McpServerId, body: ModifyMcpServer, app: App) -> dict:
    mcp_servers.refuse_shared_change(app.settings, mcp_server_id)
    given = body.model_fields_set
    # Everything that can be refused without the network is checked first.
    url = mcp_servers.check_url(body.url) if "url" in given else None
    headers = mcp_servers.validate_headers(body.headers)
    return await mcp_servers.modify_server(
        app.pool,
        app.settings,
        mcp_server_id,
        app.tenant,
        Edits.of(body),
        url=url,
        transport=body.transport,
        headers=headers,
        allowed_tools=body.allowed_tools,
    )


@router.post("/{mcp_server_id}/refresh")
async def refresh_mcp_server(mcp_server_id: McpServerId, app: App) -> dict:
    return await mcp_servers.refresh_server(app.pool, app.settings, mcp_server_id, app.tenant)


@router.delete("/{mcp_server_id}")
async def delete_mcp_server(mcp_server_id: McpServerId, app: App) -> dict:
    await mcp_servers.delete_server(app.pool, app.settings, mcp_server_id, app.tenant)
    return objects.deleted(mcp_server_id, "mcp_server")
