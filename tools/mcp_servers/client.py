"""Talking to MCP servers through langchain-mcp-adapters (sessions and tool conversion) and the `mcp`
SDK (the protocol): listing a server's tools, and the LangChain tools a run calls them with.

Every call opens its own session (initialize, call, close), as langchain-mcp-adapters does for tools
built from a connection: nothing is kept between calls, so a server that restarts or goes away
only fails the calls made while it is gone.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx
from langchain_core.tools import BaseTool
from langchain_mcp_adapters.sessions import Connection, create_session
from langchain_mcp_adapters.tools import convert_mcp_tool_to_langchain_tool
from mcp.shared.exceptions import McpError
from mcp.types import Tool as MCPTool
from pydantic import ConfigDict, Field, PrivateAttr

from tools.functions import unique_name
from tools.mcp_servers.config import MIN_SECRET_LENGTH, header_secrets
from tools.openapi_actions.network_guard import GuardedTransport, RefusedAddress, _normal_host

# The SDK's transports log every JSON-RPC message at debug level (tool results included, before
# anything a server echoed of its credentials is redacted): their debug records are dropped whatever
# the log level (a filter, so the configured level still holds for the rest).
for _logger in ("mcp.client.streamable_http", "mcp.client.sse", "mcp.client.stdio"):
    logging.getLogger(_logger).addFilter(lambda record: record.levelno > logging.DEBUG)

# A server listing more tools than this is refused: no model is offered that many at once.
MAX_TOOLS = 256
MAX_PAGES = 50
# The error code the `mcp` SDK's streamable HTTP client gives the "Session terminated" error it
# makes of an HTTP 404 (mcp.client.streamable_http).
SESSION_TERMINATED = 32600
NAME_LENGTH = 64


class McpUnavailable(Exception):
    """A server that could not be reached or answered with an error; the message is safe to show."""


class AddressRefused(McpUnavailable):
    """The network guard refused the server's address."""


