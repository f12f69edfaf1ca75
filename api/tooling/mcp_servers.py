"""MCP servers at rest: the servers a tenant registers (URL, transport, headers Fernet-encrypted under
ASSISTGRAPH_SECRET_KEY and never part of any response, the tool listing from registration or the
last refresh), the servers the operator configures for every tenant (ASSISTGRAPH_MCP_SERVERS, ids
`mcp_shared_<name>`), and the tools a run builds from them (tools/mcp_servers does the MCP).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from langchain_core.tools import BaseTool
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from api.contract.errors import APIError, InvalidRequest, not_found
from api.contract.ids import new_id, now
from api.security import crypto
from api.settings import Settings, get_settings
from api.storage import store
from api.tooling.sources import Edits, ToolSource
from tools import mcp_servers as mcp
from tools.mcp_servers.config import MAX_HEADERS, RemoteServer, StdioServer

SHARED_PREFIX = "mcp_shared_"

INSERT_SERVER = """
    INSERT INTO mcp_servers (id, tenant_id, url, transport, headers, tools, obj)
    VALUES (%(id)s, %(tenant)s, %(url)s, %(transport)s, %(headers)s, %(tools)s, %(obj)s)
"""
SELECT_SERVER = "SELECT url, transport, headers, tools, obj FROM mcp_servers WHERE id = %s AND tenant_id = %s"
# Writes of one server are serialised: two at once would each write back the object they read.
SELECT_SERVER_FOR_UPDATE = SELECT_SERVER + " FOR UPDATE"
SELECT_SERVER_IDS = "SELECT id FROM mcp_servers WHERE id = ANY(%s) AND tenant_id = %s"
SELECT_RUN_SERVERS = "SELECT id, url, transport, headers, tools, obj FROM mcp_servers WHERE id = ANY(%s) AND tenant_id = %s"
UPDATE_SERVER = """
    UPDATE mcp_servers SET url = %(url)s, transport = %(transport)s, headers = %(headers)s, tools = %(tools)s, obj = %(obj)s
    WHERE id = %(id)s AND tenant_id = %(tenant)s
"""
SELECT_SHARED_TOOLS = "SELECT id, fingerprint, tools, refreshed_at FROM mcp_shared_tools WHERE id = ANY(%s)"
UPSERT_SHARED_TOOLS = """
    INSERT INTO mcp_shared_tools (id, fingerprint, tools, refreshed_at) VALUES (%s, %s, %s, %s)
    ON CONFLICT (id) DO UPDATE SET
        fingerprint = EXCLUDED.fingerprint, tools = EXCLUDED.tools, refreshed_at = EXCLUDED.refreshed_at
"""


class FailedDependency(APIError):
    """The MCP server could not be reached, or would not list its tools (OpenAI answers 424 there too)."""

    status_code = 424
    error_type = "external_connector_error"


class Conflict(APIError):
    status_code = 409


class SharedServerUnavailable(Exception):
    """A shared server a run enables could not list its tools (the run cannot offer them)."""


# --- validation and secrets --------------------------------------------------------------------


def check_url(url: Any) -> str:
    try:
        return mcp.check_url(url)
    except ValueError as exc:
        raise InvalidRequest(f"Invalid value for 'url': {exc}.", param="url") from None


def validate_headers(value: Any, param: str = "headers") -> dict[str, str] | None:
    """`value` as headers to send, or a 400 naming the offending header. Values never appear in errors."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"Invalid value for '{param}': expected an object of header names and values.", param=param)
    if len(value) > MAX_HEADERS:
        raise InvalidRequest(f"Invalid value for '{param}': at most {MAX_HEADERS} headers.", param=param)
    seen: set[str] = set()
    for name, header in value.items():
        problem = mcp.header_problem(name, header)
        if problem is None and name.lower() in seen:
            problem = "is given twice (header names are case-insensitive)"
        if problem:
            raise InvalidRequest(f"Invalid value for '{param}.{name}': {problem}.", param=f"{param}.{name}")
        seen.add(name.lower())
    return dict(value)


