"""The Conversations API through the official SDK, and the one store behind it and the Assistants API:
a conversation is a thread (`conv_X` is `thread_X`), messages written through either API are items
of the other, and responses in a conversation run on the same engine, files and vector stores."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import assert_error
from tests.test_file_search import BRKA_10K

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_conversation_crud_and_items(client):
    conversation = client.conversations.create(
        metadata={"customer": "acme"},
        items=[
            {"type": "message", "role": "developer", "content": "Answer briefly."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello!"}]},
        ],
    )
    assert conversation.object == "conversation" and conversation.id.startswith("conv_")
    assert conversation.metadata == {"customer": "acme"}
    assert client.conversations.retrieve(conversation.id) == conversation
    updated = client.conversations.update(conversation.id, metadata={"customer": "acme", "tier": "gold"})
    assert updated.metadata == {"customer": "acme", "tier": "gold"}

    added = client.conversations.items.create(
        conversation.id,
        items=[
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": "Tell me a joke."},
        ],
    )
    assert [i.role for i in added.data] == ["assistant", "user"] and added.has_more is False
    assert added.first_id == added.data[0].id and added.last_id == added.data[1].id

    oldest_first = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [(i.role, i.content[0].text) for i in oldest_first] == [
        ("developer", "Answer briefly."),
        ("user", "Hello!"),
        ("assistant", "Hi! How can I help?"),
        ("user", "Tell me a joke."),
    ]
    assert oldest_first[2].content[0].type == "output_text"
    newest_first = client.conversations.items.list(conversation.id, limit=3)
    assert [i.id for i in newest_first.data] == [i.id for i in reversed(oldest_first)][:3]
    assert newest_first.has_more is True
    rest = client.conversations.items.list(conversation.id, limit=3, after=newest_first.last_id)
    assert [i.id for i in rest.data] == [oldest_first[0].id] and rest.has_more is False
    # The SDK's auto-pagination follows `last_id`.
    assert [i.id for i in client.conversations.items.list(conversation.id, limit=1)] == [
        i.id for i in reversed(oldest_first)
    ]

    item = client.conversations.items.retrieve(oldest_first[1].id, conversation_id=conversation.id)
    assert item == oldest_first[1]
    after_delete = client.conversations.items.delete(oldest_first[1].id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id
    assert [i.id for i in client.conversations.items.list(conversation.id, order="asc")] == [
        oldest_first[0].id, oldest_first[2].id, oldest_first[3].id
    ]
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(oldest_first[1].id, conversation_id=conversation.id)

    deleted = client.conversations.delete(conversation.id)
    assert deleted.deleted is True and deleted.id == conversation.id and deleted.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)


def test_responses_in_a_conversation(client, scripted, model_name):
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "system", "content": "You are terse."}]
    )
    scripted.script(model_name, [{"content": "Noted."}, {"content": "Blue."}])
    first = client.responses.create(model=model_name, conversation=conversation.id, input="My favourite colour is blue.")
    assert first.conversation.id == conversation.id
    second = client.responses.create(
        model=model_name, conversation={"id": conversation.id}, input="What is my favourite colour?"
    )
    assert second.output_text == "Blue."
    assert scripted.requests(model_name)[1]["body"]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "My favourite colour is blue."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "What is my favourite colour?"},
    ]
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [(i.role, i.content[0].text) for i in items] == [
        ("system", "You are terse."),
        ("user", "My favourite colour is blue."),
        ("assistant", "Noted."),
        ("user", "What is my favourite colour?"),
        ("assistant", "Blue."),
    ]
    # Output items are conversation items with the same ids.
    assert items[2].id == first.output[0].id and items[4].id == second.output[0].id
    # The Assistants view of the same thread: the responses' runs, with no assistant behind them.
    thread_id = "thread_" + conversation.id.removeprefix("conv_")
    runs = list(client.beta.threads.runs.list(thread_id, order="asc"))
    assert [r.status for r in runs] == ["completed", "completed"] and {r.assistant_id for r in runs} == {""}
    assert [m.id for m in client.beta.threads.messages.list(thread_id, order="asc")] == [i.id for i in items[1:]]
    # An item_reference brings an item of the conversation into another response's input.
    scripted.script(model_name, [{"echo": True}])
    referenced = client.responses.create(model=model_name, input=[{"type": "item_reference", "id": items[1].id}])
    assert referenced.output_text == "echo: My favourite colour is blue."


def test_function_calls_in_a_conversation(client, scripted, model_name):
    conversation = client.conversations.create()
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Bern"}, "id": "call_bern"}]},
            {"content": "Bern: snow."},
        ],
    )
    first = client.responses.create(model=model_name, conversation=conversation.id, input="Bern?", tools=[WEATHER])
    (call,) = first.output
    # While the conversation waits for the output, a plain message is refused: outputs first.
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=model_name, conversation=conversation.id, input="Anything else?")
    assert "call_bern" in caught.value.body["message"]
    second = client.responses.create(
        model=model_name, conversation=conversation.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "snow"}],
    )
    assert second.output_text == "Bern: snow." and second.conversation.id == conversation.id
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [i.type for i in items] == ["message", "function_call", "function_call_output", "message"]
    assert items[1].id == call.id and items[1].call_id == "call_bern"
    assert items[2].call_id == "call_bern" and items[2].output == "snow"
    assert client.conversations.items.retrieve(items[2].id, conversation_id=conversation.id) == items[2]
    with pytest.raises(openai.BadRequestError):
        client.conversations.items.delete(items[1].id, conversation_id=conversation.id)


def test_migration_from_a_thread_to_responses_and_back(client, scripted, model_name):
    """An Assistants app's thread, continued through the Responses API with the conversation id, and
    read back through both APIs."""
    assistant = client.beta.assistants.create(
        model=model_name, name="Support", instructions="You are a support agent.", tools=[{"type": "file_search"}]
    )
    store = client.vector_stores.create(name="policies")
    client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=("brka.txt", BRKA_10K))
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "Hi, I have a question about my order."}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )
    scripted.script(
        model_name,
        [
            {"content": "Sure, what is it?"},
            {"tool_calls": [{"name": "file_search", "arguments": {"query": "operating earnings 2023"}}]},
            {"content": "Operating earnings were 37.4 billion dollars【0:0†brka.txt】."},
            {"content": "You are welcome."},
        ],
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"

    # The same thread, as a conversation: its id with the conversation prefix.
    conversation_id = "conv_" + thread.id.removeprefix("thread_")
    conversation = client.conversations.retrieve(conversation_id)
    assert conversation.created_at == thread.created_at
    response = client.responses.create(
        conversation=conversation_id,
        input="What were the operating earnings in 2023?",
        include=["file_search_call.results"],
        extra_body={"assistant_id": assistant.id},
    )
    assert response.status == "completed" and response.conversation.id == conversation_id
    search, answer = response.output
    assert search.type == "file_search_call" and search.results[0].filename == "brka.txt"
    assert "37.4 billion" in search.results[0].text
    (citation,) = answer.content[0].annotations
    assert citation.type == "file_citation" and citation.filename == "brka.txt"
    assert answer.content[0].text[citation.index :].startswith("【0:0†brka.txt】")
    assert scripted.requests(model_name)[1]["body"]["messages"][0] == {
        "role": "system", "content": "You are a support agent."
    }

    # An Assistants client keeps going on the same thread.
    client.beta.threads.messages.create(thread.id, role="user", content="Thanks!")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    history = scripted.requests(model_name)[-1]["body"]["messages"]
    assert [m["content"] for m in history if m["role"] == "user"] == [
        "Hi, I have a question about my order.", "What were the operating earnings in 2023?", "Thanks!"
    ]

    # Read back through the Assistants API ...
    messages = list(client.beta.threads.messages.list(thread.id, order="asc"))
    texts = [(m.role, m.content[0].text.value) for m in messages]
    assert texts == [
        ("user", "Hi, I have a question about my order."),
        ("assistant", "Sure, what is it?"),
        ("user", "What were the operating earnings in 2023?"),
        ("assistant", "Operating earnings were 37.4 billion dollars【0:0†brka.txt】."),
        ("user", "Thanks!"),
        ("assistant", "You are welcome."),
    ]
    runs = list(client.beta.threads.runs.list(thread.id, order="asc"))
    assert len(runs) == 3 and all(r.assistant_id == assistant.id for r in runs)
    steps = list(client.beta.threads.runs.steps.list(run_id=runs[1].id, thread_id=thread.id, order="asc"))
    assert steps[0].step_details.tool_calls[0].type == "file_search"
    # ... and through the Conversations API: the same messages, the same ids, the search in its place.
    items = list(client.conversations.items.list(conversation_id, order="asc"))
    assert [i.type for i in items] == ["message", "message", "message", "file_search_call", "message", "message", "message"]
    messages_as_items = [i for i in items if i.type == "message"]
    assert [m.id for m in messages_as_items] == [m.id for m in messages]
    assert [(i.role, i.content[0].text) for i in messages_as_items] == texts
    # The Assistants API also takes the conversation's id.
    assert client.beta.threads.retrieve(conversation_id).id == thread.id


@pytest.mark.asyncio
async def test_async_conversations_and_a_streamed_response(aclient, scripted, model_name):
    conversation = await aclient.conversations.create(items=[{"role": "user", "content": "Count to three."}])
    scripted.script(model_name, [{"content": "One, two, three.", "chunk_size": 2}])
    async with aclient.responses.stream(model=model_name, conversation=conversation.id, input="Go.") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == "One, two, three." and final.conversation.id == conversation.id
    items = [i async for i in aclient.conversations.items.list(conversation.id, order="asc")]
    assert [i.content[0].text for i in items] == ["Count to three.", "Go.", "One, two, three."]
    assert (await aclient.conversations.delete(conversation.id)).deleted


def test_input_files_are_attached_and_searched(client, scripted, model_name):
    uploaded = client.files.create(file=("brka.txt", BRKA_10K), purpose="user_data")
    conversation = client.conversations.create()
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "file_search", "arguments": {"query": "operating earnings"}}]},
            {"content": "37.4 billion dollars."},
        ],
    )
    with client.responses.stream(
        model=model_name,
        conversation=conversation.id,
        input=[{"role": "user", "content": [
            {"type": "input_text", "text": "What were the operating earnings?"},
            {"type": "input_file", "file_id": uploaded.id},
        ]}],
    ) as stream:
        events = [e.type for e in stream]
        response = stream.get_final_response()
    assert [e for e in events if e.startswith("response.file_search_call")] == [
        "response.file_search_call.in_progress", "response.file_search_call.searching",
        "response.file_search_call.completed",
    ]
    assert response.output_text == "37.4 billion dollars."
    assert response.output[0].type == "file_search_call"
    assert "file_search" in json.dumps(scripted.requests(model_name)[0]["body"]["tools"])
    (item,) = [i for i in client.conversations.items.list(conversation.id, order="asc")][:1]
    assert [p.type for p in item.content] == ["input_text", "input_file"]
    assert item.content[1].file_id == uploaded.id and item.content[1].filename == "brka.txt"
    # The Assistants view of the same message: an attachment for file_search.
    thread_id = "thread_" + conversation.id.removeprefix("conv_")
    message = client.beta.threads.messages.retrieve(item.id, thread_id=thread_id)
    assert message.attachments[0].file_id == uploaded.id


def test_conversation_errors(server, client):
    base = f"{server.url}/conversations"
    assert_error(httpx.get(f"{base}/conv_nope", timeout=10), 404, param="conversation_id")
    assert_error(httpx.get(f"{base}/nope", timeout=10), 400, param="conversation_id")
    assert_error(httpx.post(f"{base}/conv_nope/items", json={"items": [{"role": "user", "content": "x"}]}, timeout=10),
                 404, param="conversation_id")
    conversation = client.conversations.create()
    assert_error(httpx.post(f"{base}/{conversation.id}/items", json={"items": []}, timeout=10), 400, param="items")
    assert_error(httpx.post(f"{base}/{conversation.id}/items", json={"items": [{"type": "computer_call"}]}, timeout=10),
                 400, param="items[0].type")
    assert_error(httpx.post(f"{base}/{conversation.id}", json={}, timeout=10), 400, param="metadata")
    assert_error(httpx.get(f"{base}/{conversation.id}/items/msg_nope", timeout=10), 404, param="item_id")
    assert_error(httpx.delete(f"{base}/{conversation.id}/items/msg_nope", timeout=10), 404, param="item_id")
    assert_error(httpx.get(f"{base}/{conversation.id}/items", params={"after": "msg_nope"}, timeout=10), 400,
                 param="after")
    assert_error(httpx.post(base, json={"items": [{"role": "user", "content": "x"}] * 21}, timeout=10), 400,
                 param="items")
    # Items are not Assistants messages: the thread's message list skips them.
    client.conversations.items.create(conversation.id, items=[{"role": "developer", "content": "Be nice."}])
    thread_id = "thread_" + conversation.id.removeprefix("conv_")
    assert list(client.beta.threads.messages.list(thread_id)) == []


def test_tenants_see_only_their_own_responses_and_conversations(auth_server, scripted, model_name):
    from tests.test_tenancy import as_key, new_key

    mine, theirs = as_key(auth_server, new_key(auth_server, name="responses A")), as_key(
        auth_server, new_key(auth_server, name="responses B")
    )
    scripted.script(model_name, [{"content": "Private answer."}])
    conversation = mine.conversations.create(items=[{"role": "user", "content": "secret"}])
    response = mine.responses.create(model=model_name, conversation=conversation.id, input="more")
    item = mine.conversations.items.list(conversation.id).data[0]
    for call in (
        lambda: theirs.responses.retrieve(response.id),
        lambda: theirs.responses.input_items.list(response.id),
        lambda: theirs.responses.cancel(response.id),
        lambda: theirs.responses.delete(response.id),
        lambda: theirs.responses.create(model=model_name, previous_response_id=response.id, input="x"),
        lambda: theirs.responses.create(model=model_name, conversation=conversation.id, input="x"),
        lambda: theirs.conversations.retrieve(conversation.id),
        lambda: theirs.conversations.update(conversation.id, metadata={"a": "b"}),
        lambda: theirs.conversations.items.list(conversation.id),
        lambda: theirs.conversations.items.retrieve(item.id, conversation_id=conversation.id),
        lambda: theirs.conversations.items.delete(item.id, conversation_id=conversation.id),
        lambda: theirs.conversations.delete(conversation.id),
        lambda: theirs.responses.create(model=model_name, input=[{"type": "item_reference", "id": item.id}]),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert mine.responses.retrieve(response.id).output_text == "Private answer."
    assert len(mine.conversations.items.list(conversation.id).data) == 3


def test_function_calls_given_as_items_and_answered_later(client, scripted, model_name):
    """A conversation holds a function call given as an item; its output may come in a later request."""
    conversation = client.conversations.create(items=[
        {"role": "user", "content": "Weather in Kyiv?"},
        {"type": "function_call", "call_id": "call_kyiv", "name": "get_weather", "arguments": "{\"city\": \"Kyiv\"}"},
    ])
    scripted.script(model_name, [{"content": "Kyiv: rain."}])
    response = client.responses.create(
        model=model_name, conversation=conversation.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": "call_kyiv", "output": "rain"}],
    )
    assert response.output_text == "Kyiv: rain."
    sent = scripted.requests(model_name)[0]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_kyiv"
    assert sent[2] == {"role": "tool", "content": "rain", "tool_call_id": "call_kyiv"}
    items = list(client.conversations.items.list(conversation.id, order="asc"))
    assert [i.type for i in items] == ["message", "function_call", "function_call_output", "message"]
    assert items[1].status == "completed" and items[2].output == "rain"