@dataclass(frozen=True)
class Target:
    """How to reach one MCP server: a langchain-mcp-adapters connection and the secrets in it."""

    label: str
    connection: Connection = field(repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[REDACTED]")
        return text


def _guarded_client_factory(allowed_hosts: frozenset[str] | None):
    """httpx clients for the MCP transports. With `allowed_hosts` (servers tenants register), every
    connection goes through the actions' network guard: the host is resolved once, refused if any
    address is not public (unless allow-listed), and the socket goes to the address checked.
    Redirects are not followed (a redirect could carry the headers elsewhere); the error names
    the new location instead."""

    def make(headers=None, timeout=None, auth=None) -> httpx.AsyncClient:
        transport = GuardedTransport(allowed_hosts) if allowed_hosts is not None else None
        return httpx.AsyncClient(
            transport=transport,
            headers=headers,
            timeout=timeout,
            auth=auth,
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment would make the connect-time check meaningless
        )

    return make


def http_target(
    label: str,
    url: str,
    transport: str,
    headers: dict[str, str] | None,
    *,
    allowed_hosts: list[str] | frozenset[str] | None,
    timeout: float,
    read_timeout: float,
) -> Target:
    """A server at `url`. `allowed_hosts=None` skips the network guard (servers the operator configured)."""
    hosts = None if allowed_hosts is None else frozenset(_normal_host(h) for h in allowed_hosts if h.strip())
    connection: dict[str, Any] = {
        "transport": "sse" if transport == "sse" else "streamable_http",
        "url": url,
        "headers": dict(headers or {}),
        "timeout": timeout,
        "sse_read_timeout": read_timeout,
        "httpx_client_factory": _guarded_client_factory(hosts),
    }
    return Target(label, connection, tuple(header_secrets(headers or {})))


def stdio_target(label: str, command: str, args: list[str], env: dict[str, str] | None, cwd: str | None) -> Target:
    """A local server started (by the `mcp` SDK's stdio client) for each session."""
    connection: dict[str, Any] = {"transport": "stdio", "command": command, "args": list(args), "env": env, "cwd": cwd}
    secrets = sorted((v for v in (env or {}).values() if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)
    return Target(label, connection, tuple(secrets))


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups: the SDK's transports run in task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """A sentence saying what went wrong, for the model or an API error (redact it before use)."""
    exc = _leaf(exc)
    if isinstance(exc, RefusedAddress):
        return str(exc)
    if isinstance(exc, httpx.HTTPStatusError):
        response = exc.response
        text = f"the MCP server answered HTTP {response.status_code} {response.reason_phrase}".rstrip()
        location = response.headers.get("location")
        if response.is_redirect and location:
            text += f" (a redirect to {location}, which is not followed: use that URL)"
        return text
    # The guarded transport speaks httpcore directly: its errors arrive unmapped to httpx's.
    if isinstance(exc, (TimeoutError, httpx.TimeoutException, httpcore.TimeoutException)):
        return "the MCP server did not answer in time"
    if isinstance(exc, (httpx.ConnectError, httpcore.ConnectError, ConnectionError)):
        return f"could not connect to the MCP server ({exc or type(exc).__name__})"
    if isinstance(exc, (httpx.HTTPError, httpcore.NetworkError, httpcore.ProtocolError)):
        return f"the connection to the MCP server failed ({type(exc).__name__}: {exc or 'no details'})"
    if isinstance(exc, McpError) and exc.error.code == SESSION_TERMINATED and exc.error.message == "Session terminated":
        # The SDK's streamable HTTP client reports any 404 this way (the spec's "session expired").
        return "the MCP server answered HTTP 404 Not Found (no MCP endpoint at this URL, or it ended the session)"
    if isinstance(exc, McpError):
        return f"the MCP server returned an error: {exc.error.message}"
    if isinstance(exc, (FileNotFoundError, PermissionError)):
        return f"could not start the MCP server ({exc.strerror or exc})"
    return f"the MCP request failed ({type(exc).__name__}: {exc})" if str(exc) else f"the MCP request failed ({type(exc).__name__})"


@dataclass
class Listing:
    """What a server told us when we connected: its tools (as MCP `Tool` JSON) and who it is."""

    tools: list[dict]
    server_info: dict | None  # {"name", "version"} as the server reported them


async def list_tools(target: Target, timeout: float) -> Listing:
    """Connects, initializes and lists every tool (following pagination); McpUnavailable on failure."""
    listing: Listing | None = None
    try:
        async with asyncio.timeout(timeout):
            async with create_session(target.connection) as session:
                init = await session.initialize()
                found: list[MCPTool] = []
                cursor: str | None = None
                for _ in range(MAX_PAGES):
                    page = await session.list_tools(cursor=cursor)
                    found += page.tools
                    if len(found) > MAX_TOOLS:
                        raise McpUnavailable(f"the MCP server offers more than {MAX_TOOLS} tools")
                    cursor = page.nextCursor
                    if not cursor:
                        break
                listing = Listing(
                    tools=[t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in found],
                    server_info={"name": init.serverInfo.name, "version": init.serverInfo.version}
                    if init.serverInfo
                    else None,
                )
    except McpUnavailable:
        raise
    except TimeoutError:
        raise McpUnavailable(f"the MCP server did not answer within {timeout:g} seconds") from None
    except Exception as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, McpUnavailable):
            raise McpUnavailable(str(leaf)) from None
        kind = AddressRefused if isinstance(leaf, RefusedAddress) else McpUnavailable
        raise kind(target.redact(describe(exc))) from None
    if listing is None:  # the SDK's transports can swallow an error while closing
        raise McpUnavailable("the MCP server closed the connection before listing its tools")
    return listing


def function_name(name: str) -> str:
    """An MCP tool name (up to 128 characters of anything) as an OpenAI function name."""
    cleaned = re.sub(r"_+", "_", re.sub(r"[^a-zA-Z0-9_-]+", "_", name)).strip("_")
    return cleaned[:NAME_LENGTH] or "tool"


def _text(content: Any) -> str:
    """The adapter's content blocks as the text the model reads: text as it is, other blocks named."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif isinstance(block, dict):
            kind = block.get("type", "content")
            mime = block.get("mime_type")
            where = block.get("url")
            parts.append(f"[{kind}{' ' + mime if mime else ''} returned{' at ' + where if where else ''}; not shown]")
    return "\n".join(parts)


class McpTool(BaseTool):
    """One tool of an MCP server, as the model calls it. The call itself is the adapter's tool
    (`convert_mcp_tool_to_langchain_tool`: a session per call, MCP error results as tool errors);
    this wrapper gives it an OpenAI-valid name, turns its content blocks into text, turns
    transport failures into sentences the model reads, and redacts the server's secrets."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    description: str
    args_schema: dict[str, Any]  # type: ignore[assignment]
    server: str
    max_output_chars: int = 100_000
    call: BaseTool = Field(repr=False, exclude=True)
    _target: Target = PrivateAttr()

    def _run(self, *args: Any, **kwargs: Any) -> str:  # pragma: no cover - the graph runs tools asynchronously
        raise NotImplementedError("MCP tools run asynchronously")

    async def _arun(self, *args: Any, **kwargs: Any) -> str:
        try:
            message = await self.call.ainvoke(
                {"type": "tool_call", "id": "mcp_call", "name": self.call.name, "args": kwargs}
            )
        except Exception as exc:  # the model gets every failure as text; a tool never raises into the run
            text = f"Error: {describe(exc)}."
        else:
            text = _text(message.content)
            if getattr(message, "status", "success") == "error":
                text = f"Error: {text}" if text else "Error: the MCP tool failed without saying why."
        if len(text) > self.max_output_chars:
            cut = len(text) - self.max_output_chars
            text = text[: self.max_output_chars] + f"\n[… {cut} more characters not shown]"
        return self._target.redact(text)


def build_tools(
    target: Target,
    definitions: list[dict],
    *,
    allowed_tools: list[str] | None,
    taken_names: set[str],
    max_output_chars: int,
) -> list[McpTool]:
    """The tools of `definitions` (the server's stored listing) that `allowed_tools` lets through,
    named uniquely against `taken_names` (which is updated)."""
    allowed = None if allowed_tools is None else set(allowed_tools)
    tools = []
    for definition in definitions:
        if allowed is not None and definition.get("name") not in allowed:
            continue
        mcp_tool = MCPTool.model_validate(definition)
        call = convert_mcp_tool_to_langchain_tool(None, mcp_tool, connection=target.connection, server_name=target.label)
        name = unique_name(function_name(mcp_tool.name), taken_names, NAME_LENGTH)
        schema = mcp_tool.inputSchema or {"type": "object", "properties": {}}
        tool = McpTool(
            name=name,
            description=(mcp_tool.description or mcp_tool.title or mcp_tool.name)[:1024],
            args_schema=schema,
            server=target.label,
            max_output_chars=max_output_chars,
            call=call,
        )
        tool._target = target
        tools.append(tool)
    return tools
