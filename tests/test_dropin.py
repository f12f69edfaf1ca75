"""A drop-in for whole apps: the AzureOpenAI client unchanged (seed 004's notebook), one base URL for
every OpenAI call of an app (chat completions, embeddings, models and assistants), images reaching
the model, and completion budgets held whatever the model does."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
import zlib

import httpx
import numpy as np
import openai
import pytest

from graph.tokens import count
from ingestion.embeddings import WORDLLAMA_MODEL, embeddings_from_settings
from tests.conftest import sdk
from tests.test_tenancy import new_key

# The seed's tools, as its notebook declares them (descriptions shortened).
SEED_TOOLS = [
    {"type": "code_interpreter"},
    {
        "type": "function",
        "function": {
            "name": "search_hotpepper_shops",
            "description": "ホットペッパーグルメAPIを利用し、キーワードや個室の有無などで飲食店を検索できます。",
            "parameters": {
                "type": "object",
                "properties": {
                    "keyword": {"type": "string", "description": "飲食店を検索するためのキーワード。"},
                    "private_room": {"type": "integer", "description": "個室ありの店舗のみを検索", "enum": [0, 1]},
                },
                "required": ["keyword"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_vacant_hotels",
            "description": "楽天トラベルのAPIを使って空室ホテルを検索できます。",
            "parameters": {
                "type": "object",
                "properties": {
                    "latitude": {"type": "number"},
                    "longitude": {"type": "number"},
                    "searchRadius": {"type": "number"},
                    "checkinDate": {"type": "string"},
                    "checkoutDate": {"type": "string"},
                    "maxCharge": {"type": "integer"},
                    "adultNum": {"type": "integer"},
                },
                "required": ["latitude", "longitude", "searchRadius", "checkinDate", "checkoutDate"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "searchTransportation",
            "description": "交通機関の検索と予約を行います。",
            "parameters": {
                "type": "object",
                "properties": {"transportType": {"type": "string"}, "origin": {"type": "string"}},
                "required": ["transportType", "origin"],
            },
        },
    },
]
INSTRUCTIONS = "あなたは Contoso 社の社員の出張を支援するためのアシスタントです。"


def png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def azure(server, key: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        api_key=key,
        api_version="2024-02-15-preview",
        azure_endpoint=server.url.removesuffix("/v1"),
        _strict_response_validation=True,
        max_retries=0,
    )


# --- the AzureOpenAI client: seed 004 -------------------------------------------------------------


def test_seed_004_with_the_azure_client(auth_server, scripted, model_name):
    """The notebook's flow, unchanged but for the endpoint: AzureOpenAI with azure_endpoint and
    api_version, auth on, the key sent as the `api-key` header; polling by hand as the seed does."""
    key = new_key(auth_server, name="azure")["value"]
    client = azure(auth_server, key)
    deployment = f"{model_name}-0125"
    hotel_args = {"latitude": 34.7025, "longitude": 135.4959, "searchRadius": 1, "checkinDate": "2024-02-14",
                  "checkoutDate": "2024-02-15", "adultNum": 1}
    scripted.script(deployment, [
        {"tool_calls": [{"name": "search_vacant_hotels", "arguments": hotel_args}]},
        {"content": "大阪駅近くのホテルが見つかりました。"},
        {"tool_calls": [{"name": "search_hotpepper_shops", "arguments": {"keyword": "有楽町駅 イタリアン"}}]},
        {"content": "有楽町のイタリアンを3件ご紹介します。"},
        {"content": "slow", "delay": 5},
    ])

    assistant = client.beta.assistants.create(
        name="Travel Assistant", instructions=INSTRUCTIONS, tools=SEED_TOOLS, model=model_name
    )
    assert [a.id for a in client.beta.assistants.list().data] == [assistant.id]
    assert client.beta.assistants.retrieve(assistant_id=assistant.id).name == "Travel Assistant"
    assistant = client.beta.assistants.update(
        assistant_id=assistant.id, name="Travel Assistant", instructions=INSTRUCTIONS, tools=SEED_TOOLS, model=deployment
    )
    assert assistant.model == deployment and [t.type for t in assistant.tools] == ["code_interpreter"] + ["function"] * 3

    thread = client.beta.threads.create()
    assert client.beta.threads.retrieve(thread_id=thread.id).id == thread.id
    assert client.beta.threads.messages.list(thread_id=thread.id).data == []

    def wait_on_run(run, thread_id):
        while run.status in ("queued", "in_progress"):
            run = client.beta.threads.runs.retrieve(thread_id=thread_id, run_id=run.id)
            time.sleep(0.05)
        return run

    def create_run(user_input):
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content=user_input)
        return client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)

    for question, name, answer in (
        ("2/14に大阪駅近辺で1人で泊まれるビジネスホテルを探しています。", "search_vacant_hotels", "大阪駅近くのホテルが見つかりました。"),
        ("有楽町駅近辺でイタリアンのレストランを探しています", "search_hotpepper_shops", "有楽町のイタリアンを3件ご紹介します。"),
    ):
        run = wait_on_run(create_run(question), thread.id)
        assert run.status == "requires_action"
        steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc")
        assert steps.data[0].step_details.type == "tool_calls"
        tool_call = run.required_action.submit_tool_outputs.tool_calls[0]
        assert tool_call.function.name == name
        arguments = json.loads(tool_call.function.arguments)
        output = {"answer": [{"name": "result", "arguments": arguments}], "success": True}
        run = client.beta.threads.runs.submit_tool_outputs(
            thread_id=thread.id, run_id=run.id,
            tool_outputs=[{"tool_call_id": tool_call.id, "output": json.dumps(output)}],
        )
        run = wait_on_run(run, thread.id)
        assert run.status == "completed"
        steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data
        assert [s.step_details.type for s in steps] == ["tool_calls", "message_creation"]
        assert json.loads(steps[0].step_details.tool_calls[0].function.output) == output
        messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
        assert messages[-1].role == "assistant" and messages[-1].content[0].text.value == answer
    assert json.loads(
        [r for r in scripted.requests(deployment)][1]["body"]["messages"][-1]["content"]
    )["answer"][0]["arguments"] == hotel_args

    run = create_run("2/10から2/12まで大阪に出張します。")
    cancelled = client.beta.threads.runs.cancel(thread_id=thread.id, run_id=run.id)
    assert cancelled.status in ("cancelling", "cancelled")
    assert wait_on_run(client.beta.threads.runs.retrieve(thread_id=thread.id, run_id=run.id), thread.id).status in (
        "cancelling", "cancelled")
    assert client.beta.threads.delete(thread_id=thread.id).deleted
    assert client.beta.assistants.delete(assistant.id).deleted

    # Files and vector stores under /openai too, and the deployment paths of chat and embeddings.
    uploaded = client.files.create(file=("notes.txt", b"The office is on the fifth floor."), purpose="assistants")
    store = client.vector_stores.create(name="office", file_ids=[uploaded.id])
    store = client.vector_stores.files.poll(uploaded.id, vector_store_id=store.id)
    assert store.status == "completed"
    assert client.vector_stores.search(store.vector_store_id, query="which floor").data[0].file_id == uploaded.id
    scripted.script(model_name, [{"content": "こんにちは"}])
    completion = client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "こんにちは"
    assert scripted.requests(model_name)[-1]["body"]["messages"] == [{"role": "user", "content": "hi"}]
    vector = client.embeddings.create(model=WORDLLAMA_MODEL, input="fifth floor", encoding_format="float")
    assert len(vector.data[0].embedding) == 256

    # Without the key, or with a wrong one, in that same header: 401 as OpenAI's body.
    raw = httpx.get(f"{auth_server.url.removesuffix('/v1')}/openai/assistants?api-version=2024-02-15-preview",
                    headers={"api-key": "sk-ag-wrong"})
    assert raw.status_code == 401 and raw.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        azure(auth_server, "sk-ag-wrong").beta.assistants.list()


# --- one base URL for the whole app ---------------------------------------------------------------


def test_one_client_for_chat_embeddings_models_and_assistants(server, scripted, model_name):
    client = sdk(server.url)
    gate = f"{model_name}-relay"
    scripted.script(model_name, [{"content": "plain answer"}, {"content": "one two three four", "chunk_size": 4,
                                                                "gate": gate, "gate_after": 1}])
    completion = client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "hello"}])
    assert completion.choices[0].message.content == "plain answer" and completion.model == model_name

    # Relayed as the model sends it: the first piece reaches the client while the model holds the
    # rest back (the gate opens on that piece, or after 30 s so that a buffering relay fails, not hangs).
    released = threading.Event()
    fallback = threading.Timer(30, lambda: (released.set(), scripted.release(gate)))
    fallback.start()
    stream = client.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": "count"}], stream=True,
        stream_options={"include_usage": True},
    )
    text, relayed_while_held = "", None
    try:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if relayed_while_held is None:
                    relayed_while_held = not released.is_set()
                    released.set()
                    scripted.release(gate)
                text += chunk.choices[0].delta.content
    finally:
        fallback.cancel()
    assert text == "one two three four"
    assert relayed_while_held
    assert chunk.usage is not None and chunk.usage.completion_tokens == 4

    # The server's own offline embeddings, as vector stores use them. By default the SDK asks for
    # base64 and decodes it after parsing, which its strict mode cannot validate (against OpenAI
    # too): that default is read by a client in the SDK's usual mode, floats in strict mode.
    lenient = openai.OpenAI(base_url=server.url, api_key="sk-client", max_retries=0)
    local = lenient.embeddings.create(model=WORDLLAMA_MODEL, input=["lighthouse keeper", "espresso"])
    expected = embeddings_from_settings("default").embeddings.embed_documents(["lighthouse keeper", "espresso"])
    assert [d.index for d in local.data] == [0, 1] and local.model == WORDLLAMA_MODEL
    assert np.allclose([d.embedding for d in local.data], expected, atol=1e-5)
    assert local.usage.prompt_tokens == count("lighthouse keeper") + count("espresso")
    floats = client.embeddings.create(model=WORDLLAMA_MODEL, input="espresso", encoding_format="float")
    assert np.allclose(floats.data[0].embedding, expected[1], atol=1e-5)
    # Any other embedding model: the model endpoint's.
    relayed = client.embeddings.create(model="text-embedding-3-small", input="hello", encoding_format="float")
    assert len(relayed.data[0].embedding) == 8
    assert lenient.embeddings.create(model="text-embedding-3-small", input="hello").data[0].embedding == pytest.approx(
        relayed.data[0].embedding)
    assert scripted.requests("text-embedding-3-small")[-1]["headers"]["authorization"] == "Bearer sk-test-model-key"

    ids = [m.id for m in client.models.list()]
    assert {"scripted-model", model_name, WORDLLAMA_MODEL} <= set(ids)
    assert client.models.retrieve("scripted-model").id == "scripted-model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model-here")

    assistant = client.beta.assistants.create(model=model_name)
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "and a run"}]}
    )
    assert run.status == "completed"
    assert client.beta.threads.messages.list(run.thread_id).data[0].content[0].text.value == "echo: and a run"


def test_model_errors_come_back_as_openai_errors(server, scripted, model_name):
    client = sdk(server.url)
    scripted.script(model_name, [{"error": {"status": 429, "message": "slow down", "type": "rate_limit_error",
                                            "code": "rate_limit_exceeded"}}])
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body == {"message": "slow down", "type": "rate_limit_error", "param": None,
                                 "code": "rate_limit_exceeded"}
    bad = httpx.post(f"{server.url}/chat/completions", json={"model": model_name, "messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"
    local = httpx.post(f"{server.url}/embeddings", json={"model": WORDLLAMA_MODEL, "input": "x", "dimensions": 64})
    assert local.status_code == 400 and local.json()["error"]["param"] == "dimensions"


def test_models_of_a_key_are_its_allowed_ones(auth_server, scripted, model_name):
    key = new_key(auth_server, name="limited", allowed_models=[model_name])["value"]
    client = openai.OpenAI(base_url=auth_server.url, api_key=key, _strict_response_validation=True, max_retries=0)
    scripted.script(model_name, [{"content": "allowed"}])
    assert [m.id for m in client.models.list()] == [model_name]
    assert client.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "x"}]).choices[
        0].message.content == "allowed"
    for call in (
        lambda: client.chat.completions.create(model="scripted-model", messages=[{"role": "user", "content": "x"}]),
        lambda: client.embeddings.create(model=WORDLLAMA_MODEL, input="x"),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=auth_server.url, api_key="sk-ag-nope", max_retries=0).models.list()


# --- vision ---------------------------------------------------------------------------------------


def test_image_files_reach_the_model_as_images(client, scripted, model_name):
    image = png(3, 2)
    uploaded = client.files.create(file=("chart.png", image), purpose="vision")
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_file", "image_file": {"file_id": uploaded.id, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
        {"type": "image_file", "image_file": {"file_id": uploaded.id}},
    ]}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    sent = scripted.requests(model_name)[-1]["body"]["messages"][-1]
    data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    assert sent["role"] == "user" and sent["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": data_url, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": data_url, "detail": "auto"}},
    ]
    # The thread still shows the parts as they were created.
    shown = client.beta.threads.messages.list(thread.id, order="asc").data[0].content
    assert [p.type for p in shown] == ["text", "image_file", "image_url", "image_file"]

    # A file deleted since is named to the model instead of shown.
    client.files.delete(uploaded.id)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    parts = scripted.requests(model_name)[-1]["body"]["messages"][0]["content"]
    assert parts[1] == {"type": "text", "text": f"[image {uploaded.id} is not available]"}


# --- exact budgets --------------------------------------------------------------------------------

LONG = " ".join(f"word{i} and some more text" for i in range(400))  # far over 256 tokens


def test_an_overshooting_model_ends_incomplete_at_the_budget(client, scripted, model_name):
    scripted.script(model_name, [{"content": LONG, "chunk_size": 7}, {"content": LONG, "chunk_size": 7}])
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "write a lot"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256
    )
    assert run.status == "incomplete" and run.incomplete_details.reason == "max_completion_tokens"
    assert run.usage.completion_tokens == 256
    message = client.beta.threads.messages.list(thread.id).data[0]
    assert message.status == "incomplete" and message.incomplete_details.reason == "max_tokens"
    text = message.content[0].text.value
    assert count(text) == 256 and LONG.startswith(text)

    # Streamed: the deltas are exactly the kept text, and the stream ends with thread.run.incomplete.
    client.beta.threads.messages.create(thread.id, role="user", content="again")
    deltas, events = [], []
    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=300
    ) as stream:
        for event in stream:
            events.append(event.event)
            if event.event == "thread.message.delta":
                deltas.append(event.data.delta.content[0].text.value)
    assert events[-1] == "thread.run.incomplete"
    streamed = "".join(deltas)
    assert count(streamed) == 300 and LONG.startswith(streamed)
    assert client.beta.threads.messages.list(thread.id).data[0].content[0].text.value == streamed
    assert client.beta.threads.runs.list(thread.id).data[0].usage.completion_tokens == 300

    # Within the budget nothing changes.
    scripted.script(model_name, [{"content": "short answer"}])
    client.beta.threads.messages.create(thread.id, role="user", content="briefly")
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256
    )
    assert run.status == "completed"