def seal_headers(settings: Settings, headers: dict[str, str] | None, param: str = "headers") -> bytes | None:
    """Headers encrypted for storage; a 400 when no secret key is configured."""
    if not headers:
        return None
    return crypto.seal(settings, headers, param=param, before="an MCP server's headers can be stored")


def unseal_headers(settings: Settings, sealed: bytes | None) -> dict[str, str]:
    return crypto.unseal(settings, sealed, default={})


SOURCE = ToolSource(
    noun="MCP server",
    select_ids=SELECT_SERVER_IDS,
    run_param="mcp_headers",
    run_secrets="MCP headers",
    check_run_secret=lambda value, param: validate_headers(value, param=param) or {},
)


def _merge_headers(stored: dict[str, str], given: dict[str, str] | None) -> dict[str, str]:
    """`given` over `stored`, names compared case-insensitively (as HTTP compares them)."""
    given = given or {}
    replaced = {name.lower() for name in given}
    return {**{k: v for k, v in stored.items() if k.lower() not in replaced}, **given}


def check_allowed_tools(allowed: list[str] | None, definitions: list[dict]) -> None:
    """A 400 on the first name of `allowed` the server does not list."""
    if allowed is None:
        return
    names = [d.get("name") for d in definitions]
    for i, name in enumerate(allowed):
        if name not in names:
            offer = f"Its tools: {', '.join(names)}." if names else "It lists no tools."
            raise InvalidRequest(
                f"Invalid value for 'allowed_tools[{i}]': the MCP server has no tool named '{name}'. {offer}",
                param=f"allowed_tools[{i}]",
            )


# --- talking to a server -----------------------------------------------------------------------


def _read_timeout(settings: Settings) -> float:
    # A call's answer may take as long as the run lets a tool take (the graph enforces that limit).
    return max(settings.tool_timeout, settings.mcp_timeout)


async def _http_target(settings: Settings, label: str, url: str, transport: str, headers: dict[str, str] | None):
    client = await mcp.load_client()
    return client.http_target(
        label,
        url,
        transport,
        headers,
        allowed_hosts=settings.mcp_allowed_hosts,
        timeout=settings.mcp_timeout,
        read_timeout=_read_timeout(settings),
    )


async def discover(settings: Settings, url: str, transport: str, headers: dict[str, str] | None):
    """The server's listing (its tools and name), or an error the API's client can act on: 400 for
    an address the guard refuses, 424 for a server that cannot be reached or will not list."""
    client = await mcp.load_client()
    target = await _http_target(settings, url, url, transport, headers)
    try:
        return await client.list_tools(target, settings.mcp_timeout)
    except client.AddressRefused as exc:
        raise InvalidRequest(f"Invalid value for 'url': {exc}.", param="url") from None
    except client.McpUnavailable as exc:
        raise FailedDependency(f"Could not list the tools of the MCP server at {url}: {exc}.", param="url") from None


# --- registered servers ------------------------------------------------------------------------


def _default_name(name: str | None, server_info: dict | None, url: str) -> str:
    return name or str((server_info or {}).get("name") or "")[:256] or urlsplit(url).hostname or "mcp"


def _server_info(listing: Any) -> dict | None:
    info = listing.server_info
    return {"name": str(info["name"])[:256], "version": str(info["version"])[:64]} if info else None


def new_server_object(
    *,
    url: str,
    transport: str,
    name: str | None,
    description: str | None,
    headers: dict[str, str] | None,
    allowed_tools: list[str] | None,
    metadata: dict | None,
    listing: Any,
) -> dict:
    return {
        "id": new_id("mcp_server"),
        "object": "mcp_server",
        "created_at": now(),
        "name": _default_name(name, listing.server_info, url),
        "description": description,
        "url": url,
        "transport": transport,
        "server_info": _server_info(listing),
        "header_names": sorted(headers or {}),
        "allowed_tools": allowed_tools,
        "tools": [mcp.public_tool(t) for t in listing.tools],
        "tools_refreshed_at": now(),
        "shared": False,
        "metadata": metadata or {},
    }


