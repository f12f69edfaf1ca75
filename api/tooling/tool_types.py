"""Tool types a request may name, and the shape they are stored and returned in.

Installed tools (`{"type": "web_search"}`), OpenAPI actions (`{"type": "action", "id": ...}`) and MCP
servers (`{"type": "mcp", "id": ...}`) are not tool types the official SDK knows: a strict client would
reject an assistant carrying them. So they are stored and returned as `function` tools (name,
description, JSON schema) with a `builtin` marker holding what the client asked for; the SDK keeps
unknown fields, and sending such an entry back (assistants.update(tools=assistant.tools)) means the
built-in tool again.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from api.contract.errors import InvalidRequest
from api.settings import Settings
from api.tooling import actions, mcp_servers
from tools.registry import RESERVED_TYPES, ToolRegistry

NO_PARAMETERS = {"type": "object", "properties": {}}


def builtin_config(settings: Settings) -> dict[str, dict[str, Any]]:
    """Keyword arguments of the project's own tools, by entry-point name."""
    return {
        "web_search": {
            "provider": settings.web_search_provider,
            "max_results": settings.web_search_max_results,
            "searxng_url": settings.searxng_url,
            "tavily_api_key": settings.tavily_api_key.get_secret_value() if settings.tavily_api_key else None,
            "tavily_api_url": settings.tavily_api_url,
        }
    }


def discover(settings: Settings) -> ToolRegistry:
    return ToolRegistry.discover(settings.tool_plugins, builtin_config(settings))


def available(registry: ToolRegistry) -> list[str]:
    return [*RESERVED_TYPES, *registry.names()]


async def render(conn: AsyncConnection, registry: ToolRegistry, tenant: str, tools: list[dict]) -> list[dict]:
    """Checks the tools a request names and returns them as stored (built-ins as marked functions)."""
    out = []
    missing = await actions.missing_actions(conn, tenant, [t["id"] for t in tools if t["type"] == "action"])
    missing_mcp = await mcp_servers.missing_servers(conn, tenant, [t["id"] for t in tools if t["type"] == "mcp"])
    for i, tool in enumerate(tools):
        kind = tool["type"]
        if kind == "action":
            if tool["id"] in missing:
                raise InvalidRequest(f"No action with id '{tool['id']}'.", param=f"tools[{i}].id")
            out.append(_source_entry("action", tool["id"], "OpenAPI action", "actions", "operations"))
        elif kind == "mcp":
            if tool["id"] in missing_mcp:
                raise InvalidRequest(f"No MCP server with id '{tool['id']}'.", param=f"tools[{i}].id")
            out.append(_source_entry("mcp", tool["id"], "MCP server", "mcp_servers", "tools"))
        elif kind in RESERVED_TYPES:
            out.append(tool)
        elif (installed := registry.get(kind)) is not None:
            out.append({"type": "function", "function": {**installed.function(), "strict": False}, "builtin": {"type": kind}})
        else:
            raise InvalidRequest(
                f"Unknown tool type '{kind}'. Available tool types: {', '.join(available(registry))}.",
                param=f"tools[{i}].type",
            )
    return out


def _source_entry(kind: str, source_id: str, noun: str, path: str, parts: str) -> dict:
    # Only the id: an action's document and an MCP server's tools can change after assistants
    # enable them (modify, refresh), and runs build the tools from them as they are then.
    description = f"{noun} {source_id}: its {parts} are offered to the model as tools (GET /v1/{path}/{source_id})."
    return {
        "type": "function",
        "function": {"name": source_id, "description": description, "parameters": NO_PARAMETERS, "strict": False},
        "builtin": {"type": kind, "id": source_id},
    }


def enabled_mcp(tools: list[dict]) -> list[str]:
    """The MCP servers (by id) a stored tool list enables."""
    return [
        t["builtin"]["id"] for t in tools if isinstance(t.get("builtin"), dict) and t["builtin"].get("type") == "mcp"
    ]


def enabled(tools: list[dict]) -> tuple[list[str], list[str]]:
    """The installed tools (by name) and the actions (by id) a stored tool list enables."""
    names, action_ids = [], []
    for tool in tools:
        marker = tool.get("builtin")
        if not isinstance(marker, dict):
            continue
        if marker.get("type") == "action":
            action_ids.append(marker["id"])
        elif marker.get("type") == "mcp":
            continue  # enabled_mcp
        else:
            names.append(marker["type"])
    return names, action_ids
