"""CRUD, pagination and error contract of assistants, threads and messages.

Everything goes through the real server: the official SDK in strict mode for the happy paths and the
SDK's error mapping, raw httpx where the exact error body and status matter.
"""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from tests.conftest import assert_error as openai_error
from tests.conftest import sdk

FUNCTION_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "description": "A single answer.",
        "schema": {"type": "object", "properties": {"value": {"type": "string"}}},
        "strict": True,
    },
}


def unknown(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


@pytest.fixture
def http(server) -> httpx.Client:
    """A raw client on the /v1 base URL, for checking bodies and statuses byte for byte."""
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer sk-client"}, timeout=10) as c:
        yield c


def assert_error(resp: httpx.Response, status: int, *, param: str | None = None, message: str | None = None) -> dict:
    """An OpenAI error body (never FastAPI's 422 `detail` shape) without a code, on a response that
    still carries the poll header."""
    assert resp.status_code != 422
    error = openai_error(resp, status, param=param, message=message)
    assert error["code"] is None
    assert "openai-poll-after-ms" in resp.headers
    return error


# --- assistants --------------------------------------------------------------------------------


def test_create_assistant_with_every_field(client, model_name):
    assistant = client.beta.assistants.create(
        model=model_name,
        name="Weather bot",
        description="Answers weather questions.",
        instructions="Be brief.",
        tools=[FUNCTION_TOOL, {"type": "code_interpreter"}, {"type": "file_search", "file_search": {"max_num_results": 7}}],
        tool_resources={"code_interpreter": {"file_ids": []}, "file_search": {"vector_store_ids": []}},
        metadata={"team": "core", "env": "test"},
        temperature=0.3,
        top_p=0.9,
        response_format=JSON_SCHEMA_FORMAT,
    )
    assert assistant.id.startswith("asst_")
    assert assistant.object == "assistant"
    assert isinstance(assistant.created_at, int) and assistant.created_at > 1_600_000_000
    assert (assistant.name, assistant.description, assistant.instructions) == (
        "Weather bot",
        "Answers weather questions.",
        "Be brief.",
    )
    assert assistant.model == model_name
    assert [t.type for t in assistant.tools] == ["function", "code_interpreter", "file_search"]
    fn = assistant.tools[0].function
    assert (fn.name, fn.description, fn.strict) == ("get_weather", "Current weather of a city.", True)
    assert fn.parameters == FUNCTION_TOOL["function"]["parameters"]
    assert assistant.tools[2].file_search.max_num_results == 7
    assert assistant.tools[2].file_search.ranking_options.ranker == "auto"
    assert assistant.metadata == {"team": "core", "env": "test"}
    assert (assistant.temperature, assistant.top_p) == (0.3, 0.9)
    assert assistant.response_format.type == "json_schema"
    assert assistant.response_format.json_schema.name == "answer"
    assert assistant.response_format.json_schema.schema_ == JSON_SCHEMA_FORMAT["json_schema"]["schema"]
    assert assistant.response_format.json_schema.strict is True
    assert assistant.tool_resources.code_interpreter.file_ids == []
    assert assistant.tool_resources.file_search.vector_store_ids == []

    assert client.beta.assistants.retrieve(assistant.id) == assistant


def test_create_assistant_defaults(client, http, model_name):
    """Only `model` is required; every required field comes back, null or empty where unset."""
    assistant = client.beta.assistants.create(model=model_name)
    raw = http.get(f"/assistants/{assistant.id}").json()
    assert raw == {
        "id": assistant.id,
        "object": "assistant",
        "created_at": assistant.created_at,
        "name": None,
        "description": None,
        "model": model_name,
        "instructions": None,
        "tools": [],
        "tool_resources": {},
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "response_format": "auto",
        "reasoning_effort": None,
    }


@pytest.mark.parametrize(
    "response_format",
    ["auto", {"type": "text"}, {"type": "json_object"}, JSON_SCHEMA_FORMAT],
    ids=["auto", "text", "json_object", "json_schema"],
)
def test_response_format_variants_round_trip(http, model_name, response_format):
    created = http.post("/assistants", json={"model": model_name, "response_format": response_format})
    assert created.status_code == 200, created.text
    assert created.json()["response_format"] == response_format
    assert http.get(f"/assistants/{created.json()['id']}").json()["response_format"] == response_format


def test_modify_assistant_changes_only_given_fields(client, model_name):
    assistant = client.beta.assistants.create(
        model=model_name, name="before", instructions="keep me", tools=[{"type": "code_interpreter"}],
        metadata={"a": "1"}, temperature=0.5,
    )
    other_model = f"{model_name}-b"
    modified = client.beta.assistants.update(
        assistant.id,
        name="after",
        model=other_model,
        tools=[FUNCTION_TOOL],
        metadata={"b": "2"},
        top_p=0.5,
        response_format={"type": "json_object"},
    )
    assert modified.id == assistant.id
    assert modified.created_at == assistant.created_at
    assert modified.name == "after"
    assert modified.model == other_model
    assert modified.instructions == "keep me"
    assert [t.type for t in modified.tools] == ["function"]
    assert modified.metadata == {"b": "2"}  # metadata is replaced, not merged
    assert (modified.temperature, modified.top_p) == (0.5, 0.5)
    assert modified.response_format.type == "json_object"
    assert client.beta.assistants.retrieve(assistant.id) == modified

    cleared = client.beta.assistants.update(assistant.id, name=None, tools=[], metadata={})
    assert (cleared.name, cleared.tools, cleared.metadata) == (None, [], {})
    assert cleared.model == other_model


def test_delete_assistant(client, http, model_name):
    assistant = client.beta.assistants.create(model=model_name)
    deleted = client.beta.assistants.delete(assistant.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (assistant.id, "assistant.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(assistant.id)
    assert_error(
        http.delete(f"/assistants/{assistant.id}"), 404, message=f"No assistant found with id '{assistant.id}'."
    )
    assert assistant.id not in {a.id for a in client.beta.assistants.list(limit=100, order="desc")}


def test_list_assistants_contains_new_ones_newest_first(client, model_name):
    ids = [client.beta.assistants.create(model=model_name, name=f"a{i}").id for i in range(3)]
    page = client.beta.assistants.list(limit=3)
    assert page.object == "list"
    assert [a.id for a in page.data] == ids[::-1]
    assert (page.first_id, page.last_id) == (ids[2], ids[0])


# --- threads -----------------------------------------------------------------------------------


def test_create_empty_thread(client, http):
    thread = client.beta.threads.create()
    assert thread.id.startswith("thread_")
    assert thread.object == "thread"
    assert thread.metadata == {}
    assert http.get(f"/threads/{thread.id}").json() == {
        "id": thread.id,
        "object": "thread",
        "created_at": thread.created_at,
        "tool_resources": {},
        "metadata": {},
    }
    assert client.beta.threads.messages.list(thread.id).data == []


def test_create_thread_with_messages_metadata_and_tool_resources(client):
    thread = client.beta.threads.create(
        messages=[
            {"role": "user", "content": "first", "metadata": {"n": "1"}},
            {"role": "assistant", "content": [{"type": "text", "text": "second"}]},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
        ],
        metadata={"user": "u1"},
        tool_resources={"code_interpreter": {"file_ids": []}},
    )
    assert thread.metadata == {"user": "u1"}
    assert thread.tool_resources.code_interpreter.file_ids == []
    assert client.beta.threads.retrieve(thread.id) == thread

    messages = client.beta.threads.messages.list(thread.id, order="asc").data
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert all(m.thread_id == thread.id and m.status == "completed" for m in messages)
    assert messages[0].content[0].text.value == "first"
    assert messages[0].metadata == {"n": "1"}
    assert messages[1].content[0].text.value == "second"
    assert messages[2].content[0].type == "image_url"
    assert messages[2].content[0].image_url.url == "https://example.com/a.png"


def test_modify_thread(client):
    thread = client.beta.threads.create(metadata={"a": "1"})
    modified = client.beta.threads.update(
        thread.id, metadata={"b": "2"}, tool_resources={"code_interpreter": {"file_ids": []}}
    )
    assert modified.id == thread.id
    assert modified.created_at == thread.created_at
    assert modified.metadata == {"b": "2"}
    assert modified.tool_resources.code_interpreter.file_ids == []
    assert client.beta.threads.retrieve(thread.id) == modified
    # Omitted fields are left alone.
    assert client.beta.threads.update(thread.id).metadata == {"b": "2"}


def test_delete_thread_removes_it_and_its_messages(client, http):
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    message_id = client.beta.threads.messages.list(thread.id).data[0].id
    deleted = client.beta.threads.delete(thread.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (thread.id, "thread.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)
    message = f"No thread found with id '{thread.id}'."
    assert_error(http.get(f"/threads/{thread.id}/messages"), 404, message=message)
    assert_error(http.delete(f"/threads/{thread.id}"), 404, message=message)
    assert_error(http.get(f"/threads/{thread.id}/messages/{message_id}"), 404)


# --- messages ----------------------------------------------------------------------------------


def test_create_message_with_string_content(client, http):
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(thread.id, role="user", content="Hello?", metadata={"k": "v"})
    assert message.id.startswith("msg_")
    assert message.object == "thread.message"
    assert message.thread_id == thread.id
    assert message.role == "user"
    assert message.status == "completed"
    assert message.assistant_id is None and message.run_id is None
    assert message.metadata == {"k": "v"}
    raw = http.get(f"/threads/{thread.id}/messages/{message.id}").json()
    assert raw["content"] == [{"type": "text", "text": {"value": "Hello?", "annotations": []}}]
    assert raw["attachments"] == []
    assert (raw["incomplete_details"], raw["incomplete_at"]) == (None, None)
    assert raw["completed_at"] == raw["created_at"] == message.created_at


def test_create_message_with_parts_and_assistant_role(client, http):
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(
        thread.id,
        role="assistant",
        content=[
            {"type": "text", "text": "look:"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/dog.png"}},
        ],
    )
    assert message.role == "assistant"
    raw = http.get(f"/threads/{thread.id}/messages/{message.id}").json()
    assert raw["content"] == [
        {"type": "text", "text": {"value": "look:", "annotations": []}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/dog.png", "detail": "auto"}},
    ]
    assert client.beta.threads.messages.retrieve(message.id, thread_id=thread.id) == message


def test_modify_and_delete_message(client, http):
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(thread.id, role="user", content="x", metadata={"a": "1"})
    modified = client.beta.threads.messages.update(message.id, thread_id=thread.id, metadata={"b": "2"})
    assert modified.metadata == {"b": "2"}
    assert modified.content == message.content
    assert client.beta.threads.messages.retrieve(message.id, thread_id=thread.id).metadata == {"b": "2"}

    deleted = client.beta.threads.messages.delete(message.id, thread_id=thread.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (message.id, "thread.message.deleted", True)
    assert client.beta.threads.messages.list(thread.id).data == []
    not_found = f"No message found with id '{message.id}'."
    assert_error(http.get(f"/threads/{thread.id}/messages/{message.id}"), 404, message=not_found)
    assert_error(http.delete(f"/threads/{thread.id}/messages/{message.id}"), 404, message=not_found)


def test_message_of_another_thread_is_not_found(client, http):
    """A message is only addressable under its own thread."""
    mine = client.beta.threads.create()
    other = client.beta.threads.create()
    message = client.beta.threads.messages.create(mine.id, role="user", content="x")
    base = f"/threads/{other.id}/messages/{message.id}"
    for resp in (http.get(base), http.post(base, json={"metadata": {}}), http.delete(base)):
        assert_error(resp, 404, message=f"No message found with id '{message.id}'.")
    assert client.beta.threads.messages.retrieve(message.id, thread_id=mine.id).id == message.id


def test_messages_are_listed_newest_first_by_default(client):
    thread = client.beta.threads.create()
    ids = [client.beta.threads.messages.create(thread.id, role="user", content=str(i)).id for i in range(4)]
    assert [m.id for m in client.beta.threads.messages.list(thread.id).data] == ids[::-1]
    assert [m.id for m in client.beta.threads.messages.list(thread.id, order="asc").data] == ids


def test_list_messages_filtered_by_run_id(client, scripted, model_name):
    scripted.script(model_name, [{"content": "the answer"}])
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "question"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"

    everything = client.beta.threads.messages.list(thread.id).data
    assert [m.role for m in everything] == ["assistant", "user"]
    of_run = client.beta.threads.messages.list(thread.id, run_id=run.id)
    assert [m.id for m in of_run.data] == [everything[0].id]
    assert of_run.data[0].run_id == run.id
    assert of_run.data[0].assistant_id == assistant.id
    assert of_run.data[0].content[0].text.value == "the answer"
    assert of_run.has_more is False
    assert client.beta.threads.messages.list(thread.id, run_id=unknown("run_")).data == []


# --- pagination ----------------------------------------------------------------------------------


def ids_of(page) -> list[str]:
    return [item.id for item in page.data]


def assert_page(page, expected: list[str], has_more: bool) -> None:
    assert page.object == "list"
    assert ids_of(page) == expected
    assert page.first_id == (expected[0] if expected else None)
    assert page.last_id == (expected[-1] if expected else None)
    assert page.has_more is has_more


@pytest.fixture
def five_messages(client) -> tuple[str, list[str]]:
    """A thread with five messages m0..m4, in creation order."""
    thread = client.beta.threads.create()
    ids = [client.beta.threads.messages.create(thread.id, role="user", content=f"m{i}").id for i in range(5)]
    return thread.id, ids


def test_message_pages_ascending(client, five_messages):
    thread_id, m = five_messages
    page = client.beta.threads.messages.list
    assert_page(page(thread_id, order="asc", limit=2), [m[0], m[1]], True)
    assert_page(page(thread_id, order="asc", limit=2, after=m[1]), [m[2], m[3]], True)
    assert_page(page(thread_id, order="asc", limit=2, after=m[3]), [m[4]], False)
    assert_page(page(thread_id, order="asc", limit=2, after=m[4]), [], False)
    # `before` returns the items right before the cursor, still ascending.
    assert_page(page(thread_id, order="asc", limit=2, before=m[4]), [m[2], m[3]], True)
    assert_page(page(thread_id, order="asc", limit=2, before=m[2]), [m[0], m[1]], False)
    assert_page(page(thread_id, order="asc", limit=2, before=m[0]), [], False)
    assert_page(page(thread_id, order="asc", after=m[0], before=m[4]), [m[1], m[2], m[3]], False)
    assert_page(page(thread_id, order="asc", limit=5), m, False)
    assert_page(page(thread_id, order="asc", limit=100), m, False)


def test_message_pages_descending(client, five_messages):
    thread_id, m = five_messages
    page = client.beta.threads.messages.list
    assert_page(page(thread_id, order="desc", limit=2), [m[4], m[3]], True)
    assert_page(page(thread_id, order="desc", limit=2, after=m[3]), [m[2], m[1]], True)
    assert_page(page(thread_id, order="desc", limit=2, after=m[1]), [m[0]], False)
    assert_page(page(thread_id, order="desc", limit=2, after=m[0]), [], False)
    assert_page(page(thread_id, order="desc", limit=2, before=m[0]), [m[2], m[1]], True)
    assert_page(page(thread_id, order="desc", limit=2, before=m[2]), [m[4], m[3]], False)
    assert_page(page(thread_id, order="desc", limit=2, before=m[4]), [], False)
    assert_page(page(thread_id, order="desc", after=m[4], before=m[0]), [m[3], m[2], m[1]], False)
    # Default order is desc, default limit 20.
    assert_page(page(thread_id), m[::-1], False)


def test_default_page_size_is_20(client):
    thread = client.beta.threads.create(messages=[{"role": "user", "content": str(i)} for i in range(21)])
    page = client.beta.threads.messages.list(thread.id)
    assert len(page.data) == 20
    assert page.has_more is True
    assert [m.content[0].text.value for m in page.data] == [str(i) for i in range(20, 0, -1)]
    rest = client.beta.threads.messages.list(thread.id, after=page.last_id)
    assert [m.content[0].text.value for m in rest.data] == ["0"]
    assert rest.has_more is False


def test_message_pagination_raw_body(http, five_messages):
    """The list envelope carries exactly the keys the SDK's cursor page reads."""
    thread_id, m = five_messages
    body = http.get(f"/threads/{thread_id}/messages", params={"limit": 2, "order": "asc"}).json()
    assert set(body) == {"object", "data", "first_id", "last_id", "has_more"}
    assert (body["object"], body["first_id"], body["last_id"], body["has_more"]) == ("list", m[0], m[1], True)
    empty = http.get(f"/threads/{thread_id}/messages", params={"after": m[4], "order": "asc"}).json()
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_assistant_pages_in_both_directions(client, model_name):
    """Assistants are global, so every cursor is one of five fresh assistants."""
    a = [client.beta.assistants.create(model=model_name, name=f"p{i}").id for i in range(5)]
    page = client.beta.assistants.list
    assert_page(page(order="asc", limit=2, after=a[0]), [a[1], a[2]], True)
    assert_page(page(order="asc", limit=2, after=a[2]), [a[3], a[4]], False)
    assert_page(page(order="asc", limit=2, before=a[3]), [a[1], a[2]], True)
    assert_page(page(order="asc", after=a[0], before=a[4]), [a[1], a[2], a[3]], False)
    assert_page(page(order="desc", limit=2), [a[4], a[3]], True)
    assert_page(page(order="desc", limit=2, after=a[3]), [a[2], a[1]], True)
    assert_page(page(order="desc", limit=2, before=a[1]), [a[3], a[2]], True)
    assert_page(page(order="desc", limit=2, before=a[3]), [a[4]], False)
    assert_page(page(order="desc", after=a[4], before=a[0]), [a[3], a[2], a[1]], False)


@pytest.fixture
def counting_client(server):
    """An SDK client that records every HTTP request it sends."""
    requests: list[httpx.Request] = []
    with httpx.Client(event_hooks={"request": [requests.append]}) as http_client:
        client = openai.OpenAI(
            base_url=server.url, api_key="sk-client", _strict_response_validation=True, max_retries=0,
            http_client=http_client,
        )
        yield client, requests


def test_sdk_auto_pagination_iterates_every_assistant(counting_client, model_name):
    client, requests = counting_client
    mine = {client.beta.assistants.create(model=model_name).id for _ in range(5)}
    requests.clear()
    seen = [a.id for a in client.beta.assistants.list(limit=2)]
    pages = list(requests)
    assert len(seen) == len(set(seen)), "auto-pagination repeated an assistant"
    assert mine <= set(seen)
    assert len(pages) == (len(seen) + 1) // 2  # the last page says has_more=false
    assert all(r.url.params["limit"] == "2" for r in pages)
    assert [r.url.params.get("after") for r in pages[1:]] == seen[1::2][: len(pages) - 1]
    assert seen == [a.id for a in client.beta.assistants.list(limit=100)]


def test_sdk_auto_pagination_over_messages(client, five_messages):
    thread_id, m = five_messages
    assert [x.id for x in client.beta.threads.messages.list(thread_id, limit=2, order="asc")] == m
    assert [x.id for x in client.beta.threads.messages.list(thread_id, limit=2)] == m[::-1]
    pages = list(client.beta.threads.messages.list(thread_id, limit=2, order="asc").iter_pages())
    assert [ids_of(p) for p in pages] == [m[0:2], m[2:4], m[4:]]


@pytest.mark.asyncio
async def test_async_auto_pagination(aclient, model_name):
    mine = [(await aclient.beta.assistants.create(model=model_name)).id for _ in range(3)]
    seen = [a.id async for a in aclient.beta.assistants.list(limit=2, order="asc", after=mine[0])]
    assert seen == mine[1:]


@pytest.mark.asyncio
async def test_async_crud_round_trip(aclient, model_name):
    assistant = await aclient.beta.assistants.create(model=model_name, name="async", tools=[{"type": "file_search"}])
    assert (await aclient.beta.assistants.retrieve(assistant.id)) == assistant
    updated = await aclient.beta.assistants.update(assistant.id, description="d", metadata={"x": "y"})
    assert (updated.description, updated.metadata, updated.name) == ("d", {"x": "y"}, "async")

    thread = await aclient.beta.threads.create(metadata={"t": "1"})
    message = await aclient.beta.threads.messages.create(thread.id, role="user", content="hi")
    listed = await aclient.beta.threads.messages.list(thread.id)
    assert [x.id for x in listed.data] == [message.id]
    assert (await aclient.beta.threads.messages.delete(message.id, thread_id=thread.id)).deleted is True
    assert (await aclient.beta.threads.delete(thread.id)).object == "thread.deleted"
    assert (await aclient.beta.assistants.delete(assistant.id)).object == "assistant.deleted"
    with pytest.raises(openai.NotFoundError):
        await aclient.beta.threads.retrieve(thread.id)
    with pytest.raises(openai.BadRequestError):
        await aclient.beta.assistants.create(model=model_name, top_p=2)


# --- error bodies (raw HTTP) ----------------------------------------------------------------------


def test_unknown_ids_are_404(http):
    asst, thread, msg = unknown("asst_"), unknown("thread_"), unknown("msg_")
    cases = [
        (http.get(f"/assistants/{asst}"), f"No assistant found with id '{asst}'."),
        (http.post(f"/assistants/{asst}", json={"name": "x"}), f"No assistant found with id '{asst}'."),
        (http.delete(f"/assistants/{asst}"), f"No assistant found with id '{asst}'."),
        (http.get(f"/threads/{thread}"), f"No thread found with id '{thread}'."),
        (http.post(f"/threads/{thread}", json={}), f"No thread found with id '{thread}'."),
        (http.delete(f"/threads/{thread}"), f"No thread found with id '{thread}'."),
        (http.get(f"/threads/{thread}/messages"), f"No thread found with id '{thread}'."),
        (http.post(f"/threads/{thread}/messages", json={"role": "user", "content": "x"}),
         f"No thread found with id '{thread}'."),
    ]
    for resp, message in cases:
        assert_error(resp, 404, message=message)

    real_thread = http.post("/threads", json={}).json()["id"]
    for resp in (
        http.get(f"/threads/{real_thread}/messages/{msg}"),
        http.post(f"/threads/{real_thread}/messages/{msg}", json={"metadata": {}}),
        http.delete(f"/threads/{real_thread}/messages/{msg}"),
    ):
        assert_error(resp, 404, message=f"No message found with id '{msg}'.")


@pytest.mark.parametrize(
    "method, path, param, prefix",
    [
        ("GET", "/assistants/thread_abc", "assistant_id", "asst"),
        ("POST", "/assistants/msg_abc", "assistant_id", "asst"),
        ("DELETE", "/assistants/abc", "assistant_id", "asst"),
        ("GET", "/threads/asst_abc", "thread_id", "thread"),
        ("DELETE", "/threads/abc", "thread_id", "thread"),
        ("GET", "/threads/asst_abc/messages", "thread_id", "thread"),
        ("GET", "/threads/thread_abc/messages/asst_abc", "message_id", "msg"),
    ],
)
def test_wrong_id_prefix_is_400(http, method, path, param, prefix):
    body = {} if method == "POST" else None
    resp = http.request(method, path, json=body)
    bad_id = path.split("/")[-1] if param != "thread_id" else path.split("/")[2]
    assert_error(
        resp, 400, param=param, message=f"Invalid '{param}': '{bad_id}'. Expected an ID that begins with '{prefix}'."
    )


@pytest.mark.parametrize("path", ["/assistants", "/threads/{thread}/messages"])
@pytest.mark.parametrize(
    "query, param",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"order": "sideways"}, "order"),
    ],
)
def test_bad_list_parameters_are_400(http, path, query, param):
    thread = http.post("/threads", json={}).json()["id"]
    assert_error(http.get(path.format(thread=thread), params=query), 400, param=param)


def test_list_limit_bounds_are_inclusive(http):
    for limit in (1, 100):
        resp = http.get("/assistants", params={"limit": limit})
        assert resp.status_code == 200
        assert len(resp.json()["data"]) <= limit


def metadata_cases() -> list:
    return [
        pytest.param({f"k{i}": "v" for i in range(17)}, id="17-keys"),
        pytest.param({"k" * 65: "v"}, id="65-char-key"),
        pytest.param({"k": "v" * 513}, id="513-char-value"),
        pytest.param({"k": 1}, id="non-string-value"),
        pytest.param("not-a-map", id="not-a-map"),
    ]


@pytest.mark.parametrize("metadata", metadata_cases())
def test_invalid_metadata_is_400_everywhere(http, model_name, metadata):
    assistant = http.post("/assistants", json={"model": model_name}).json()["id"]
    thread = http.post("/threads", json={}).json()["id"]
    message = http.post(f"/threads/{thread}/messages", json={"role": "user", "content": "x"}).json()["id"]
    requests = [
        ("/assistants", {"model": model_name}),
        (f"/assistants/{assistant}", {}),
        ("/threads", {}),
        (f"/threads/{thread}", {}),
        (f"/threads/{thread}/messages", {"role": "user", "content": "x"}),
        (f"/threads/{thread}/messages/{message}", {}),
    ]
    for path, body in requests:
        error = assert_error(http.post(path, json={**body, "metadata": metadata}), 400, param=error_param(metadata))
        assert error["message"].startswith(f"Invalid value for '{error_param(metadata)}'")
    # Nested in a thread's initial messages, the param names the position.
    resp = http.post("/threads", json={"messages": [{"role": "user", "content": "x", "metadata": metadata}]})
    assert_error(resp, 400, param=f"messages[0].{error_param(metadata)}")


def error_param(metadata) -> str:
    if isinstance(metadata, dict) and metadata.get("k") == 1:
        return "metadata.k"
    return "metadata"


def test_metadata_at_the_limits_is_accepted(http, model_name):
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    resp = http.post("/assistants", json={"model": model_name, "metadata": metadata})
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"] == metadata


@pytest.mark.parametrize(
    "body, param, message",
    [
        pytest.param({}, "model", "Missing required parameter: 'model'.", id="missing-model"),
        pytest.param({"model": "m", "name": "n" * 257}, "name", None, id="long-name"),
        pytest.param({"model": "m", "description": "d" * 513}, "description", None, id="long-description"),
        pytest.param({"model": "m", "temperature": 3}, "temperature", None, id="temperature-3"),
        pytest.param({"model": "m", "temperature": -0.1}, "temperature", None, id="negative-temperature"),
        pytest.param({"model": "m", "top_p": 1.5}, "top_p", None, id="top-p"),
        pytest.param({"model": "m", "tools": [{"type": "browser"}]}, "tools[0].type", None, id="unknown-tool"),
        pytest.param({"model": "m", "tools": [{"type": "function", "function": {"name": "bad name"}}]},
                     "tools[0].function.name", None, id="bad-function-name"),
        pytest.param({"model": "m", "tools": [{"type": "function"}]}, "tools[0].function",
                     "Missing required parameter: 'tools[0].function'.", id="function-tool-without-function"),
        pytest.param({"model": "m", "tools": [{"type": "code_interpreter", "x": 1}]}, "tools[0].x",
                     "Unrecognized request argument supplied: tools[0].x", id="unknown-tool-field"),
        pytest.param({"model": "m", "tools": [{"type": "file_search", "file_search": {"max_num_results": 51}}]},
                     "tools[0].file_search.max_num_results", None, id="file-search-max-results"),
        pytest.param({"model": "m", "tools": [{"type": "code_interpreter"}] * 129}, "tools", None, id="129-tools"),
        pytest.param({"model": "m", "instructions": "i" * 256_001}, "instructions", None, id="long-instructions"),
        pytest.param({"model": "m", "tool_resources": {"code_interpreter": {"file_ids": ["f"] * 21}}},
                     "tool_resources.code_interpreter.file_ids", None, id="21-code-interpreter-files"),
        pytest.param({"model": "m", "tool_resources": {"file_search": {"vector_store_ids": ["a", "b"]}}},
                     "tool_resources.file_search.vector_store_ids", None, id="2-vector-stores"),
        pytest.param({"model": "m", "response_format": {"type": "xml"}}, "response_format", None,
                     id="unknown-response-format"),
        pytest.param({"model": "m", "response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
                     "response_format.json_schema.name", None, id="bad-json-schema-name"),
        pytest.param({"model": "m", "response_format": "json"}, "response_format", None, id="bad-response-format"),
        pytest.param({"model": "m", "unknown_field": 1}, "unknown_field",
                     "Unrecognized request argument supplied: unknown_field", id="unknown-field"),
        pytest.param({"model": 5}, "model", None, id="model-not-a-string"),
    ],
)
def test_invalid_assistant_bodies_are_400(http, body, param, message):
    assert_error(http.post("/assistants", json=body), 400, param=param, message=message)


def test_error_messages_name_the_field_and_the_rule(http):
    error = assert_error(http.post("/assistants", json={"model": "m", "name": "n" * 257}), 400, param="name")
    assert error["message"].startswith("Invalid value for 'name':")
    assert "256" in error["message"]
    # A union reports the branch the input was meant for, not "should be 'auto'" / "should be a string".
    error = assert_error(
        http.post("/assistants", json={"model": "m", "response_format": {"type": "xml"}}), 400, param="response_format"
    )
    assert "'xml'" in error["message"] and "json_schema" in error["message"]
    thread = http.post("/threads", json={}).json()["id"]
    error = assert_error(
        http.post(f"/threads/{thread}/messages", json={"role": "user", "content": []}), 400, param="content"
    )
    assert "at least 1 item" in error["message"]


def test_string_limits_are_inclusive(http, model_name):
    body = {"model": model_name, "name": "n" * 256, "description": "d" * 512, "temperature": 2, "top_p": 0}
    resp = http.post("/assistants", json=body)
    assert resp.status_code == 200, resp.text
    assert (resp.json()["name"], resp.json()["temperature"], resp.json()["top_p"]) == ("n" * 256, 2, 0)


def test_modify_assistant_validates_like_create(http, model_name):
    assistant = http.post("/assistants", json={"model": model_name}).json()["id"]
    assert_error(http.post(f"/assistants/{assistant}", json={"temperature": 3}), 400, param="temperature")
    assert_error(http.post(f"/assistants/{assistant}", json={"tools": [{"type": "web"}]}), 400, param="tools[0].type")
    assert_error(http.post(f"/assistants/{assistant}", json={"nope": True}), 400, param="nope")
    # The failed updates changed nothing.
    assert http.get(f"/assistants/{assistant}").json()["temperature"] == 1.0


@pytest.mark.parametrize(
    "body, param",
    [
        pytest.param({"role": "system", "content": "x"}, "role", id="system-role"),
        pytest.param({"content": "x"}, "role", id="missing-role"),
        pytest.param({"role": "user"}, "content", id="missing-content"),
        pytest.param({"role": "user", "content": []}, "content", id="empty-parts"),
        pytest.param({"role": "user", "content": [{"type": "video", "video": {}}]}, "content[0]", id="unknown-part"),
        pytest.param({"role": "user", "content": [{"type": "text"}]}, "content[0].text", id="text-part-without-text"),
        pytest.param({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "max"}}]},
                     "content[0].image_url.detail", id="bad-image-detail"),
        pytest.param({"role": "user", "content": 5}, "content", id="content-not-text"),
        pytest.param({"role": "user", "content": "x", "extra": 1}, "extra", id="unknown-field"),
    ],
)
def test_invalid_message_bodies_are_400(http, body, param):
    thread = http.post("/threads", json={}).json()["id"]
    assert_error(http.post(f"/threads/{thread}/messages", json=body), 400, param=param)
    assert_error(http.post("/threads", json={"messages": [body]}), 400, param=f"messages[0].{param}")
    assert http.get(f"/threads/{thread}/messages").json()["data"] == []


@pytest.mark.parametrize("path", ["/assistants", "/threads"])
def test_malformed_json_is_400(http, path):
    resp = http.post(path, content=b'{"model": ', headers={"content-type": "application/json"})
    error = assert_error(resp, 400)
    assert "parse the JSON body" in error["message"]


def test_non_object_body_is_400(http):
    assert_error(http.post("/assistants", json=["model"]), 400)
    assert_error(http.post("/threads", json="thread"), 400)


def test_missing_body_is_400_with_a_sensible_message(http):
    error = assert_error(http.post("/assistants"), 400)
    assert "None" not in error["message"]
    assert "body" in error["message"].lower()


def test_thread_create_accepts_an_empty_body(http):
    """The SDK sends `{}`, curl users often send nothing at all."""
    for resp in (http.post("/threads"), http.post("/threads", json={})):
        assert resp.status_code == 200
        assert resp.json()["object"] == "thread"


def test_unknown_url_is_404_with_openai_body(http, server):
    assert_error(http.get("/nope"), 404, message="Invalid URL: the requested path does not exist.")
    assert_error(http.post("/assistants/asst_x/nope", json={}), 404)
    root = server.url.removesuffix("/v1")
    assert_error(httpx.get(f"{root}/definitely/not/here"), 404)


def test_wrong_method_is_405_with_openai_body(http):
    assert_error(http.put("/assistants", json={}), 405)


# --- SDK error mapping ---------------------------------------------------------------------------


def test_sdk_raises_not_found(client):
    asst, thread, msg = unknown("asst_"), unknown("thread_"), unknown("msg_")
    calls = [
        lambda: client.beta.assistants.retrieve(asst),
        lambda: client.beta.assistants.update(asst, name="x"),
        lambda: client.beta.assistants.delete(asst),
        lambda: client.beta.threads.retrieve(thread),
        lambda: client.beta.threads.update(thread, metadata={}),
        lambda: client.beta.threads.delete(thread),
        lambda: client.beta.threads.messages.list(thread),
        lambda: client.beta.threads.messages.create(thread, role="user", content="x"),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as exc:
            call()
        assert exc.value.status_code == 404
        assert exc.value.type == "invalid_request_error"
        assert exc.value.param is None
    real = client.beta.threads.create()
    with pytest.raises(openai.NotFoundError, match=f"No message found with id '{msg}'"):
        client.beta.threads.messages.retrieve(msg, thread_id=real.id)
    with pytest.raises(openai.NotFoundError, match=f"No assistant found with id '{asst}'"):
        client.beta.assistants.retrieve(asst)
    with pytest.raises(openai.NotFoundError):
        client.get("/no/such/path", cast_to=object)


def test_sdk_raises_bad_request(client, model_name):
    thread = client.beta.threads.create()
    cases = [
        (lambda: client.beta.assistants.create(model=model_name, temperature=3), "temperature"),
        (lambda: client.beta.assistants.create(model=model_name, name="n" * 257), "name"),
        (lambda: client.beta.assistants.create(model=model_name, metadata={str(i): "v" for i in range(17)}),
         "metadata"),
        (lambda: client.beta.assistants.create(model=model_name, tools=[{"type": "browser"}]), "tools[0].type"),
        (lambda: client.beta.assistants.list(limit=101), "limit"),
        (lambda: client.beta.assistants.list(limit=0), "limit"),
        (lambda: client.beta.assistants.list(order="sideways"), "order"),
        (lambda: client.beta.assistants.retrieve("thread_abc"), "assistant_id"),
        (lambda: client.beta.threads.retrieve("asst_abc"), "thread_id"),
        (lambda: client.beta.threads.messages.retrieve("run_abc", thread_id=thread.id), "message_id"),
        (lambda: client.beta.threads.messages.create(thread.id, role="system", content="x"), "role"),
        (lambda: client.beta.threads.messages.list(thread.id, limit=500), "limit"),
        (lambda: client.beta.assistants.create(model=model_name, extra_body={"colour": "red"}), "colour"),
    ]
    for call, param in cases:
        with pytest.raises(openai.BadRequestError) as exc:
            call()
        assert exc.value.status_code == 400
        assert exc.value.type == "invalid_request_error"
        assert exc.value.param == param
        assert exc.value.code is None
    assert client.beta.threads.messages.list(thread.id).data == []


# --- mounts and headers ------------------------------------------------------------------------


def test_api_v1_mount(server, client, model_name):
    alt = sdk(server.url.removesuffix("/v1") + "/api/v1")
    created = alt.beta.assistants.create(model=model_name, name="via /api/v1")
    assert alt.beta.assistants.retrieve(created.id) == created
    # Same store behind both mounts.
    assert client.beta.assistants.retrieve(created.id) == created
    thread = alt.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    assert [m.thread_id for m in alt.beta.threads.messages.list(thread.id)] == [thread.id]
    with pytest.raises(openai.NotFoundError):
        alt.beta.assistants.retrieve(unknown("asst_"))


def test_every_response_has_poll_after_header(http, model_name):
    assistant = http.post("/assistants", json={"model": model_name})
    thread = http.post("/threads", json={})
    responses = [
        assistant,
        http.get("/assistants"),
        http.get(f"/assistants/{assistant.json()['id']}"),
        http.post(f"/assistants/{assistant.json()['id']}", json={"name": "x"}),
        thread,
        http.post(f"/threads/{thread.json()['id']}/messages", json={"role": "user", "content": "x"}),
        http.get(f"/threads/{thread.json()['id']}/messages"),
        http.delete(f"/threads/{thread.json()['id']}"),
        http.delete(f"/assistants/{assistant.json()['id']}"),
        http.get(f"/assistants/{unknown('asst_')}"),  # 404
        http.get("/assistants", params={"limit": 0}),  # 400 from validation
        http.get("/assistants/thread_x"),  # 400 from the id check
        http.get("/nowhere"),  # 404 unknown URL
        http.put("/assistants"),  # 405
    ]
    for resp in responses:
        value = resp.headers.get("openai-poll-after-ms")
        assert value is not None and value.isdigit(), (resp.request.method, resp.request.url, resp.status_code)