async def insert_server(
    conn: AsyncConnection, obj: dict, tenant: str, definitions: list[dict], sealed: bytes | None
) -> None:
    await conn.execute(
        INSERT_SERVER,
        {
            "id": obj["id"],
            "tenant": tenant,
            "url": obj["url"],
            "transport": obj["transport"],
            "headers": sealed,
            "tools": Jsonb(definitions),
            "obj": Jsonb(obj),
        },
    )


async def _read(pool: AsyncConnectionPool, server_id: str, tenant: str) -> dict:
    async with pool.connection() as conn:
        row = await (await conn.execute(SELECT_SERVER, (server_id, tenant))).fetchone()
    if row is None:
        raise not_found("MCP server", server_id)
    return row


async def _write(
    pool: AsyncConnectionPool,
    server_id: str,
    tenant: str,
    read: dict,
    change: Callable[[dict, dict], dict],
    *,
    relisted: bool,
) -> dict:
    """Applies `change(obj, row)` (which returns the columns to write) to the locked row. Tools listed
    again outside the lock (that takes network time) are only stored if the connection they were
    listed with is still the stored one."""
    async with pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(SELECT_SERVER_FOR_UPDATE, (server_id, tenant))).fetchone()
        if row is None:
            raise not_found("MCP server", server_id)
        if relisted and (row["url"], row["transport"], row["headers"]) != (read["url"], read["transport"], read["headers"]):
            raise Conflict(
                f"The MCP server '{server_id}' was modified by another request while its tools were being listed; try again."
            )
        obj = dict(row["obj"])
        columns = change(obj, row)
        await conn.execute(UPDATE_SERVER, {**columns, "obj": Jsonb(obj), "id": server_id, "tenant": tenant})
    return obj


async def modify_server(
    pool: AsyncConnectionPool, settings: Settings, server_id: str, tenant: str, edits: Edits, *,
    url: str | None = None, transport: str | None = None, headers: dict[str, str] | None = None,
    allowed_tools: list[str] | None = None,
) -> dict:
    """The server with the fields `edits` gives changed (validated by the caller). A new URL,
    transport or headers lists the tools again over the new connection (refused, nothing changes,
    if that fails)."""
    given = edits.given
    read = await _read(pool, server_id, tenant)
    reconnect = bool(given & {"url", "transport", "headers"})
    new_url = url if "url" in given else read["url"]
    new_transport = transport if "transport" in given else read["transport"]
    if "headers" in given:
        plain, sealed = headers, seal_headers(settings, headers)
    else:
        plain, sealed = unseal_headers(settings, read["headers"]), read["headers"]
    listing = await discover(settings, new_url, new_transport, plain) if reconnect else None
    if "allowed_tools" in given:
        check_allowed_tools(allowed_tools, listing.tools if listing is not None else read["tools"])

    def change(obj: dict, row: dict) -> dict:
        columns = {"url": row["url"], "transport": row["transport"], "headers": row["headers"], "tools": Jsonb(row["tools"])}
        if listing is not None:
            obj.update(
                url=new_url,
                transport=new_transport,
                server_info=_server_info(listing),
                tools=[mcp.public_tool(t) for t in listing.tools],
                tools_refreshed_at=now(),
            )
            columns.update(url=new_url, transport=new_transport, headers=sealed, tools=Jsonb(listing.tools))
        if "headers" in given:
            obj["header_names"] = sorted(plain or {})
        if "allowed_tools" in given:
            obj["allowed_tools"] = allowed_tools
        edits.apply(obj, name=lambda name: _default_name(name, obj["server_info"], obj["url"]))
        return columns

    return await _write(pool, server_id, tenant, read, change, relisted=reconnect)


