"""MCP servers as tools: the client side (tools/mcp_servers, driven directly against the FastMCP server
of tests/mcp_service.py), and `/mcp_servers` and runs that call MCP tools through the official SDK in
strict mode, against real server processes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import sys

import httpx
import openai
import pytest

from api.contract.errors import InvalidRequest
from api.settings import Settings
from api.tooling import mcp_servers
from tests.action_service import REFUSED_URLS
from tests.conftest import (
    ROOT,
    SECRET_KEY,
    _extra_server,
    _own_database,
    enabling_assistant,
    offered_tools,
    stop_process,
    wait_for,
)
from tests.mcp_service import HEADER_SECRET, TOKEN, start_in_thread
from tests.test_playground import expect, playwright, tab  # noqa: F401 - the browser fixtures
from tests.test_tenancy import as_key, new_key
from tools.mcp_servers import client as mcp_client
from tools.mcp_servers.config import check_url

SECRETS = (TOKEN, HEADER_SECRET)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def service():
    svc = start_in_thread()
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def auth_service():
    svc = start_in_thread(token=TOKEN)
    yield svc
    svc.stop()


def target(url: str, *, headers=None, allowed=("127.0.0.1",), transport="streamable_http"):
    return mcp_client.http_target(
        url, url, transport, headers, allowed_hosts=list(allowed), timeout=5, read_timeout=10
    )


async def tools_of(tgt, *, allowed_tools=None, taken=None) -> dict:
    listing = await mcp_client.list_tools(tgt, 5)
    tools = mcp_client.build_tools(
        tgt, listing.tools, allowed_tools=allowed_tools, taken_names=taken or set(), max_output_chars=2000
    )
    return {tool.name: tool for tool in tools}


# --- the client ----------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("transport, path", [("streamable_http", "/mcp"), ("sse", "/sse")])
async def test_tools_are_listed_and_called_over_both_transports(service, transport, path):
    tgt = target(service.url.replace("/mcp", path), transport=transport)
    listing = await mcp_client.list_tools(tgt, 5)
    assert [t["name"] for t in listing.tools] == ["add", "echo_headers", "fail", "slow", "lookup.city"]
    assert listing.server_info["name"] == "test-tools"
    tools = await tools_of(tgt)
    # MCP names that are not OpenAI function names are made into ones; the call uses the MCP name.
    assert sorted(tools) == ["add", "echo_headers", "fail", "lookup_city", "slow"]
    add = tools["add"]
    assert add.description == "Add two integers."
    assert add.args_schema["required"] == ["a", "b"] and add.args_schema["properties"]["a"]["type"] == "integer"
    assert await add.ainvoke({"a": 2, "b": 40}) == "42"
    assert await tools["lookup_city"].ainvoke({"name": "Oslo"}) == "Oslo: population 1,000,000"
    assert service.calls_of("lookup.city")[-1]["arguments"] == {"name": "Oslo"}


@pytest.mark.asyncio
async def test_failures_are_text_the_model_reads(service):
    tools = await tools_of(target(service.url))
    assert await tools["fail"].ainvoke({"reason": "boom"}) == "Error: Error executing tool fail: it failed: boom"
    # Arguments the server rejects come back the same way.
    out = await tools["add"].ainvoke({"a": "not a number", "b": 1})
    assert out.startswith("Error: ") and "validation error" in out


@pytest.mark.asyncio
async def test_names_taken_elsewhere_get_suffixes_and_allowed_tools_filter(service):
    tools = await tools_of(target(service.url), allowed_tools=["add", "lookup.city"], taken={"add"})
    assert sorted(tools) == ["add_2", "lookup_city"]
    assert await tools["add_2"].ainvoke({"a": 1, "b": 1}) == "2"


@pytest.mark.asyncio
async def test_auth_headers_are_sent_and_echoed_secrets_redacted(auth_service):
    with pytest.raises(mcp_client.McpUnavailable) as exc:
        await mcp_client.list_tools(target(auth_service.url), 5)
    assert str(exc.value) == "the MCP server answered HTTP 401 Unauthorized"
    tgt = target(auth_service.url, headers={**AUTH, "X-Extra": HEADER_SECRET})
    tools = await tools_of(tgt)
    out = await tools["echo_headers"].ainvoke({"names": ["authorization", "x-extra"]})
    assert json.loads(out) == {"authorization": "[REDACTED]", "x-extra": "[REDACTED]"}
    seen = auth_service.calls_of("echo_headers")[-1]["headers"]
    assert seen["authorization"] == f"Bearer {TOKEN}" and seen["x-extra"] == HEADER_SECRET
    for secret in SECRETS:
        for text in (repr(tools["echo_headers"]), str(tools["echo_headers"]), repr(tgt)):
            assert secret not in text
        assert secret not in tools["echo_headers"].model_dump_json()


@pytest.mark.asyncio
@pytest.mark.parametrize("url, allowed, shown", [(url + "/mcp", allowed, shown) for url, allowed, shown in REFUSED_URLS])
async def test_private_addresses_are_refused(service, url, allowed, shown):
    port = service.url.split(":")[2].split("/")[0]
    before = len(service.calls)
    with pytest.raises(mcp_client.AddressRefused) as exc:
        await mcp_client.list_tools(target(url.format(port=port), allowed=allowed), 5)
    assert str(exc.value).startswith(f"refused to connect to '{shown}'")
    assert "private or otherwise non-public address" in str(exc.value)
    # Tools listed earlier are refused the same way when they are called.
    listing = await mcp_client.list_tools(target(service.url), 5)
    tgt = target(url.format(port=port), allowed=allowed)
    add = mcp_client.build_tools(tgt, listing.tools, allowed_tools=["add"], taken_names=set(), max_output_chars=2000)[0]
    out = await add.ainvoke({"a": 1, "b": 2})
    assert out.startswith(f"Error: refused to connect to '{shown}'")
    assert len(service.calls) == before


@pytest.mark.asyncio
async def test_the_guard_connects_to_the_address_it_checked(service, monkeypatch):
    """A name only our resolver knows reaches the service when allow-listed; a name with any private
    address among its answers is refused."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    port = int(service.url.split(":")[2].split("/")[0])
    answers = {"svc.test": ["127.0.0.1"], "mixed.test": ["93.184.215.14", "10.0.0.1"]}

    async def fake_getaddrinfo(host, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    # FastMCP's DNS-rebinding protection only accepts its own host names: the Host header is sent as
    # written, so the listing fails there (421) after the guard let the connection through.
    with pytest.raises(mcp_client.McpUnavailable) as exc:
        await mcp_client.list_tools(target(f"http://svc.test:{port}/mcp", allowed=("svc.test",)), 5)
    assert "HTTP 421" in str(exc.value)
    with pytest.raises(mcp_client.AddressRefused) as refused:
        await mcp_client.list_tools(target(f"http://mixed.test:{port}/mcp"), 5)
    assert "10.0.0.1" in str(refused.value)


@pytest.mark.asyncio
async def test_slow_calls_are_cancellable_and_a_server_that_goes_away_is_an_error():
    svc = start_in_thread()
    try:
        tools = await tools_of(target(svc.url))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(tools["slow"].ainvoke({"seconds": 20}), 0.5)
        assert svc.slow_started == 1 and svc.slow_finished == 0
        assert await tools["add"].ainvoke({"a": 1, "b": 1}) == "2"
    finally:
        svc.stop()
    out = await tools["add"].ainvoke({"a": 1, "b": 1})
    assert out.startswith("Error: could not connect to the MCP server"), out
    with pytest.raises(mcp_client.McpUnavailable) as exc:
        await mcp_client.list_tools(target(svc.url), 5)
    assert str(exc.value).startswith("could not connect to the MCP server")


@pytest.mark.asyncio
async def test_long_results_are_cut_with_a_note(service):
    tgt = target(service.url)
    listing = await mcp_client.list_tools(tgt, 5)
    (lookup,) = mcp_client.build_tools(
        tgt, listing.tools, allowed_tools=["lookup.city"], taken_names=set(), max_output_chars=1000
    )
    out = await lookup.ainvoke({"name": "x" * 1500})
    assert out == "x" * 1000 + "\n[… 522 more characters not shown]"


def test_storing_headers_needs_a_secret_key():
    with pytest.raises(InvalidRequest) as exc:
        mcp_servers.seal_headers(Settings(secret_key=None), {"X-Key": HEADER_SECRET})
    assert exc.value.param == "headers" and "ASSISTGRAPH_SECRET_KEY must be set" in exc.value.message
    settings = Settings(secret_key=SECRET_KEY)
    sealed = mcp_servers.seal_headers(settings, {"X-Key": HEADER_SECRET})
    assert HEADER_SECRET.encode() not in sealed
    assert mcp_servers.unseal_headers(settings, sealed) == {"X-Key": HEADER_SECRET}
    assert mcp_servers.seal_headers(Settings(secret_key=None), None) is None


def test_shared_servers_are_validated_without_echoing_secrets(monkeypatch):
    monkeypatch.setenv(
        "ASSISTGRAPH_MCP_SERVERS",
        json.dumps({"docs": {"url": "https://docs.example/mcp", "headers": {"Host": HEADER_SECRET}}}),
    )
    with pytest.raises(ValueError) as exc:
        Settings()
    assert "headers.Host" in str(exc.value) and HEADER_SECRET not in str(exc.value)
    monkeypatch.setenv(
        "ASSISTGRAPH_MCP_SERVERS",
        json.dumps({"docs": {"url": "https://docs.example/mcp"}, "files": {"command": "npx", "args": ["-y", "x"]}}),
    )
    servers = Settings().mcp_servers
    assert servers["docs"].transport == "streamable_http" and servers["files"].args == ["-y", "x"]
    monkeypatch.setenv("ASSISTGRAPH_MCP_SERVERS", json.dumps({"bad name": {"command": "x"}}))
    with pytest.raises(ValueError):
        Settings()


def test_urls_are_checked():
    assert check_url(" https://mcp.example.com/mcp ") == "https://mcp.example.com/mcp"
    for bad, message in (
        ("ftp://x.example/mcp", "absolute http(s) URL"),
        ("/mcp", "absolute http(s) URL"),
        ("https://user:pw@x.example/mcp", "must not contain credentials"),
        ("https://x.example/mcp#frag", "fragment"),
        ("https://x.example:99999/mcp", "not a valid URL"),
    ):
        with pytest.raises(ValueError) as exc:
            check_url(bad)
        assert message in str(exc.value)


# --- the API -------------------------------------------------------------------------------------


def create(client: openai.OpenAI, **body) -> dict:
    return client.post("/mcp_servers", cast_to=object, body=body)


def modify(client: openai.OpenAI, server_id: str, **body) -> dict:
    return client.post(f"/mcp_servers/{server_id}", cast_to=object, body=body)


def refresh(client: openai.OpenAI, server_id: str) -> dict:
    return client.post(f"/mcp_servers/{server_id}/refresh", cast_to=object)


def raw_text(client: openai.OpenAI, method: str, path: str, **kw) -> str:
    return getattr(client, method)(path, cast_to=httpx.Response, **kw).text


def names(server: dict) -> list[str]:
    return [t["name"] for t in server["tools"]]


TOOL_NAMES = ["add", "echo_headers", "fail", "slow", "lookup.city"]


def test_register_get_list_modify_refresh_and_delete(client, server, service, auth_service):
    created = create(client, url=service.url, metadata={"team": "ops"})
    assert created["id"].startswith("mcp_") and created["object"] == "mcp_server"
    assert isinstance(created["created_at"], int) and isinstance(created["tools_refreshed_at"], int)
    assert created["name"] == "test-tools" and created["description"] is None  # the server's own name
    assert created["url"] == service.url and created["transport"] == "streamable_http"
    assert created["header_names"] == [] and created["allowed_tools"] is None and created["shared"] is False
    assert created["server_info"]["name"] == "test-tools" and isinstance(created["server_info"]["version"], str)
    assert names(created) == TOOL_NAMES and created["metadata"] == {"team": "ops"}
    add = created["tools"][0]
    assert add["description"] == "Add two integers." and add["input_schema"]["required"] == ["a", "b"]
    assert client.get(f"/mcp_servers/{created['id']}", cast_to=object) == created

    secured = create(
        client,
        url=auth_service.url,
        name="Secured",
        description="needs a token",
        headers={**AUTH, "X-Extra": HEADER_SECRET},
        allowed_tools=["add", "echo_headers"],
    )
    assert secured["name"] == "Secured" and secured["header_names"] == ["Authorization", "X-Extra"]
    assert secured["allowed_tools"] == ["add", "echo_headers"] and names(secured) == TOOL_NAMES
    over_sse = create(client, url=service.url.replace("/mcp", "/sse"), transport="sse")
    assert over_sse["transport"] == "sse" and names(over_sse) == TOOL_NAMES

    page = client.get("/mcp_servers", cast_to=object, options={"params": {"limit": 2}})
    assert page["object"] == "list" and [s["id"] for s in page["data"]] == [over_sse["id"], secured["id"]]
    assert page["has_more"] and page["first_id"] == over_sse["id"] and page["last_id"] == secured["id"]
    rest = client.get("/mcp_servers", cast_to=object, options={"params": {"limit": 1, "after": secured["id"]}})
    assert [s["id"] for s in rest["data"]] == [created["id"]]

    renamed = modify(client, secured["id"], name="Renamed", allowed_tools=None, metadata={"k": "v"})
    assert renamed == {**secured, "name": "Renamed", "allowed_tools": None, "metadata": {"k": "v"}}
    assert modify(client, secured["id"], name=None)["name"] == "test-tools"  # the server's own name again
    # New headers list the tools again with them; `null` restores the create-time defaults.
    relisted = modify(client, secured["id"], headers=AUTH, name=None)
    assert relisted["header_names"] == ["Authorization"] and relisted["name"] == "test-tools"
    assert relisted["tools_refreshed_at"] >= secured["tools_refreshed_at"]
    moved = modify(client, created["id"], url=service.url.replace("/mcp", "/sse"), transport="sse")
    assert moved["url"].endswith("/sse") and moved["transport"] == "sse" and names(moved) == TOOL_NAMES
    refreshed = refresh(client, created["id"])
    assert refreshed == {**moved, "tools_refreshed_at": refreshed["tools_refreshed_at"]}
    assert refreshed["tools_refreshed_at"] >= moved["tools_refreshed_at"]

    texts = [json.dumps([created, secured, renamed, relisted]), raw_text(client, "get", "/mcp_servers")]
    texts += [raw_text(client, "get", f"/mcp_servers/{s['id']}") for s in (created, secured, over_sse)]
    for s in (created, secured, over_sse):
        deleted = client.delete(f"/mcp_servers/{s['id']}", cast_to=object)
        assert deleted == {"id": s["id"], "object": "mcp_server.deleted", "deleted": True}
        with pytest.raises(openai.NotFoundError):
            client.get(f"/mcp_servers/{s['id']}", cast_to=object)
    with pytest.raises(openai.NotFoundError):
        client.delete(f"/mcp_servers/{created['id']}", cast_to=object)
    for text in [*texts, server.log()]:
        for secret in SECRETS:
            assert secret not in text


def test_invalid_registrations_are_400s_naming_the_field(client, service):
    for body, param in (
        ({"url": "ftp://x.example/mcp"}, "url"),
        ({"url": "https://user:pw@x.example/mcp"}, "url"),
        ({"url": service.url, "transport": "websocket"}, "transport"),
        ({"url": service.url, "headers": {"Bad Header": HEADER_SECRET}}, "headers.Bad Header"),
        ({"url": service.url, "headers": {"Host": HEADER_SECRET}}, "headers.Host"),
        ({"url": service.url, "headers": {"X-Key": HEADER_SECRET + "\r\nX-Evil: 1"}}, "headers.X-Key"),
        ({"url": service.url, "headers": {"X-Key": 5}}, "headers.X-Key"),
        ({"url": service.url, "allowed_tools": ["add", "nope"]}, "allowed_tools[1]"),
        ({"url": service.url, "name": ""}, "name"),
        ({"url": service.url, "tools": []}, "tools"),
    ):
        with pytest.raises(openai.BadRequestError) as exc:
            create(client, **body)
        assert exc.value.param == param, exc.value.body
        assert exc.value.type == "invalid_request_error"
        assert HEADER_SECRET not in exc.value.response.text
    with pytest.raises(openai.BadRequestError) as exc:
        create(client, url=service.url, allowed_tools=["nope"])
    assert "has no tool named 'nope'. Its tools: add, echo_headers, fail, slow, lookup.city." in exc.value.message


def test_unreachable_servers_are_424s_and_private_addresses_400s(client, service, auth_service):
    port = service.url.split(":")[2].split("/")[0]
    for url, fragment in (
        (auth_service.url, "the MCP server answered HTTP 401 Unauthorized"),
        (service.url + "/nowhere", "the MCP server answered HTTP 404 Not Found"),
        (f"http://127.0.0.1:{_closed_port()}/mcp", "could not connect to the MCP server"),
    ):
        with pytest.raises(openai.APIStatusError) as exc:
            create(client, url=url, headers={"Authorization": "Bearer wrong-" + TOKEN})
        assert exc.value.status_code == 424 and exc.value.param == "url", exc.value.body
        assert exc.value.type == "external_connector_error"
        message = exc.value.body["message"]
        assert message.startswith(f"Could not list the tools of the MCP server at {url}: ")
        assert fragment in message and TOKEN not in exc.value.response.text
    for url in (f"http://localhost:{port}/mcp", "http://169.254.169.254/mcp", "http://10.0.0.1/mcp"):
        before = len(service.calls)
        with pytest.raises(openai.BadRequestError) as exc:
            create(client, url=url)
        assert exc.value.param == "url" and "private or otherwise non-public address" in exc.value.message
        assert len(service.calls) == before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_modify_that_raced_another_changes_nothing(client, service):
    """Tools are listed outside the row lock (that takes network time): a modify whose listing was
    overtaken by another modify of the connection is refused (409) instead of undoing it."""
    slow = start_in_thread(hold_listing=True)
    try:
        registered = create(client, url=service.url)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            moving = pool.submit(modify, client, registered["id"], url=slow.url)
            assert slow.listing_started.wait(20)  # the first modify is listing the slow server's tools
            keyed = modify(client, registered["id"], headers={"X-Extra": HEADER_SECRET})
            slow.release_listing()
            with pytest.raises(openai.ConflictError) as exc:
                moving.result()
        assert exc.value.status_code == 409 and "modified by another request" in exc.value.message
        assert client.get(f"/mcp_servers/{registered['id']}", cast_to=object) == keyed
        assert keyed["url"] == service.url and keyed["header_names"] == ["X-Extra"]
    finally:
        slow.stop()


def test_unknown_ids_and_refused_modifications(client, service):
    with pytest.raises(openai.NotFoundError) as exc:
        client.get("/mcp_servers/mcp_doesnotexist", cast_to=object)
    assert exc.value.body == {
        "message": "No MCP server found with id 'mcp_doesnotexist'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    for call in (
        lambda: modify(client, "mcp_doesnotexist", name="x"),
        lambda: refresh(client, "mcp_doesnotexist"),
        lambda: client.get("/mcp_servers/mcp_shared_nothing", cast_to=object),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    with pytest.raises(openai.BadRequestError) as bad:
        client.get("/mcp_servers/asst_123", cast_to=object)
    assert bad.value.param == "mcp_server_id"

    registered = create(client, url=service.url, headers={"X-Extra": HEADER_SECRET})
    for body, param in (
        ({"url": None}, "url"),
        ({"url": "ftp://x"}, "url"),
        ({"transport": None}, "transport"),
        ({"headers": {"Host": "x"}, "name": "changed"}, "headers.Host"),
        ({"allowed_tools": ["nope"], "name": "changed"}, "allowed_tools[0]"),
    ):
        with pytest.raises(openai.BadRequestError) as exc:
            modify(client, registered["id"], **body)
        assert exc.value.param == param, exc.value.body
    with pytest.raises(openai.APIStatusError) as exc:
        modify(client, registered["id"], url=service.url + "/nowhere", name="changed")
    assert exc.value.status_code == 424
    assert client.get(f"/mcp_servers/{registered['id']}", cast_to=object) == registered


# --- MCP tools in runs ---------------------------------------------------------------------------


def run_texts(client: openai.OpenAI, thread_id: str, run_id: str) -> list[str]:
    """Everything a client can read about a run, as raw JSON text."""
    return [
        raw_text(client, "get", f"/threads/{thread_id}/runs/{run_id}"),
        raw_text(client, "get", f"/threads/{thread_id}/runs/{run_id}/steps"),
        raw_text(client, "get", f"/threads/{thread_id}/messages"),
    ]


def tool_outputs(client: openai.OpenAI, run) -> dict[str, str]:
    step = client.beta.threads.runs.steps.list(thread_id=run.thread_id, run_id=run.id, order="asc").data[0]
    assert step.type == "tool_calls" and step.status == "completed"
    return {c.function.name: c.function.output for c in step.step_details.tool_calls if c.type == "function"}


def test_mcp_tools_complete_a_polled_run(client, server, scripted, model_name, auth_service):
    registered = create(client, url=auth_service.url, headers=AUTH, allowed_tools=["add", "lookup.city", "echo_headers"])
    scripted.script(
        model_name,
        [
            {
                "tool_calls": [
                    {"name": "add", "arguments": {"a": 19, "b": 23}},
                    {"name": "lookup_city", "arguments": {"name": "Paris"}},
                    {"name": "echo_headers", "arguments": {"names": ["authorization"]}},
                ]
            },
            {"content": "42, and Paris is big."},
        ],
    )
    assistant = enabling_assistant(client, model_name, "mcp", registered["id"])
    # Sent back unchanged, the entry still means the MCP server.
    again = client.beta.assistants.update(assistant.id, tools=assistant.tools)
    assert again.tools == assistant.tools

    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "19 + 23? And Paris?"}]},
        poll_interval_ms=20,
    )
    assert run.status == "completed", run.last_error
    # Only the allowed tools were offered, each with its schema.
    offered = offered_tools(scripted, model_name)
    assert sorted(offered) == ["add", "echo_headers", "lookup_city"]
    assert offered["add"]["parameters"]["required"] == ["a", "b"] and offered["add"]["description"] == "Add two integers."
    outputs = tool_outputs(client, run)
    assert outputs == {"add": "42", "lookup_city": "Paris: population 1,000,000", "echo_headers": '{\n  "authorization": "[REDACTED]"\n}'}
    assert auth_service.calls_of("add")[-1]["arguments"] == {"a": 19, "b": 23}
    assert auth_service.calls_of("echo_headers")[-1]["headers"]["authorization"] == f"Bearer {TOKEN}"
    # The model read the outputs.
    tool_messages = [m for m in scripted.requests(model_name)[1]["body"]["messages"] if m["role"] == "tool"]
    assert {json.dumps(m["content"]) for m in tool_messages} >= {json.dumps("42")}
    answer = client.beta.threads.messages.list(thread_id=run.thread_id).data[0]
    assert answer.content[0].text.value == "42, and Paris is big."
    for text in run_texts(client, run.thread_id, run.id) + [server.log()]:
        for secret in SECRETS:
            assert secret not in text


