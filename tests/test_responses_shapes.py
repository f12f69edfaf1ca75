"""Response objects as strict clients read them: every key of Open Responses' ResponseResource present,
numbers (OpenAI's defaults when the request gave none) for the sampling settings, and no null where
the schema wants a value — in plain answers, retrieved responses and every lifecycle event's snapshot."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
OBJECT = {"type": "object"}
ARRAY = {"type": "array"}


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


# Open Responses' ResponseResource: every key required; only those wrapped in `nullable` may be null.
RESPONSE_RESOURCE = {
    "type": "object",
    "properties": {
        "id": STRING,
        "object": {"const": "response"},
        "created_at": INTEGER,
        "completed_at": nullable(INTEGER),
        "status": {"enum": ["queued", "in_progress", "completed", "failed", "incomplete", "cancelled"]},
        "incomplete_details": nullable(OBJECT),
        "model": STRING,
        "previous_response_id": nullable(STRING),
        "instructions": nullable({"anyOf": [STRING, ARRAY]}),
        "output": ARRAY,
        "error": nullable(OBJECT),
        "tools": ARRAY,
        "tool_choice": {"anyOf": [STRING, OBJECT]},
        "truncation": {"enum": ["auto", "disabled"]},
        "parallel_tool_calls": BOOLEAN,
        "text": OBJECT,
        "top_p": NUMBER,
        "presence_penalty": NUMBER,
        "frequency_penalty": NUMBER,
        "top_logprobs": INTEGER,
        "temperature": NUMBER,
        "reasoning": nullable(OBJECT),
        "user": nullable(STRING),
        "usage": nullable(OBJECT),
        "max_output_tokens": nullable(INTEGER),
        "max_tool_calls": nullable(INTEGER),
        "store": BOOLEAN,
        "background": BOOLEAN,
        "service_tier": STRING,
        "metadata": OBJECT,
        "safety_identifier": nullable(STRING),
        "prompt_cache_key": nullable(STRING),
    },
}
RESPONSE_RESOURCE["required"] = sorted(RESPONSE_RESOURCE["properties"])

FILE_SEARCH_TOOL = {
    "type": "object",
    "required": ["type", "vector_store_ids", "max_num_results"],
    "properties": {"type": {"const": "file_search"}, "vector_store_ids": ARRAY, "max_num_results": INTEGER},
}


def check_resource(obj: dict) -> None:
    jsonschema.validate(obj, RESPONSE_RESOURCE)


def test_sampling_settings_default_to_openai_numbers(client, server, scripted, model_name):
    scripted.script(model_name, [{"content": "hi"}, {"content": "hi again"}])
    raw = httpx.post(f"{server.url}/responses", json={"model": model_name, "input": "hi"}, timeout=60)
    assert raw.status_code == 200, raw.text
    body = raw.json()
    check_resource(body)
    assert (body["temperature"], body["top_p"], body["top_logprobs"]) == (1.0, 1.0, 0)
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.0, 0.0)
    # Not sent to the model: the defaults are the model's own.
    (request,) = scripted.requests(model_name)
    assert "temperature" not in request["body"] and "top_p" not in request["body"]

    again = httpx.get(f"{server.url}/responses/{body['id']}", timeout=30).json()
    check_resource(again)
    assert again["temperature"] == 1.0 and again["presence_penalty"] == 0.0
    parsed = client.responses.retrieve(body["id"])  # strict parsing
    assert parsed.temperature == 1.0 and parsed.top_p == 1.0 and parsed.top_logprobs == 0

    given = client.responses.create(model=model_name, input="hi", temperature=0.3, top_p=0.5, top_logprobs=0)
    assert (given.temperature, given.top_p, given.top_logprobs) == (0.3, 0.5, 0)


def test_every_lifecycle_snapshot_is_a_response_resource(server, scripted, model_name):
    scripted.script(model_name, [{"content": "One, two, three."}])
    snapshots = []
    with httpx.stream(
        "POST", f"{server.url}/responses", json={"model": model_name, "input": "Count to 3.", "stream": True},
        timeout=60,
    ) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line.removeprefix("data: "))
                if "response" in event:
                    snapshots.append((event["type"], event["response"]))
    assert [t for t, _ in snapshots] == ["response.created", "response.in_progress", "response.completed"]
    for _, snapshot in snapshots:
        check_resource(snapshot)
        assert snapshot["temperature"] == 1.0 and snapshot["frequency_penalty"] == 0.0


@pytest.mark.parametrize("given", [None, 4])
def test_file_search_tool_echoes_an_integer(client, server, scripted, model_name, given):
    store = client.vector_stores.create(name="empty")
    tool = {"type": "file_search", "vector_store_ids": [store.id]}
    if given is not None:
        tool["max_num_results"] = given
    scripted.script(model_name, [{"content": "Nothing to search."}])
    raw = httpx.post(f"{server.url}/responses", json={"model": model_name, "input": "x", "tools": [tool]}, timeout=60)
    assert raw.status_code == 200, raw.text
    check_resource(raw.json())
    (shown,) = raw.json()["tools"]
    jsonschema.validate(shown, FILE_SEARCH_TOOL)
    assert shown["max_num_results"] == (given or 20)


def test_file_search_call_shows_its_queries_and_assistants_steps_do_not(client, scripted, model_name):
    store = client.vector_stores.create(name="notes")
    client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("notes.txt", b"The cafe opens at seven and serves oat milk.")
    )
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "file_search", "arguments": {"query": "opening hours"}},
                            {"name": "file_search", "arguments": {"query": "milk"}}]},
            {"content": "At seven."},
        ],
    )
    conversation = client.conversations.create()
    response = client.responses.create(
        model=model_name, conversation=conversation.id, input="When does it open?",
        tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
    )
    searches = [i for i in response.output if i.type == "file_search_call"]
    assert sorted(q for s in searches for q in s.queries) == ["milk", "opening hours"]
    assert all(len(s.queries) == 1 for s in searches)
    listed = [i for i in client.conversations.items.list(conversation.id) if i.type == "file_search_call"]
    assert sorted(q for s in listed for q in s.queries) == ["milk", "opening hours"]
    # The same run's steps through the Assistants API: OpenAI's shape, without the queries.
    thread_id = "thread_" + conversation.id.removeprefix("conv_")
    (run,) = client.beta.threads.runs.list(thread_id=thread_id)
    for include in ([], ["step_details.tool_calls[*].file_search.results[*].content"]):
        steps = client.get(f"/threads/{thread_id}/runs/{run.id}/steps", cast_to=object,
                           options={"params": {"include[]": include}})
        assert '"file_search"' in json.dumps(steps) and "queries" not in json.dumps(steps)