async def refresh_server(pool: AsyncConnectionPool, settings: Settings, server_id: str, tenant: str) -> dict:
    """Lists the server's tools again and stores them (shared servers too)."""
    if is_shared(server_id):
        if server_id not in shared_servers(settings):
            raise not_found("MCP server", server_id)
        listing = await _shared_listing(pool, settings, server_id, refresh=True)
        return _shared_object(settings, server_id, listing)
    read = await _read(pool, server_id, tenant)
    listing = await discover(settings, read["url"], read["transport"], unseal_headers(settings, read["headers"]))

    def change(obj: dict, row: dict) -> dict:
        obj.update(server_info=_server_info(listing), tools=[mcp.public_tool(t) for t in listing.tools], tools_refreshed_at=now())
        return {"url": row["url"], "transport": row["transport"], "headers": row["headers"], "tools": Jsonb(listing.tools)}

    return await _write(pool, server_id, tenant, read, change, relisted=True)


async def get_server(pool: AsyncConnectionPool, settings: Settings, server_id: str, tenant: str) -> dict:
    if is_shared(server_id):
        if server_id not in shared_servers(settings):
            raise not_found("MCP server", server_id)
        stored = await _stored_shared(pool, settings, [server_id])
        return _shared_object(settings, server_id, stored.get(server_id))
    async with pool.connection() as conn:
        obj = await store.get(conn, "mcp_servers", server_id, tenant)
    if obj is None:
        raise not_found("MCP server", server_id)
    return obj


async def delete_server(pool: AsyncConnectionPool, settings: Settings, server_id: str, tenant: str) -> None:
    refuse_shared_change(settings, server_id)
    async with pool.connection() as conn:
        if not await store.delete(conn, "mcp_servers", server_id, tenant):
            raise not_found("MCP server", server_id)


def refuse_shared_change(settings: Settings, server_id: str) -> None:
    if server_id in shared_servers(settings):
        raise InvalidRequest(
            f"The MCP server '{server_id}' is configured on the server (ASSISTGRAPH_MCP_SERVERS) for every tenant; "
            "it cannot be modified or deleted through the API."
        )


async def list_servers(
    pool: AsyncConnectionPool,
    settings: Settings,
    tenant: str,
    *,
    limit: int,
    order: str,
    after: str | None,
    before: str | None,
) -> tuple[list[dict], bool]:
    """One page of the tenant's servers and the shared ones. The shared servers come first in
    ascending order (before anything a tenant registered), so in the default descending order they
    close the list; `after`/`before` may name either kind."""
    shared_ids = list(shared_servers(settings))
    if before is not None and after is None:
        # Reading backwards from `before` is reading forwards in the opposite order, then flipping.
        items, more = await _walk(pool, settings, tenant, shared_ids, "asc" if order == "desc" else "desc", before, limit)
        return items[::-1], more
    items, more = await _walk(pool, settings, tenant, shared_ids, order, after, limit)
    if before is not None:
        ids = [item["id"] for item in items]
        if before in ids:
            return items[: ids.index(before)], False
    return items, more


async def _walk(
    pool: AsyncConnectionPool,
    settings: Settings,
    tenant: str,
    shared_ids: list[str],
    order: str,
    after: str | None,
    limit: int,
) -> tuple[list[dict], bool]:
    """Up to `limit` servers after `after` in `order` over [shared..., registered...] (ascending)."""
    if order == "asc":
        if after in shared_ids:
            head, cursor = shared_ids[shared_ids.index(after) + 1 :], None
        elif after is None:
            head, cursor = shared_ids, None
        else:
            head, cursor = [], after
        if len(head) > limit:
            return await _shared_objects(pool, settings, head[:limit]), True
        async with pool.connection() as conn:
            rows, more = await store.list_page(
                conn, "mcp_servers", tenant=tenant, filters={}, limit=limit - len(head), order="asc", after=cursor, before=None
            )
        return [*await _shared_objects(pool, settings, head), *rows], more
    if after in shared_ids:
        tail = shared_ids[: shared_ids.index(after)][::-1]
        return await _shared_objects(pool, settings, tail[:limit]), len(tail) > limit
    async with pool.connection() as conn:
        rows, more = await store.list_page(
            conn, "mcp_servers", tenant=tenant, filters={}, limit=limit, order="desc", after=after, before=None
        )
    if more:
        return rows, True
    tail = shared_ids[::-1][: limit - len(rows) + 1]
    items = [*rows, *await _shared_objects(pool, settings, tail)]
    return items[:limit], len(items) > limit