def test_run_headers_stream_and_never_show(client, server, scripted, model_name, auth_service):
    registered = create(client, url=auth_service.url, headers=AUTH)
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "echo_headers", "arguments": {"names": ["x-user", "authorization"]}}]},
            {"content": "Echoed."},
        ],
    )
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "mcp", "id": registered["id"]}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Who am I?"}])
    raw_events: list[str] = []
    deltas: list[str] = []
    with client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        extra_body={"mcp_headers": {registered["id"]: {"X-User": HEADER_SECRET}}},
    ) as stream:
        for event in stream:
            raw_events.append(event.model_dump_json())
            if event.event == "thread.run.step.delta":
                for call in event.data.delta.step_details.tool_calls or []:
                    if call.type == "function" and call.function.output:
                        deltas.append(call.function.output)
        run = stream.get_final_run()
    assert run.status == "completed", run.last_error
    seen = auth_service.calls_of("echo_headers")[-1]["headers"]
    assert seen["x-user"] == HEADER_SECRET and seen["authorization"] == f"Bearer {TOKEN}"  # merged over the stored
    output = tool_outputs(client, run)["echo_headers"]
    assert json.loads(output) == {"x-user": "[REDACTED]", "authorization": "[REDACTED]"} and deltas == [output]
    for text in raw_events + run_texts(client, thread.id, run.id) + [server.log()]:
        for secret in SECRETS:
            assert secret not in text

    # A run's header replaces the stored one of the same name (names are case-insensitive).
    scripted.script(model_name, [{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}, {"content": "No."}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        extra_body={"mcp_headers": {registered["id"]: {"authorization": "Bearer not-the-token"}}},
        poll_interval_ms=20,
    )
    assert run.status == "completed", run.last_error
    assert tool_outputs(client, run)["add"] == "Error: the MCP server answered HTTP 401 Unauthorized."


def test_run_headers_are_checked(client, model_name, service):
    registered = create(client, url=service.url)
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "mcp", "id": registered["id"]}])
    thread = client.beta.threads.create()
    for headers, param in (
        ({"mcp_doesnotexist": {"X-User": "a"}}, "mcp_headers"),
        ({registered["id"]: {"Host": HEADER_SECRET}}, f"mcp_headers.{registered['id']}.Host"),
        ({registered["id"]: {"X-User": HEADER_SECRET + "\n"}}, f"mcp_headers.{registered['id']}.X-User"),
        ({registered["id"]: "Bearer x"}, f"mcp_headers.{registered['id']}"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.beta.threads.runs.create(
                thread_id=thread.id, assistant_id=assistant.id, extra_body={"mcp_headers": headers}
            )
        assert caught.value.body["param"] == param, caught.value.body
        assert HEADER_SECRET not in caught.value.response.text
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.create(model=model_name, tools=[{"type": "mcp", "id": "mcp_doesnotexist"}])
    assert caught.value.body["param"] == "tools[0].id"
    assert caught.value.body["message"] == "No MCP server with id 'mcp_doesnotexist'."
    # A deleted server is no longer offered: the run still works.
    client.delete(f"/mcp_servers/{registered['id']}", cast_to=object)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    assert run.status == "completed", run.last_error


def test_failing_and_slow_tools_and_a_server_that_went_away(client, scripted, model_name, service):
    """The model reads each failure and the run goes on: an MCP error result, a call past the tool
    timeout (5 s on the test server), and a server that is gone."""
    gone = start_in_thread()
    registered = create(client, url=service.url)
    leaving = create(client, url=gone.url, name="leaving")
    gone.stop()
    scripted.script(
        model_name,
        [
            {
                "tool_calls": [
                    {"name": "fail", "arguments": {"reason": "boom"}},
                    {"name": "slow", "arguments": {"seconds": 30}},
                    {"name": "add_2", "arguments": {"a": 1, "b": 1}},
                ]
            },
            {"content": "Everything failed."},
        ],
    )
    assistant = client.beta.assistants.create(
        model=model_name, tools=[{"type": "mcp", "id": registered["id"]}, {"type": "mcp", "id": leaving["id"]}]
    )
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "Try."}]}, poll_interval_ms=50
    )
    assert run.status == "completed", run.last_error
    outputs = tool_outputs(client, run)
    assert outputs["fail"] == "Error: Error executing tool fail: it failed: boom"
    assert outputs["slow"] == "Error: the tool 'slow' did not finish within 5 seconds."
    assert outputs["add_2"].startswith("Error: could not connect to the MCP server")
    # The second server's tools were offered with suffixes where the first one's names were taken.
    offered = set(offered_tools(scripted, model_name))
    assert {"add", "add_2", "lookup_city", "lookup_city_2"} <= offered
    with pytest.raises(openai.APIStatusError) as exc:
        refresh(client, leaving["id"])
    assert exc.value.status_code == 424 and "could not connect to the MCP server" in exc.value.body["message"]


