"""MCP servers as tools: each tool an MCP server lists becomes a LangChain tool the model can call;
the server (this process) makes the MCP call and hands the result back to the model.

- `config`: what describes a server (URL, transport, headers; the operator's shared servers,
  remote or stdio), validated without the `mcp` SDK.
- `client`: listing a server's tools and building the tools a run calls, through
  langchain-mcp-adapters and the `mcp` SDK (streamable HTTP, SSE, stdio).

Safety (tenants choose the URL and the model chooses the arguments):
- Every connection to a server a tenant registered is opened by the OpenAPI actions' network guard
  (`tools.openapi_actions.network_guard`): the host is resolved once, the connection is refused if
  any address is private, loopback, link-local or otherwise non-public (unless the host is
  allow-listed), and the socket goes to the address that was checked. Redirects are not followed
  and no proxy from the environment is used. Servers the operator configures are trusted as written.
- Header values (credentials) are sent only to their server; they never appear in a tool's repr,
  and any occurrence in what the model sees (an echoed header, an error text) is redacted.

`client` imports the `mcp` SDK, whose import can take a second (jsonschema compiles its format
grammars when the optional ones are installed); `load_client()` imports it off the event loop the
first time MCP is used, so processes that never use MCP never pay for it.
"""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType

from tools.mcp_servers.config import (
    TRANSPORTS,
    RemoteServer,
    SharedServer,
    SharedServerName,
    StdioServer,
    check_url,
    header_problem,
    header_secrets,
    public_tool,
)

_client: ModuleType | None = None


async def load_client() -> ModuleType:
    """`tools.mcp_servers.client`, imported in a worker thread on first use."""
    global _client
    if _client is None:
        _client = await asyncio.to_thread(importlib.import_module, "tools.mcp_servers.client")
    return _client


__all__ = [
    "TRANSPORTS",
    "RemoteServer",
    "SharedServer",
    "SharedServerName",
    "StdioServer",
    "check_url",
    "header_problem",
    "header_secrets",
    "load_client",
    "public_tool",
]
