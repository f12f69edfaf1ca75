"""OpenAPI actions: the tools built from a document (driven directly, with real HTTP against
tests/action_service.py), and the `/actions` API through the official SDK in strict mode."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import openai
import pytest
import yaml
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from api.contract.errors import InvalidRequest
from api.settings import Settings
from api.tooling import actions
from tests.action_service import (
    API_KEY,
    BASIC_PASSWORD,
    BASIC_USER,
    BEARER_TOKEN,
    BIG_SIZE,
    REFUSED_URLS,
    start_in_thread,
)
from tests.conftest import SECRET_KEY, enabling_assistant, offered_tools
from tests.test_tenancy import as_key, new_key
from tools.functions import unique_name
from tools.openapi_actions import (
    Credentials,
    action_tools,
    forbidden_address,
    operations,
    parse_document,
)

SECRETS = (BEARER_TOKEN, API_KEY, BASIC_PASSWORD)


@pytest.fixture(scope="module")
def service():
    svc, stop = start_in_thread()
    yield svc
    stop()


def tools_for(doc: dict, *, credentials=None, allowed=("127.0.0.1",), timeout=5.0, max_bytes=100_000, **kw):
    tools = action_tools(
        parse_document(doc),
        credentials=credentials,
        timeout=timeout,
        max_bytes=max_bytes,
        allowed_hosts=list(allowed),
        **kw,
    )
    return {tool.name: tool for tool in tools}


def body_of(output: str) -> dict:
    return json.loads(output.split("\n\n", 1)[1])


# --- documents and operations --------------------------------------------------------------------


def test_document_becomes_tools_with_names_and_schemas(service):
    tools = tools_for(service.document())
    assert {"getWeather", "createOrder", "getProfile", "keyed", "basic", "get_echo-headers", "big", "slow"} <= set(
        tools
    )
    weather = tools["getWeather"]
    assert weather.description == "Current weather in a city"
    assert weather.args_schema == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "units": {"type": "string", "enum": ["metric", "imperial"], "description": "metric or imperial"},
        },
        "required": ["city"],
    }
    order = tools["createOrder"].args_schema
    assert order["required"] == ["body"]
    assert order["properties"]["body"]["required"] == ["item", "quantity"]
    assert order["properties"]["body"]["properties"]["notes"] == {"type": ["string", "null"]}
    # The schema the model is offered (through LangChain's conversion) is the same.
    from langchain_core.utils.function_calling import convert_to_openai_tool

    offered = convert_to_openai_tool(weather)["function"]
    assert offered["name"] == "getWeather" and offered["parameters"]["required"] == ["city"]


def test_names_are_sanitised_unique_and_prefixed(service):
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://api.example.com/{version}", "variables": {"version": {"default": "v2"}}}],
        "paths": {
            "/a": {"get": {"operationId": "list things!", "responses": {}}},
            "/b": {"get": {"operationId": "list things?", "responses": {}}},
            "/c/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "delete": {"responses": {}},
            },
            "/d": {"get": {"operationId": "x" * 100, "responses": {}}},
        },
    }
    ops = operations(parse_document(doc))
    assert [op.name for op in ops] == ["list_things", "list_things_2", "delete_c_id", "x" * 64]
    assert all(op.server_url == "https://api.example.com/v2" for op in ops)
    assert ops[2].schema["properties"] == {"id": {"type": "integer"}} and ops[2].method == "DELETE"
    prefixed = action_tools(
        parse_document(doc), credentials=None, timeout=1, max_bytes=1, allowed_hosts=[], name_prefix="my api"
    )
    assert [t.name for t in prefixed][:2] == ["my_api_list_things", "my_api_list_things_2"]
    assert all(len(t.name) <= 64 for t in prefixed)


def test_yaml_and_json_text_parse_to_the_same_document(service):
    doc = service.document()
    assert parse_document(yaml.safe_dump(doc)) == doc
    assert parse_document(json.dumps(doc)) == doc
    # YAML response codes are integers and dates are dates; the stored document is plain JSON.
    text = "openapi: 3.0.0\ninfo: {title: t, version: 2024-01-01}\nservers: [{url: 'https://x.example'}]\n"
    text += "paths:\n  /a:\n    get:\n      responses:\n        200: {description: ok}\n"
    parsed = parse_document(text)
    assert parsed["info"]["version"] == "2024-01-01" and "200" in parsed["paths"]["/a"]["get"]["responses"]
    json.dumps(parsed)


def test_recursive_schemas_are_cut_not_followed_forever():
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "t", "version": "1"},
        "servers": [{"url": "https://x.example"}],
        "paths": {
            "/tree": {
                "post": {
                    "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}},
                    "responses": {},
                }
            }
        },
        "components": {
            "schemas": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
                    },
                }
            }
        },
    }
    body = operations(parse_document(doc))[0].schema["properties"]["body"]
    assert body["properties"]["children"] == {"type": "array", "items": {}}


BASE = {"openapi": "3.0.0", "info": {"title": "t", "version": "1"}, "servers": [{"url": "https://x.example"}]}
OK_PATHS = {"/a": {"get": {"responses": {}}}}


@pytest.mark.parametrize(
    "doc, message",
    [
        ("", "empty"),
        ("[1, 2", "not valid JSON"),
        ("openapi: [unclosed", "neither valid JSON nor valid YAML"),
        ("- a\n- b\n", "object at the top level"),
        ({"swagger": "2.0", "paths": OK_PATHS}, "Swagger 2.0"),
        ({**BASE, "openapi": "2.5"}, "only 3.x"),
        ({**BASE, "paths": {}}, "no 'paths'"),
        ({**BASE, "servers": [{"url": "/api"}], "paths": OK_PATHS}, "relative server URLs"),
        ({**BASE, "servers": [{"url": "ftp://x.example"}], "paths": OK_PATHS}, "absolute http(s) URL"),
        ({**BASE, "servers": [{"url": "https://u:p@x.example"}], "paths": OK_PATHS}, "must not contain credentials"),
        ({k: v for k, v in BASE.items() if k != "servers"} | {"paths": OK_PATHS}, "no 'servers'"),
        (
            {**BASE, "paths": {"/a": {"get": {"parameters": [{"$ref": "#/components/parameters/Nope"}]}}}},
            "does not resolve",
        ),
        ({**BASE, "paths": {"/a": {"get": {"parameters": [{"$ref": "other.yaml#/P"}]}}}}, "only local $ref"),
        ({**BASE, "paths": {"/a/{id}": {"get": {"responses": {}}}}}, "path parameter 'id' is not declared"),
        ({**BASE, "paths": {"/a": {"parameters": {}}}}, "no operations"),
        ("a: &x [1]\nb: *x\n", "aliases"),
    ],
)
def test_invalid_documents_raise_value_errors(doc, message):
    with pytest.raises(ValueError) as exc:
        parse_document(doc)
    assert message in str(exc.value), str(exc.value)


# --- calls -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_call_with_path_query_and_body_reaches_the_service(service):
    tools = tools_for(service.document())
    out = await tools["getWeather"].ainvoke({"city": "Paris", "units": "imperial"})
    assert out.startswith("HTTP 200 OK\n\n")
    assert body_of(out) == {"city": "Paris", "units": "imperial", "temperature": 21}
    seen = service.requests_to("/weather/Paris")[-1]
    assert seen["method"] == "GET" and seen["query"] == {"units": ["imperial"]}

    out = await tools["createOrder"].ainvoke({"body": {"item": "tea", "quantity": 2, "notes": None}})
    assert out.startswith("HTTP 201 Created") and body_of(out)["order"]["item"] == "tea"
    seen = service.requests_to("/orders")[-1]
    assert json.loads(seen["body"]) == {"item": "tea", "quantity": 2, "notes": None}
    assert seen["headers"]["content-type"] == "application/json"

    # Path values cannot climb out of their segment.
    await tools["getWeather"].ainvoke({"city": "../secure/profile"})
    assert service.requests[-1]["path"] == "/weather/..%2Fsecure%2Fprofile"
    await tools["getWeather"].ainvoke({"city": ".."})
    assert service.requests[-1]["path"] == "/weather/%2E%2E"


@pytest.mark.asyncio
async def test_missing_required_arguments_are_errors_the_model_sees(service):
    tools = tools_for(service.document())
    assert await tools["getWeather"].ainvoke({}) == "Error: missing required argument 'city'."
    assert await tools["createOrder"].ainvoke({}) == "Error: missing required argument 'body'."


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "operation, credentials",
    [
        ("getProfile", {"type": "bearer", "token": BEARER_TOKEN}),
        ("keyed", {"type": "api_key", "header": "X-Api-Key", "value": API_KEY}),
        ("basic", {"type": "basic", "username": BASIC_USER, "password": BASIC_PASSWORD}),
    ],
)
async def test_credentials_are_sent_and_missing_ones_give_401_errors(service, operation, credentials):
    without = await tools_for(service.document())[operation].ainvoke({})
    assert without.startswith("Error: HTTP 401 Unauthorized")
    tool = tools_for(service.document(), credentials=credentials)[operation]
    out = await tool.ainvoke({})
    assert out.startswith("HTTP 200 OK"), out
    for secret in SECRETS:
        assert secret not in out and secret not in repr(tool) and secret not in str(tool)
        assert secret not in tool.model_dump_json() and secret not in str(tool.model_dump())


@pytest.mark.asyncio
async def test_credentials_echoed_by_the_server_are_redacted(service):
    tool = tools_for(service.document(), credentials={"type": "bearer", "token": BEARER_TOKEN})["get_echo-headers"]
    out = await tool.ainvoke({})
    assert body_of(out)["Authorization"] == "Bearer [REDACTED]"
    assert service.requests_to("/echo-headers")[-1]["headers"]["authorization"] == f"Bearer {BEARER_TOKEN}"


def test_credential_validation_errors_never_echo_secrets():
    for bad in (
        {"type": "bearer", "token": BEARER_TOKEN + "\r\nX-Evil: 1"},
        {"type": "bearer", "token": BEARER_TOKEN, "extra": 1},
        {"type": "api_key", "header": "Bad Header", "value": API_KEY},
        {"type": "api_key", "header": "Host", "value": API_KEY},
        {"type": "basic", "username": "a:b", "password": BASIC_PASSWORD},
        {"type": "digest", "token": BEARER_TOKEN},
    ):
        with pytest.raises(ValueError) as exc:
            Credentials.model_validate(bad)
        for secret in SECRETS:
            assert secret not in str(exc.value) and secret not in repr(exc.value)


@pytest.mark.asyncio
async def test_response_size_is_capped(service):
    tools = tools_for(service.document(), max_bytes=BIG_SIZE // 2)
    assert await tools["big"].ainvoke({}) == f"Error: the response is larger than the {BIG_SIZE // 2} bytes allowed."
    out = await tools_for(service.document(), max_bytes=BIG_SIZE)["big"].ainvoke({})
    assert out.startswith("HTTP 200 OK") and len(out) > BIG_SIZE


@pytest.mark.asyncio
async def test_slow_calls_time_out(service):
    tool = tools_for(service.document(), timeout=0.5)["slow"]
    assert await tool.ainvoke({"seconds": 3}) == "Error: the request timed out after 0.5 seconds."


# --- the network guard -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, forbidden",
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.16.5.4", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.0.0.1", True),
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 of 169.254.169.254
        ("8.8.8.8", False),
        ("93.184.215.14", False),
        ("2606:4700:4700::1111", False),
    ],
)
def test_forbidden_addresses(address, forbidden):
    assert forbidden_address(address) is forbidden


@pytest.mark.parametrize(
    "name, taken, chosen",
    [
        ("getWeather", set(), "getWeather"),
        ("getWeather", {"getWeather"}, "getWeather_2"),
        ("getWeather", {"getWeather", "getWeather_2"}, "getWeather_3"),
        ("x" * 64, {"x" * 64}, "x" * 62 + "_2"),  # cut to make room: names are at most 64 characters
        ("x" * 64, {"x" * 64, *(f"{'x' * 62}_{n}" for n in range(2, 10))}, "x" * 61 + "_10"),
    ],
)
def test_a_taken_tool_name_gets_a_numeric_suffix(name, taken, chosen):
    before = set(taken)
    assert unique_name(name, taken) == chosen
    assert taken == before | {chosen}


def _with_server(doc: dict, url: str) -> dict:
    return {**doc, "servers": [{"url": url}]}


@pytest.mark.asyncio
@pytest.mark.parametrize("url, allowed, shown", REFUSED_URLS)
async def test_private_addresses_are_refused(service, url, allowed, shown):
    port = service.url.rsplit(":", 1)[1]
    doc = _with_server(service.document(), url.format(port=port))
    before = len(service.requests)
    out = await tools_for(doc, allowed=allowed)["getWeather"].ainvoke({"city": "x"})
    assert out.startswith(f"Error: refused to connect to '{shown}'"), out
    assert "private or otherwise non-public address" in out
    assert len(service.requests) == before


@pytest.mark.asyncio
async def test_allow_listed_hosts_are_matched_as_written(service):
    port = service.url.rsplit(":", 1)[1]
    doc = _with_server(service.document(), f"http://LocalHost:{port}")
    out = await tools_for(doc, allowed=("localhost",))["getWeather"].ainvoke({"city": "x"})
    assert out.startswith("HTTP 200 OK")


@pytest.mark.asyncio
async def test_the_guard_connects_to_the_address_it_checked(service, monkeypatch):
    """Resolution happens once, in the guard, and the socket goes to that address: a name only our
    resolver knows reaches the service, and a name with any private address is refused."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo
    port = int(service.url.rsplit(":", 1)[1])
    answers = {
        "svc.test": ["127.0.0.1"],
        "mixed.test": ["93.184.215.14", "10.0.0.1"],
    }

    async def fake_getaddrinfo(host, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]
        return await real(host, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    ok = await tools_for(_with_server(service.document(), f"http://svc.test:{port}"), allowed=("svc.test",))[
        "getWeather"
    ].ainvoke({"city": "rebind"})
    assert ok.startswith("HTTP 200 OK")
    assert service.requests_to("/weather/rebind")[-1]["headers"]["host"] == f"svc.test:{port}"
    refused = await tools_for(_with_server(service.document(), f"http://mixed.test:{port}"))["getWeather"].ainvoke(
        {"city": "x"}
    )
    assert refused.startswith("Error: refused to connect to 'mixed.test'") and "10.0.0.1" in refused


@pytest.mark.asyncio
async def test_redirects_are_checked_at_every_hop(service):
    port = service.url.rsplit(":", 1)[1]
    creds = {"type": "api_key", "header": "X-Api-Key", "value": API_KEY}
    tool = tools_for(service.document(), credentials=creds)["redirect"]
    for target, shown in ((f"http://localhost:{port}/weather/x", "localhost"), ("http://10.0.0.1/x", "10.0.0.1")):
        before = len(service.requests)
        out = await tool.ainvoke({"to": target})
        assert out.startswith(f"Error: refused to connect to '{shown}'"), out
        assert len(service.requests) == before + 1  # only the redirecting request itself

    # Same origin: followed, with credentials.
    out = await tool.ainvoke({"to": "/echo-headers"})
    assert out.startswith("HTTP 200 OK") and body_of(out)["X-Api-Key"] == "[REDACTED]"

    # Another (allowed) origin: followed, without credentials.
    tool = tools_for(service.document(), credentials=creds, allowed=("127.0.0.1", "localhost"))["redirect"]
    out = await tool.ainvoke({"to": f"http://localhost:{port}/echo-headers"})
    assert out.startswith("HTTP 200 OK")
    assert "X-Api-Key" not in body_of(out) and "x-api-key" not in service.requests[-1]["headers"]


# --- storage helpers -----------------------------------------------------------------------------


def test_storing_credentials_needs_a_secret_key():
    creds = Credentials.model_validate({"type": "bearer", "token": BEARER_TOKEN})
    with pytest.raises(InvalidRequest) as exc:
        actions.seal(Settings(secret_key=None), creds)
    assert exc.value.param == "auth" and "ASSISTGRAPH_SECRET_KEY must be set" in exc.value.message
    sealed = actions.seal(Settings(secret_key=SECRET_KEY), creds)
    assert BEARER_TOKEN.encode() not in sealed
    assert actions.unseal(Settings(secret_key=SECRET_KEY), sealed) == {"type": "bearer", "token": BEARER_TOKEN}
    assert actions.seal(Settings(secret_key=None), None) is None


# --- the API -----------------------------------------------------------------------------------


def create(client: openai.OpenAI, **body) -> dict:
    return client.post("/actions", cast_to=object, body=body)


def modify(client: openai.OpenAI, action_id: str, **body) -> dict:
    return client.post(f"/actions/{action_id}", cast_to=object, body=body)


def only(doc: dict, *paths: str) -> dict:
    """`doc` with only the operations under `paths`."""
    return {**doc, "paths": {path: doc["paths"][path] for path in paths}}


def raw_text(client: openai.OpenAI, method: str, path: str, **kw) -> str:
    response = getattr(client, method)(path, cast_to=httpx.Response, **kw)
    return response.text


def test_create_from_json_and_yaml_get_and_delete(client, service):
    created = create(
        client,
        openapi=service.document(),
        auth={"type": "bearer", "token": BEARER_TOKEN},
        metadata={"team": "ops"},
    )
    assert created["id"].startswith("action_") and created["object"] == "action"
    assert isinstance(created["created_at"], int)
    assert created["name"] == "Test service" and created["description"] == "Weather and orders for tests."
    assert created["server_url"] == service.url
    assert created["auth"] == {"type": "bearer"} and created["metadata"] == {"team": "ops"}
    weather = {"name": "getWeather", "method": "GET", "path": "/weather/{city}", "description": "Current weather in a city"}
    assert weather in created["operations"]

    from_yaml = create(
        client,
        openapi=yaml.safe_dump(service.document(), sort_keys=False),
        name="From YAML",
        description="described here",
        auth={"type": "api_key", "header": "X-Api-Key", "value": API_KEY},
    )
    assert from_yaml["name"] == "From YAML" and from_yaml["description"] == "described here"
    assert from_yaml["auth"] == {"type": "api_key", "header": "X-Api-Key"}
    assert from_yaml["operations"] == created["operations"]
    from_json_text = create(client, openapi=json.dumps(service.document()))
    assert from_json_text["auth"] == {"type": "none"}

    assert client.get(f"/actions/{created['id']}", cast_to=object) == created
    deleted = client.delete(f"/actions/{created['id']}", cast_to=object)
    assert deleted == {"id": created["id"], "object": "action.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.get(f"/actions/{created['id']}", cast_to=object)
    with pytest.raises(openai.NotFoundError):
        client.delete(f"/actions/{created['id']}", cast_to=object)


def test_list_paginates(client, service):
    ids = [create(client, openapi=service.document(), name=f"p{i}")["id"] for i in range(3)]
    page = client.get("/actions", cast_to=object, options={"params": {"limit": 2}})
    assert page["object"] == "list" and [a["id"] for a in page["data"]] == ids[::-1][:2] and page["has_more"]
    assert page["first_id"] == ids[2] and page["last_id"] == ids[1]
    rest = client.get("/actions", cast_to=object, options={"params": {"limit": 100, "after": page["last_id"]}})
    assert rest["data"][0]["id"] == ids[0]
    asc = client.get("/actions", cast_to=object, options={"params": {"limit": 2, "order": "asc", "after": ids[0]}})
    assert [a["id"] for a in asc["data"]] == ids[1:]
    before = client.get("/actions", cast_to=object, options={"params": {"limit": 1, "before": ids[0]}})
    assert [a["id"] for a in before["data"]] == [ids[1]]


def test_unknown_and_malformed_ids(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.get("/actions/action_doesnotexist", cast_to=object)
    assert exc.value.body == {
        "message": "No action found with id 'action_doesnotexist'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.NotFoundError) as modified:
        modify(client, "action_doesnotexist", name="x")
    assert modified.value.body == exc.value.body
    for call in (lambda: client.get("/actions/asst_123", cast_to=object), lambda: modify(client, "asst_123", name="x")):
        with pytest.raises(openai.BadRequestError) as bad:
            call()
        assert bad.value.param == "action_id"


@pytest.mark.parametrize(
    "openapi, fragment",
    [
        ({"swagger": "2.0", "paths": {}}, "Swagger 2.0"),
        ("openapi: 3.0.0\npaths: {}\n", "no 'paths'"),
        ({**BASE, "servers": [{"url": "/relative"}], "paths": OK_PATHS}, "relative server URLs"),
        ("{not json", "not valid JSON"),
    ],
)
def test_invalid_documents_are_400s_on_openapi(client, openapi, fragment):
    with pytest.raises(openai.BadRequestError) as exc:
        create(client, openapi=openapi)
    assert exc.value.param == "openapi" and exc.value.type == "invalid_request_error"
    message = exc.value.body["message"]
    assert message.startswith("Invalid value for 'openapi': ") and fragment in message


def test_invalid_credentials_are_400s_on_auth(client, service):
    for auth, param in (
        ({"type": "bearer"}, "auth.token"),
        ({"type": "bearer", "token": BEARER_TOKEN, "header": "X"}, "auth.header"),
        ({"type": "oauth", "token": BEARER_TOKEN}, "auth.type"),
        ({"type": "api_key", "header": "Content-Length", "value": API_KEY}, "auth.header"),
        ({"type": "basic", "username": BASIC_USER, "password": BASIC_PASSWORD + "\n"}, "auth.password"),
    ):
        with pytest.raises(openai.BadRequestError) as exc:
            create(client, openapi=service.document(), auth=auth)
        assert exc.value.param == param, exc.value.body
        for secret in SECRETS:
            assert secret not in exc.value.response.text


def test_modify_changes_only_the_fields_given(client, service):
    created = create(
        client,
        openapi=service.document(),
        name="Mine",
        auth={"type": "bearer", "token": BEARER_TOKEN},
        metadata={"team": "ops"},
    )
    renamed = modify(client, created["id"], name="Renamed")
    assert renamed == {**created, "name": "Renamed"}
    described = modify(client, created["id"], description="Weather only, soon.", metadata={"team": "dev"})
    assert described == {**renamed, "description": "Weather only, soon.", "metadata": {"team": "dev"}}

    # A new document (here as YAML text) brings its server and operations; the rest stays.
    moved = service.document(server_url=service.url + "/v2")
    narrowed = modify(client, created["id"], openapi=yaml.safe_dump(only(moved, "/weather/{city}")))
    assert narrowed["server_url"] == service.url + "/v2"
    assert [op["name"] for op in narrowed["operations"]] == ["getWeather"]
    assert narrowed == {**described, "server_url": narrowed["server_url"], "operations": narrowed["operations"]}
    assert client.get(f"/actions/{created['id']}", cast_to=object) == narrowed

    # `null` means what leaving the field out means on create.
    reset = modify(client, created["id"], name=None, description=None, metadata=None)
    assert reset["name"] == "Test service" and reset["description"] == "Weather and orders for tests."
    assert reset["metadata"] == {} and reset["auth"] == {"type": "bearer"}
    assert modify(client, created["id"]) == reset == client.get(f"/actions/{created['id']}", cast_to=object)


@pytest.mark.asyncio
async def test_refused_modifications_change_nothing(client, service, database_url):
    action = create(client, openapi=service.document(), auth={"type": "bearer", "token": BEARER_TOKEN})
    refused = [
        ({"openapi": {"swagger": "2.0", "paths": {}}, "name": "changed"}, "openapi"),
        ({"openapi": "{not json", "auth": None}, "openapi"),
        ({"openapi": {**BASE, "servers": [{"url": "/relative"}], "paths": OK_PATHS}}, "openapi"),
        ({"openapi": None}, "openapi"),
        ({"auth": {"type": "bearer"}, "openapi": only(service.document(), "/keyed")}, "auth.token"),
        ({"auth": {"type": "oauth", "token": API_KEY}, "name": "changed"}, "auth.type"),
        ({"auth": {"type": "api_key", "header": "Host", "value": API_KEY}}, "auth.header"),
        ({"name": "", "auth": None}, "name"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"tools": [], "name": "changed"}, "tools"),
    ]
    for body, param in refused:
        with pytest.raises(openai.BadRequestError) as exc:
            modify(client, action["id"], **body)
        assert exc.value.param == param, exc.value.body
        if param == "openapi":
            assert exc.value.body["message"].startswith("Invalid value for 'openapi': "), exc.value.body
        for secret in SECRETS:
            assert secret not in exc.value.response.text
    assert client.get(f"/actions/{action['id']}", cast_to=object) == action
    # The stored document and credentials too: the same tools, still authorised.
    settings = Settings(secret_key=SECRET_KEY, actions_allowed_hosts=["127.0.0.1"], action_timeout=5)
    async with AsyncConnectionPool(database_url, kwargs={"row_factory": dict_row}, open=False) as pool:
        tools = {t.name: t for t in await actions.tools_for_run(pool, settings, "default", [action["id"]], {})}
    assert sorted(tools) == sorted(op["name"] for op in action["operations"])
    assert (await tools["getProfile"].ainvoke({})).startswith("HTTP 200 OK")


def test_secrets_never_appear_in_responses_or_logs(client, server, service):
    created = [
        create(client, openapi=service.document(), auth={"type": "bearer", "token": BEARER_TOKEN}),
        create(client, openapi=service.document(), auth={"type": "api_key", "value": API_KEY}),
        create(
            client,
            openapi=service.document(),
            auth={"type": "basic", "username": BASIC_USER, "password": BASIC_PASSWORD},
        ),
    ]
    created[0] = modify(client, created[0]["id"], auth={"type": "bearer", "token": BEARER_TOKEN}, name="again")
    created[1] = modify(client, created[1]["id"], openapi=service.document(), auth=None)
    texts = [json.dumps(created), raw_text(client, "get", "/actions", options={"params": {"limit": 100}})]
    texts += [raw_text(client, "get", f"/actions/{a['id']}") for a in created]
    texts += [raw_text(client, "delete", f"/actions/{a['id']}") for a in created]
    texts.append(server.log())
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


@pytest.mark.asyncio
async def test_tools_for_run_use_stored_or_run_credentials(client, service, database_url):
    action = create(client, openapi=service.document(), auth={"type": "bearer", "token": BEARER_TOKEN})
    other = create(client, openapi=service.document(), name="second copy")
    settings = Settings(secret_key=SECRET_KEY, actions_allowed_hosts=["127.0.0.1"], action_timeout=5)
    async with AsyncConnectionPool(database_url, kwargs={"row_factory": dict_row}, open=False) as pool:
        async with pool.connection() as conn:
            assert await actions.missing_actions(conn, "default", [action["id"], "action_nope"]) == ["action_nope"]
            assert await actions.missing_actions(conn, "someone-else", [action["id"]]) == [action["id"]]
            wrong = {action["id"]: {"type": "bearer", "token": "a-wrong-token"}}
            sealed = await actions.seal_run_credentials(conn, settings, "default", wrong)
        tools = await actions.tools_for_run(
            pool, settings, "default", [action["id"], other["id"], "action_nope"], {}, taken_names={"keyed"}
        )
        names = [t.name for t in tools]
        assert len(names) == len(set(names)) and "keyed_2" in names and "getProfile_2" in names
        by_name = {t.name: t for t in tools}
        assert (await by_name["getProfile"].ainvoke({})).startswith("HTTP 200 OK")  # stored credentials
        assert (await by_name["getProfile_2"].ainvoke({})).startswith("Error: HTTP 401")  # none stored

        tools = await actions.tools_for_run(pool, settings, "default", [action["id"]], {"action_credentials": sealed})
        profile = next(t for t in tools if t.name == "getProfile")
        assert (await profile.ainvoke({})).startswith("Error: HTTP 401")
        assert service.requests_to("/secure/profile")[-1]["headers"]["authorization"] == "Bearer a-wrong-token"

        assert await actions.tools_for_run(pool, settings, "someone-else", [action["id"]], {}) == []


def test_actions_belong_to_their_tenant(auth_server, service):
    first, second = new_key(auth_server, name="actions A"), new_key(auth_server, name="actions B")
    mine = create(as_key(auth_server, first), openapi=service.document())
    theirs = as_key(auth_server, second)
    with pytest.raises(openai.NotFoundError):
        theirs.get(f"/actions/{mine['id']}", cast_to=object)
    with pytest.raises(openai.NotFoundError):
        theirs.delete(f"/actions/{mine['id']}", cast_to=object)
    with pytest.raises(openai.NotFoundError):
        modify(theirs, mine["id"], name="taken over", openapi=service.document())
    listed = theirs.get("/actions", cast_to=object, options={"params": {"limit": 100}})
    assert mine["id"] not in [a["id"] for a in listed["data"]]
    assert as_key(auth_server, first).get(f"/actions/{mine['id']}", cast_to=object) == mine


# --- actions in runs ---------------------------------------------------------------------------


def run_texts(client: openai.OpenAI, thread_id: str, run_id: str) -> list[str]:
    """Everything a client can read about a run, as raw JSON text."""
    return [
        raw_text(client, "get", f"/threads/{thread_id}/runs/{run_id}"),
        raw_text(client, "get", f"/threads/{thread_id}/runs/{run_id}/steps"),
        raw_text(client, "get", f"/threads/{thread_id}/messages"),
    ]


def test_an_action_completes_a_polled_run(client, server, scripted, model_name, service):
    action = create(client, openapi=service.document(), auth={"type": "bearer", "token": BEARER_TOKEN})
    scripted.script(
        model_name,
        [
            {
                "tool_calls": [
                    {"name": "getWeather", "arguments": {"city": "Paris", "units": "metric"}},
                    {"name": "getProfile", "arguments": {}},
                ]
            },
            {"content": "21 degrees in Paris, Ada."},
        ],
    )
    assistant = enabling_assistant(client, model_name, "action", action["id"])
    assert action["id"] in assistant.tools[0].function.description

    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "Weather in Paris? And who am I?"}]},
        poll_interval_ms=20,
    )
    assert run.status == "completed", run.last_error
    # Each operation was offered to the model as a tool with its schema.
    offered = offered_tools(scripted, model_name)
    assert {"getWeather", "createOrder", "getProfile"} <= set(offered)
    assert offered["getWeather"]["parameters"]["required"] == ["city"]
    assert service.requests_to("/weather/Paris")[-1]["query"] == {"units": ["metric"]}
    assert service.requests_to("/secure/profile")[-1]["headers"]["authorization"] == f"Bearer {BEARER_TOKEN}"

    step = client.beta.threads.runs.steps.list(thread_id=run.thread_id, run_id=run.id, order="asc").data[0]
    outputs = {c.function.name: c.function.output for c in step.step_details.tool_calls}
    assert outputs["getWeather"].startswith("HTTP 200") and body_of(outputs["getWeather"])["city"] == "Paris"
    assert body_of(outputs["getProfile"]) == {"name": "Ada"}
    for text in run_texts(client, run.thread_id, run.id) + [server.log()]:
        assert BEARER_TOKEN not in text