def test_a_run_waiting_on_a_slow_tool_is_cancelled_at_once(client, scripted, model_name, service):
    registered = create(client, url=service.url, allowed_tools=["slow"])
    scripted.script(model_name, [{"tool_calls": [{"name": "slow", "arguments": {"seconds": 30}}]}, {"content": "never"}])
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "mcp", "id": registered["id"]}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Wait."}])
    before = service.slow_started
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    wait_for(lambda: service.slow_started > before, timeout=20)
    client.beta.threads.runs.cancel(run_id=run.id, thread_id=thread.id)
    run = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=20)
    assert run.status == "cancelled"
    # Cancelled while the tool was still waiting, not once its 5 s tool timeout had given the model
    # an answer: the call has no output and the model was never asked again.
    (step,) = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id).data
    assert step.status == "cancelled" and [c.function.output for c in step.step_details.tool_calls] == [None]
    assert len(scripted.requests(model_name)) == 1


def test_mcp_servers_belong_to_their_tenant(auth_server, service):
    first, second = new_key(auth_server, name="mcp A"), new_key(auth_server, name="mcp B")
    mine = create(as_key(auth_server, first), url=service.url)
    theirs = as_key(auth_server, second)
    for call in (
        lambda: theirs.get(f"/mcp_servers/{mine['id']}", cast_to=object),
        lambda: theirs.delete(f"/mcp_servers/{mine['id']}", cast_to=object),
        lambda: modify(theirs, mine["id"], name="taken over"),
        lambda: refresh(theirs, mine["id"]),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    listed = theirs.get("/mcp_servers", cast_to=object, options={"params": {"limit": 100}})
    assert mine["id"] not in [s["id"] for s in listed["data"]]
    with pytest.raises(openai.BadRequestError) as caught:
        theirs.beta.assistants.create(model="m", tools=[{"type": "mcp", "id": mine["id"]}])
    assert caught.value.body["param"] == "tools[0].id"
    assert as_key(auth_server, first).get(f"/mcp_servers/{mine['id']}", cast_to=object) == mine


def test_secrets_stay_out_of_debug_logs(auth_server, scripted, model_name, auth_service):
    """The auth server logs at debug level: an MCP call whose result echoes the server's credentials
    leaves no trace of them there."""
    client = as_key(auth_server, new_key(auth_server, name="mcp logs"))
    registered = create(client, url=auth_service.url, headers={**AUTH, "X-Extra": HEADER_SECRET})
    scripted.script(
        model_name,
        [{"tool_calls": [{"name": "echo_headers", "arguments": {"names": ["authorization", "x-extra"]}}]}, {"content": "ok"}],
    )
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "mcp", "id": registered["id"]}])
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "Echo."}]}, poll_interval_ms=20
    )
    assert run.status == "completed", run.last_error
    assert json.loads(tool_outputs(client, run)["echo_headers"]) == {"authorization": "[REDACTED]", "x-extra": "[REDACTED]"}
    log = auth_server.log()
    assert " DEBUG httpcore" in log  # the log does go down to the connections of the MCP calls
    for secret in SECRETS:
        assert secret not in log