# --- servers the operator configured -----------------------------------------------------------


def shared_servers(settings: Settings) -> dict[str, tuple[str, RemoteServer | StdioServer]]:
    """The operator's servers by id (`mcp_shared_<name>`): (name, configuration)."""
    return {SHARED_PREFIX + name: (name, config) for name, config in settings.mcp_servers.items()}


def is_shared(server_id: str) -> bool:
    return server_id.startswith(SHARED_PREFIX)


def _fingerprint(config: RemoteServer | StdioServer) -> str:
    """Identifies the configuration a listing was made with (secret values left out): a changed
    configuration is listed again on its next use."""
    if isinstance(config, RemoteServer):
        basis: dict[str, Any] = {"url": config.url, "transport": config.transport, "headers": sorted(config.headers)}
    else:
        basis = {"command": config.command, "args": config.args, "cwd": config.cwd, "env": sorted(config.env or {})}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()


def _shared_object(settings: Settings, server_id: str, listing: tuple[list[dict], int] | None) -> dict:
    """A shared server as the API shows it: no secrets, no command line. `tools` is null until it
    was first listed (by a run that uses it, or a refresh)."""
    name, config = shared_servers(settings)[server_id]
    remote = isinstance(config, RemoteServer)
    return {
        "id": server_id,
        "object": "mcp_server",
        "created_at": 0,
        "name": name,
        "description": config.description,
        "url": config.url if remote else None,
        "transport": config.transport if remote else "stdio",
        "server_info": None,
        "header_names": sorted(config.headers) if remote else [],
        "allowed_tools": config.allowed_tools,
        "tools": [mcp.public_tool(t) for t in listing[0]] if listing else None,
        "tools_refreshed_at": listing[1] if listing else None,
        "shared": True,
        "metadata": {},
    }


async def _stored_shared(
    pool: AsyncConnectionPool, settings: Settings, ids: list[str]
) -> dict[str, tuple[list[dict], int]]:
    """Stored listings of these shared servers made with their current configuration."""
    if not ids:
        return {}
    servers = shared_servers(settings)
    async with pool.connection() as conn:
        rows = await (await conn.execute(SELECT_SHARED_TOOLS, (ids,))).fetchall()
    return {
        row["id"]: (row["tools"], row["refreshed_at"])
        for row in rows
        if row["fingerprint"] == _fingerprint(servers[row["id"]][1])
    }


async def _shared_objects(pool: AsyncConnectionPool, settings: Settings, ids: list[str]) -> list[dict]:
    stored = await _stored_shared(pool, settings, ids)
    return [_shared_object(settings, server_id, stored.get(server_id)) for server_id in ids]


async def _shared_target(settings: Settings, server_id: str, run_headers: dict[str, str] | None = None):
    client = await mcp.load_client()
    _, config = shared_servers(settings)[server_id]
    if isinstance(config, StdioServer):
        return client.stdio_target(server_id, config.command, config.args, config.plain_env(), config.cwd)
    # The operator chose this URL: it is reached without the network guard.
    return client.http_target(
        server_id,
        config.url,
        config.transport,
        _merge_headers(config.plain_headers(), run_headers),
        allowed_hosts=None,
        timeout=settings.mcp_timeout,
        read_timeout=_read_timeout(settings),
    )