def test_run_credentials_stream_and_never_show(client, server, scripted, model_name, service):
    action = create(client, openapi=service.document())  # nothing stored
    scripted.script(
        model_name,
        [{"tool_calls": [{"name": "keyed", "arguments": {}}]}, {"content": "The key worked."}],
    )
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "action", "id": action["id"]}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Call the keyed endpoint."}])
    raw_events: list[str] = []
    with client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        extra_body={"action_credentials": {action["id"]: {"type": "api_key", "header": "X-Api-Key", "value": API_KEY}}},
    ) as stream:
        for event in stream:
            raw_events.append(event.model_dump_json())
        run = stream.get_final_run()
    assert run.status == "completed", run.last_error
    assert service.requests_to("/keyed")[-1]["headers"]["x-api-key"] == API_KEY
    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
    assert step.step_details.tool_calls[0].function.output.startswith("HTTP 200")
    for text in raw_events + run_texts(client, thread.id, run.id) + [server.log()]:
        assert API_KEY not in text

    # Without them, the same call fails and the model is told so.
    scripted.script(model_name, [{"tool_calls": [{"name": "keyed", "arguments": {}}]}, {"content": "No key."}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    assert run.status == "completed"
    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
    assert step.step_details.tool_calls[0].function.output.startswith("Error: HTTP 401")


def test_private_addresses_are_refused_in_runs(client, scripted, model_name, service):
    port = service.url.rsplit(":", 1)[1]
    # `localhost` is not on the test server's allow-list (127.0.0.1 is).
    action = create(client, openapi=_with_server(service.document(), f"http://localhost:{port}"))
    scripted.script(
        model_name, [{"tool_calls": [{"name": "getWeather", "arguments": {"city": "Oslo"}}]}, {"content": "Refused."}]
    )
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "action", "id": action["id"]}])
    before = len(service.requests_to("/weather/Oslo"))
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "Oslo?"}]}, poll_interval_ms=20
    )
    assert run.status == "completed", run.last_error
    step = client.beta.threads.runs.steps.list(thread_id=run.thread_id, run_id=run.id, order="asc").data[0]
    assert step.step_details.tool_calls[0].function.output.startswith("Error: refused to connect to 'localhost'")
    assert len(service.requests_to("/weather/Oslo")) == before