# --- servers the operator configures -------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server(scripted, workdir, database_url, auth_service):
    """A server whose operator configured three MCP servers for everyone: a local one started over
    stdio, a remote one with its token (at `localhost`, which is not allow-listed for tenants) and
    one that is not there."""
    config = {
        "local": {
            "command": sys.executable,
            "args": ["-m", "tests.mcp_service", "--stdio"],
            "cwd": str(ROOT),
            "description": "Local tools",
            "allowed_tools": ["add", "lookup.city"],
        },
        "remote": {"url": auth_service.url.replace("127.0.0.1", "localhost"), "headers": AUTH},
        "dead": {"url": f"http://127.0.0.1:{_closed_port()}/mcp", "transport": "sse"},
    }
    srv = _extra_server(
        scripted, workdir, "mcp-shared", _own_database(database_url, "mcp_shared"), ASSISTGRAPH_MCP_SERVERS=json.dumps(config)
    )
    yield srv
    stop_process(srv.proc)


SHARED = ["mcp_shared_local", "mcp_shared_remote", "mcp_shared_dead"]


def test_shared_servers_are_listed_and_refreshed_but_not_changed(shared_server, auth_service):
    client = openai.OpenAI(base_url=shared_server.url, api_key="x", _strict_response_validation=True, max_retries=0)
    local = client.get("/mcp_servers/mcp_shared_local", cast_to=object)
    assert local == {
        "id": "mcp_shared_local",
        "object": "mcp_server",
        "created_at": 0,
        "name": "local",
        "description": "Local tools",
        "url": None,
        "transport": "stdio",
        "server_info": None,
        "header_names": [],
        "allowed_tools": ["add", "lookup.city"],
        "tools": None,  # not listed yet
        "tools_refreshed_at": None,
        "shared": True,
        "metadata": {},
    }
    remote = client.get("/mcp_servers/mcp_shared_remote", cast_to=object)
    assert remote["url"] == auth_service.url.replace("127.0.0.1", "localhost")
    assert remote["header_names"] == ["Authorization"] and remote["transport"] == "streamable_http"

    refreshed = refresh(client, "mcp_shared_local")
    assert names(refreshed) == TOOL_NAMES and isinstance(refreshed["tools_refreshed_at"], int)
    assert client.get("/mcp_servers/mcp_shared_local", cast_to=object) == refreshed
    with pytest.raises(openai.APIStatusError) as exc:
        refresh(client, "mcp_shared_dead")
    assert exc.value.status_code == 424 and "could not connect to the MCP server" in exc.value.body["message"]
    for call in (lambda: modify(client, "mcp_shared_remote", name="mine"), lambda: client.delete("/mcp_servers/mcp_shared_remote", cast_to=object)):
        with pytest.raises(openai.BadRequestError) as exc:
            call()
        assert "configured on the server (ASSISTGRAPH_MCP_SERVERS)" in exc.value.message
    texts = [raw_text(client, "get", "/mcp_servers"), json.dumps([local, remote, refreshed]), shared_server.log()]
    for text in texts:
        assert TOKEN not in text and sys.executable not in texts[0]