async def _shared_listing(
    pool: AsyncConnectionPool, settings: Settings, server_id: str, *, refresh: bool = False
) -> tuple[list[dict], int]:
    """A shared server's listing: the stored one if it was made with the current configuration,
    else (or with `refresh`) listed now and stored for every process. 424 if it cannot be listed."""
    if not refresh:
        stored = await _stored_shared(pool, settings, [server_id])
        if server_id in stored:
            return stored[server_id]
    client = await mcp.load_client()
    target = await _shared_target(settings, server_id)
    try:
        listing = await client.list_tools(target, settings.mcp_timeout)
    except client.McpUnavailable as exc:
        raise FailedDependency(f"Could not list the tools of the MCP server '{server_id}': {exc}.") from None
    refreshed_at = now()
    _, config = shared_servers(settings)[server_id]
    async with pool.connection() as conn:
        await conn.execute(UPSERT_SHARED_TOOLS, (server_id, _fingerprint(config), Jsonb(listing.tools), refreshed_at))
    return listing.tools, refreshed_at


# --- servers in runs ---------------------------------------------------------------------------


async def missing_servers(
    conn: AsyncConnection, tenant: str, ids: list[str], settings: Settings | None = None
) -> list[str]:
    """The ids (in the order given) that name neither a server of the tenant nor a shared one."""
    return await SOURCE.missing(conn, tenant, ids, shared=shared_servers(settings or get_settings()))


async def seal_run_headers(conn: AsyncConnection, settings: Settings, tenant: str, given: dict[str, Any]) -> str:
    """Headers a client supplies with a run, by server id, checked and encrypted for the run's config."""
    shared = shared_servers(settings)

    def refuse(server_id: str) -> None:
        if server_id in shared and isinstance(shared[server_id][1], StdioServer):
            raise InvalidRequest(
                f"The MCP server '{server_id}' runs on the server (stdio) and takes no headers.",
                param=f"mcp_headers.{server_id}",
            )

    return await SOURCE.seal_run_secrets(conn, settings, tenant, given, shared=shared, refuse=refuse)


async def tools_for_run(
    pool: AsyncConnectionPool, settings: Settings, tenant: str, server_ids: list[str], config: dict, *,
    taken_names: set[str] | frozenset[str] = frozenset(),
) -> list[BaseTool]:
    """The tools of these servers, in order, from their stored listings (a shared server never listed
    with its current configuration is listed now). Headers given with the run are merged over the
    stored ones. Servers deleted since they were enabled are skipped; a tool whose name is taken (by
    an earlier server or in `taken_names`) gets a numeric suffix."""
    ids = list(dict.fromkeys(server_ids))
    if not ids:
        return []
    client = await mcp.load_client()
    given = SOURCE.run_secrets_of(settings, config)
    registered = [i for i in ids if not is_shared(i)]
    rows = {}
    if registered:
        async with pool.connection() as conn:
            rows = {r["id"]: r for r in await (await conn.execute(SELECT_RUN_SERVERS, (registered, tenant))).fetchall()}
    shared = shared_servers(settings)
    names = set(taken_names)
    tools: list[BaseTool] = []
    for server_id in ids:
        if server_id in shared:
            try:
                definitions, _ = await _shared_listing(pool, settings, server_id)
            except FailedDependency as exc:
                raise SharedServerUnavailable(exc.message) from None
            target = await _shared_target(settings, server_id, given.get(server_id))
            allowed = shared[server_id][1].allowed_tools
        elif (row := rows.get(server_id)) is not None:
            headers = _merge_headers(unseal_headers(settings, row["headers"]), given.get(server_id))
            target = await _http_target(settings, server_id, row["url"], row["transport"], headers)
            definitions, allowed = row["tools"], row["obj"].get("allowed_tools")
        else:
            SOURCE.gone(server_id)
            continue
        tools += client.build_tools(
            target, definitions, allowed_tools=allowed, taken_names=names, max_output_chars=settings.mcp_max_output_chars
        )
    return tools