def test_actions_in_tools_and_run_credentials_are_checked(client, model_name, service):
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.create(model=model_name, tools=[{"type": "action", "id": "action_doesnotexist"}])
    assert caught.value.body["param"] == "tools[0].id"
    action = create(client, openapi=service.document())
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "action", "id": action["id"]}])
    thread = client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant.id,
            extra_body={"action_credentials": {"action_doesnotexist": {"type": "bearer", "token": BEARER_TOKEN}}},
        )
    assert caught.value.body["param"] == "action_credentials"
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant.id,
            extra_body={"action_credentials": {action["id"]: {"type": "bearer"}}},
        )
    assert caught.value.body["param"] == f"action_credentials.{action['id']}.token"
    assert BEARER_TOKEN not in caught.value.response.text
    # A deleted action is simply no longer offered: the run still works.
    client.delete(f"/actions/{action['id']}", cast_to=object)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    assert run.status == "completed", run.last_error


def test_a_modified_action_is_used_by_the_next_run(client, server, scripted, model_name, service):
    """Runs build an action's tools from what is stored when they start: a new document and new
    credentials reach assistants that already enable the action, and so does their removal."""
    action = create(client, openapi=only(service.document(), "/weather/{city}"))
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "action", "id": action["id"]}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Call the keyed endpoint."}])

    def run_calling_keyed() -> str:
        scripted.script(model_name, [{"tool_calls": [{"name": "keyed", "arguments": {}}]}, {"content": "Done."}])
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20
        )
        assert run.status == "completed", run.last_error
        offered = set(offered_tools(scripted, model_name, -2))
        assert "keyed" in offered and "getProfile" in offered
        step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
        texts.extend(run_texts(client, thread.id, run.id))
        return step.step_details.tool_calls[0].function.output

    texts: list[str] = []
    modified = modify(
        client,
        action["id"],
        openapi=service.document(),
        auth={"type": "api_key", "header": "X-Api-Key", "value": API_KEY},
    )
    assert "keyed" in [op["name"] for op in modified["operations"]]
    assert run_calling_keyed().startswith("HTTP 200 OK")
    assert service.requests_to("/keyed")[-1]["headers"]["x-api-key"] == API_KEY

    removed = modify(client, action["id"], auth=None)
    assert removed == {**modified, "auth": {"type": "none"}}
    assert run_calling_keyed().startswith("Error: HTTP 401")
    assert "x-api-key" not in service.requests_to("/keyed")[-1]["headers"]
    for text in texts + [json.dumps([modified, removed]), server.log()]:
        assert API_KEY not in text