def test_shared_and_registered_servers_page_together(shared_server, service):
    client = openai.OpenAI(base_url=shared_server.url, api_key="x", _strict_response_validation=True, max_retries=0)
    first, second = create(client, url=service.url, name="first"), create(client, url=service.url, name="second")

    def ids(**params) -> tuple[list[str], bool]:
        page = client.get("/mcp_servers", cast_to=object, options={"params": params})
        return [s["id"] for s in page["data"]], page["has_more"]

    everything = [second["id"], first["id"], *SHARED[::-1]]
    assert ids(limit=100) == (everything, False)
    assert ids(limit=100, order="asc") == (everything[::-1], False)
    assert ids(limit=2) == (everything[:2], True)
    assert ids(limit=2, after=first["id"]) == (everything[2:4], True)
    assert ids(limit=2, after="mcp_shared_remote") == (["mcp_shared_local"], False)
    assert ids(limit=2, order="asc") == (SHARED[:2], True)
    assert ids(limit=2, order="asc", after="mcp_shared_remote") == (["mcp_shared_dead", first["id"]], True)
    assert ids(limit=5, order="asc", after=first["id"]) == ([second["id"]], False)
    assert ids(limit=2, before="mcp_shared_remote") == ([first["id"], "mcp_shared_dead"], True)
    assert ids(limit=2, before=first["id"]) == ([second["id"]], False)


