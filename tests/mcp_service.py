"""A small MCP server for the MCP tests: FastMCP (the `mcp` SDK's server) over streamable HTTP (`/mcp`)
and SSE (`/sse`), served by uvicorn from a thread of the test process, or over stdio as a
subprocess (`python -m tests.mcp_service --stdio`, what an operator's stdio server looks like).

Usage::

    service = start_in_thread()            # or start_in_thread(token=TOKEN): bearer auth required;
                                           # hold_listing=True: a listing waits at
                                           # service.listing_started until service.release_listing()
    service.url                            # http://127.0.0.1:<port>/mcp
    service.calls                          # every tool call: {"tool", "arguments", "headers"}
    service.stop()                         # the server goes away (connections refused from then on)

Tools: `add(a, b)`, `echo_headers(names)` (the request's headers of those names), `fail(reason)`
(raises: an MCP error result), `slow(seconds)` (sleeps; `service.slow_started` / `slow_finished`
count them) and `lookup.city` (a name that is not a valid OpenAI function name).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time

import uvicorn
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.fastmcp import Context, FastMCP

TOKEN = "mcp-bearer-token-0123456789-secret"
HEADER_SECRET = "mcp-header-value-abcdef-secret"


class _Verifier:
    """FastMCP's own bearer-token check (a TokenVerifier), accepting one token."""

    def __init__(self, token: str):
        self.token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        if token != self.token:
            return None
        return AccessToken(token=token, client_id="tests", scopes=[])


class _HeldListing(FastMCP):
    """A server that, when its service holds listings, lists its tools only once the test lets it."""

    service: McpService | None = None

    async def list_tools(self):
        service = self.service
        if service is not None and service.hold_listing:
            service.listing_started.set()
            while not service.listing_released.is_set():
                await asyncio.sleep(0.02)
        return await super().list_tools()


class McpService:
    def __init__(self, token: str | None = None, hold_listing: bool = False) -> None:
        self.token = token
        self.hold_listing = hold_listing
        self.listing_started = threading.Event()
        self.listing_released = threading.Event()
        self.url = ""
        self.calls: list[dict] = []
        self.slow_started = 0
        self.slow_finished = 0
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def record(self, tool: str, arguments: dict, ctx: Context | None) -> None:
        request = ctx.request_context.request if ctx is not None else None
        headers = {k.lower(): v for k, v in request.headers.items()} if request is not None else {}
        with self._lock:
            self.calls.append({"tool": tool, "arguments": arguments, "headers": headers})

    def calls_of(self, tool: str) -> list[dict]:
        with self._lock:
            return [c for c in self.calls if c["tool"] == tool]

    def release_listing(self) -> None:
        self.listing_released.set()

    def stop(self) -> None:
        self.listing_released.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)


def build(service: McpService | None = None, *, port: int = 0) -> FastMCP:
    token = service.token if service is not None else None
    auth = {}
    if token:
        auth = dict(
            token_verifier=_Verifier(token),
            auth=AuthSettings(
                issuer_url=f"http://127.0.0.1:{port}",
                resource_server_url=f"http://127.0.0.1:{port}/mcp",
                validate_token_resource=False,
            ),
        )
    mcp = _HeldListing("test-tools", instructions="Tools for tests.", port=port, log_level="WARNING", **auth)
    mcp.service = service

    def record(name: str, arguments: dict, ctx: Context | None) -> None:
        if service is not None:
            service.record(name, arguments, ctx)

    @mcp.tool()
    def add(a: int, b: int, ctx: Context) -> int:
        """Add two integers."""
        record("add", {"a": a, "b": b}, ctx)
        return a + b

    @mcp.tool()
    def echo_headers(names: list[str], ctx: Context) -> dict[str, str]:
        """The HTTP request headers with these names, as the server received them."""
        record("echo_headers", {"names": names}, ctx)
        request = ctx.request_context.request
        headers = request.headers if request is not None else {}
        return {name: headers.get(name, "") for name in names}

    @mcp.tool()
    def fail(reason: str, ctx: Context) -> str:
        """Always fails, with the reason given."""
        record("fail", {"reason": reason}, ctx)
        raise ValueError(f"it failed: {reason}")

    @mcp.tool()
    async def slow(seconds: float, ctx: Context) -> str:
        """Waits that many seconds, then answers."""
        record("slow", {"seconds": seconds}, ctx)
        if service is not None:
            service.slow_started += 1
        await asyncio.sleep(seconds)
        if service is not None:
            service.slow_finished += 1
        return f"waited {seconds:g} s"

    @mcp.tool(name="lookup.city")
    def lookup_city(name: str, ctx: Context) -> str:
        """Facts about a city."""
        record("lookup.city", {"name": name}, ctx)
        return f"{name}: population 1,000,000"

    return mcp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_in_thread(token: str | None = None, hold_listing: bool = False) -> McpService:
    """Serve streamable HTTP at /mcp and SSE at /sse from a daemon thread, until `stop()`."""
    service = McpService(token, hold_listing)
    port = _free_port()
    mcp = build(service, port=port)
    app = mcp.streamable_http_app()  # its lifespan runs the session manager
    app.router.routes.extend(mcp.sse_app().routes)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    service._server = server
    service._thread = threading.Thread(target=server.run, name="mcp-service", daemon=True)
    service._thread.start()
    service.url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not service._thread.is_alive():
            raise RuntimeError("the MCP test server did not start")
        time.sleep(0.02)
    return service


if __name__ == "__main__":
    if "--stdio" in sys.argv:
        build().run("stdio")
    else:  # pragma: no cover - manual use
        svc = start_in_thread()
        print(svc.url)
        threading.Event().wait()