def test_runs_use_shared_servers(shared_server, scripted, model_name, auth_service):
    client = openai.OpenAI(base_url=shared_server.url, api_key="x", _strict_response_validation=True, max_retries=0)
    scripted.script(
        model_name,
        [
            {
                "tool_calls": [
                    {"name": "add", "arguments": {"a": 2, "b": 3}},
                    {"name": "echo_headers", "arguments": {"names": ["x-user"]}},
                ]
            },
            {"content": "5"},
        ],
    )
    assistant = client.beta.assistants.create(
        model=model_name, tools=[{"type": "mcp", "id": "mcp_shared_local"}, {"type": "mcp", "id": "mcp_shared_remote"}]
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "2 + 3?"}])
    before = len(auth_service.calls_of("echo_headers"))
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        extra_body={"mcp_headers": {"mcp_shared_remote": {"X-User": "ada"}}},
        poll_interval_ms=20,
    )
    assert run.status == "completed", run.last_error
    offered = sorted(t["function"]["name"] for t in scripted.requests(model_name)[0]["body"]["tools"])
    # The local server's allowed tools, then the remote's (listed on first use) with suffixes.
    assert offered == sorted(["add", "lookup_city", "add_2", "echo_headers", "fail", "slow", "lookup_city_2"])
    outputs = tool_outputs(client, run)
    # Header values this short are not taken for secrets (see tools/mcp_servers/config.py).
    assert outputs["add"] == "5" and json.loads(outputs["echo_headers"]) == {"x-user": "ada"}
    (seen,) = auth_service.calls_of("echo_headers")[before:]
    assert seen["headers"]["authorization"] == f"Bearer {TOKEN}"

    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant.id, extra_body={"mcp_headers": {"mcp_shared_local": {"X-User": "a"}}}
        )
    assert caught.value.body["param"] == "mcp_headers.mcp_shared_local"

    # A shared server that cannot list its tools fails the run, saying which and why.
    broken = client.beta.assistants.create(model=model_name, tools=[{"type": "mcp", "id": "mcp_shared_dead"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=broken.id, poll_interval_ms=20)
    assert run.status == "failed" and run.last_error.code == "server_error"
    assert run.last_error.message.startswith("Could not list the tools of the MCP server 'mcp_shared_dead': ")
    for text in run_texts(client, thread.id, run.id) + [shared_server.log()]:
        assert TOKEN not in text


# --- the playground ------------------------------------------------------------------------------


def test_the_playground_form_offers_and_keeps_mcp_servers(tab, client, model_name, service):  # noqa: F811
    """The assistant form lists the MCP servers of GET /v1/mcp_servers: saving keeps an enabled one
    (as {"type": "mcp", "id": ...}), unchecking removes it."""
    registered = create(client, url=service.url, name="Test MCP tools", description="for the form")
    assistant = client.beta.assistants.create(
        model=model_name, name="With MCP", tools=[{"type": "mcp", "id": registered["id"]}]
    )
    page = tab.page
    page.goto(f"/playground/#/assistants/{assistant.id}")
    box = page.get_by_label(f"Test MCP tools ({registered['id']})")
    expect(box).to_be_checked()
    expect(page.get_by_text("for the form · 5 tools")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("Still with MCP")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("heading", name="Still with MCP")).to_be_visible()
    saved = client.beta.assistants.retrieve(assistant.id)
    assert [t.model_extra.get("builtin") for t in saved.tools] == [{"type": "mcp", "id": registered["id"]}]
    box.uncheck()
    page.get_by_role("button", name="Save changes").click()
    wait_for(lambda: client.beta.assistants.retrieve(assistant.id).tools == [])
    assert tab.problems() == []
