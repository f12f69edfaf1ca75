"""Compaction through the official SDK: `client.responses.compact` turns a window into its user messages
and one `compaction` item whose `encrypted_content` the server sealed (for one tenant; edited or
another tenant's, it is a 400); the output given back as input goes on from the summary; and
`context_management` compacts a response's context once it passes the threshold, in conversations
too. The model is the scripted chat-completions server.

The SDK types a compaction's output as output items, where a message is the assistant's, so its opt-in
strict validation refuses the user messages OpenAI (and this server) return there; its default parsing
reads them, as the Agents SDK does. The compact calls here use the default."""

from __future__ import annotations

import concurrent.futures

import httpx
import openai
import pytest

from tests.conftest import assert_error
from tests.test_responses_context import long_conversation
from tests.test_responses_shapes import check_resource
from tests.test_tenancy import as_key, new_key

SUMMARY = "The user is planning a dog cafe landing page; the assistant proposed a hero section."


def lenient(client: openai.OpenAI | openai.AsyncOpenAI):
    """The same client with the SDK's default parsing (see above)."""
    return type(client)(base_url=client.base_url, api_key=client.api_key, max_retries=0)


def sent_messages(scripted, model: str) -> list[list[dict]]:
    return [r["body"]["messages"] for r in scripted.requests(model)]


def test_compact_a_window_and_go_on_from_it(client, scripted, model_name):
    scripted.script(model_name, [{"content": SUMMARY}, {"content": "Here is the menu section."}])
    compacted = lenient(client).responses.compact(
        model=model_name,
        prompt_cache_key="openresponses-compact-test",
        input=[
            {"role": "user", "content": "Create a landing page for a dog cafe."},
            {"role": "assistant", "content": "Sure: a hero section with a photo of a corgi."},
            {"role": "user", "content": [{"type": "input_text", "text": "Add opening hours."}]},
        ],
    )
    assert compacted.object == "response.compaction" and compacted.id and compacted.created_at
    *retained, item = compacted.output
    # The window's user messages come back as message items (as OpenAI's do), then the compaction item.
    assert [(m.type, m.role, m.status, m.id[:4]) for m in retained] == [("message", "user", "completed", "msg_")] * 2
    assert [[(p.type, p.text) for p in m.content] for m in retained] == [
        [("input_text", "Create a landing page for a dog cafe.")], [("input_text", "Add opening hours.")],
    ]
    assert item.type == "compaction" and item.id.startswith("cmp_") and item.encrypted_content
    assert "dog cafe" not in item.encrypted_content
    assert SUMMARY not in item.encrypted_content and "corgi" not in item.encrypted_content
    assert compacted.usage.total_tokens == compacted.usage.input_tokens + compacted.usage.output_tokens > 0
    # The summarising call saw the whole window.
    (summarising,) = sent_messages(scripted, model_name)
    assert "corgi" in summarising[-1]["content"] and "opening hours" in summarising[-1]["content"]

    # A new chain from the window, items sent back as they came (output-shaped, ids and all).
    window = [i.model_dump(exclude_none=True, warnings=False) for i in compacted.output]
    response = client.responses.create(
        model=model_name, input=[*window, {"role": "user", "content": "Continue with the menu."}], store=False,
    )
    assert response.status == "completed" and response.output_text == "Here is the menu section."
    sent = sent_messages(scripted, model_name)[1]
    summary = [m for m in sent if m["role"] == "system" and SUMMARY in m["content"]]
    assert len(summary) == 1
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "Create a landing page for a dog cafe.", "Add opening hours.", "Continue with the menu.",
    ]
    assert "corgi" not in str(sent)  # the assistant's answer is only in the summary now


def test_compact_a_stored_chain_by_previous_response_id(client, scripted, model_name):
    scripted.script(model_name, [{"content": "Noted: the code word is cobalt."}, {"content": "Code word: cobalt."}])
    first = client.responses.create(model=model_name, input="Remember the code word cobalt.")
    compacted = lenient(client).responses.compact(model=model_name, previous_response_id=first.id)
    assert [(i.type, getattr(i, "role", None)) for i in compacted.output] == [("message", "user"), ("compaction", None)]
    assert compacted.output[0].content[0].text == "Remember the code word cobalt."
    assert "cobalt" in sent_messages(scripted, model_name)[1][-1]["content"]
    with pytest.raises(openai.NotFoundError):
        lenient(client).responses.compact(model=model_name, previous_response_id="resp_missing")


def test_compact_needs_a_model_and_a_window(server, client, model_name):
    url = f"{server.url}/responses/compact"
    assert_error(httpx.post(url, json={"input": "hi"}, timeout=30), 400, param="model")
    assert_error(httpx.post(url, json={"model": model_name}, timeout=30), 400, param="input")
    # Fields some clients send along are accepted.
    assert_error(httpx.post(url, json={"model": model_name, "input": [], "tools": [], "parallel_tool_calls": True}, timeout=30),
                 400, param="input")
    assert_error(httpx.post(url, json={"model": model_name, "input": "x", "nope": 1}, timeout=30), 400, param="nope")


def test_a_forged_or_edited_compaction_item_is_refused(client, scripted, model_name):
    scripted.script(model_name, [{"content": SUMMARY}])
    compacted = lenient(client).responses.compact(model=model_name, input="Plan a dog cafe.")
    item = compacted.output[-1]
    sealed = item.encrypted_content
    for forged in ("gAAAAABforged", sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")):
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(
                model=model_name, input=[{"type": "compaction", "encrypted_content": forged}, {"role": "user", "content": "x"}]
            )
        assert caught.value.body["param"] == "input[0].encrypted_content"
        assert caught.value.body["code"] == "invalid_encrypted_content"
    assert len(scripted.requests(model_name)) == 1  # none reached the model


def test_a_compaction_item_is_bound_to_its_tenant(auth_server, scripted, model_name):
    first, second = (as_key(auth_server, new_key(auth_server, name=n)) for n in ("compacting A", "compacting B"))
    scripted.script(model_name, [{"content": SUMMARY}, {"content": "Going on."}])
    compacted = lenient(first).responses.compact(model=model_name, input="Plan a dog cafe.")
    window = [i.model_dump(exclude_none=True, warnings=False) for i in compacted.output]
    with pytest.raises(openai.BadRequestError) as caught:
        second.responses.create(model=model_name, input=[*window, {"role": "user", "content": "Go on."}])
    assert caught.value.body["param"] == "input[1].encrypted_content"  # after the window's user message
    # Its own tenant goes on from it.
    assert first.responses.create(model=model_name, input=[*window, {"role": "user", "content": "Go on."}]).output_text == "Going on."


def test_a_conversation_shows_a_compaction_item_as_openai_does(client, scripted, model_name):
    scripted.script(model_name, [{"content": SUMMARY}, {"content": "Going on."}])
    compacted = lenient(client).responses.compact(model=model_name, input="Plan a dog cafe.")
    conversation = client.conversations.create()
    client.conversations.items.create(conversation.id, items=[compacted.output[-1].model_dump(exclude_none=True)])
    (kept,) = client.conversations.items.list(conversation.id)
    assert kept.type == "compaction" and kept.encrypted_content == compacted.output[-1].encrypted_content
    assert set(kept.model_dump(exclude_none=True)) == {"id", "type", "encrypted_content"}
    response = client.responses.create(model=model_name, conversation=conversation.id, input="Go on.")
    assert response.output_text == "Going on."
    assert any(SUMMARY in m["content"] for m in sent_messages(scripted, model_name)[1] if m["role"] == "system")
    check_resource(httpx.get(f"{str(client.base_url).rstrip('/')}/responses/{response.id}", timeout=30).json())


MANAGED = [{"type": "compaction", "compact_threshold": 1000}]


def test_context_management_compacts_a_conversation_past_the_threshold(client, scripted, model_name):
    conversation = long_conversation(client, turns=6)
    scripted.script(model_name, [{"content": SUMMARY}, {"content": "Answer after compaction."}, {"content": "Still going."}])
    with client.responses.stream(
        model=model_name, conversation=conversation.id, input="The newest question?",
        context_management=MANAGED,
    ) as stream:
        events = list(stream)
        response = stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    compacted, answer = response.output
    assert compacted.type == "compaction" and compacted.id.startswith("cmp_") and compacted.encrypted_content
    assert answer.type == "message" and response.output_text == "Answer after compaction."
    added = [(e.output_index, e.item.type) for e in events if e.type == "response.output_item.added"]
    assert added == [(0, "compaction"), (1, "message")]
    summarising, answering = sent_messages(scripted, model_name)
    assert "question 0" in summarising[-1]["content"] and "answer 5" in summarising[-1]["content"]
    assert not any("answer 0" in str(m["content"]) for m in answering)
    assert any(m["role"] == "system" and SUMMARY in m["content"] for m in answering)
    assert answering[-1] == {"role": "user", "content": "The newest question?"}
    # The conversation keeps every item; the compaction sits before the input it was made for.
    listed = [i.type for i in client.conversations.items.list(conversation.id, order="asc", limit=100)]
    assert listed == ["message"] * 12 + ["compaction", "message", "message"]
    again = client.responses.retrieve(response.id)
    assert [i.type for i in again.output] == ["compaction", "message"]
    check_resource(httpx.get(f"{str(client.base_url).rstrip('/')}/responses/{response.id}", timeout=30).json())

    # The next response continues from the compaction, with or without context_management.
    follow_up = client.responses.create(model=model_name, conversation=conversation.id, input="And then?")
    assert follow_up.output_text == "Still going."
    sent = sent_messages(scripted, model_name)[2]
    assert not any("question 0" in str(m["content"]) for m in sent) and SUMMARY in str(sent)
    assert {"role": "assistant", "content": "Answer after compaction."} in sent


def test_a_server_side_summary_holds_no_lock_and_follows_the_conversation(client, scripted, model_name):
    """The summary is a model call: it is made with no lock (nor pooled connection) held, so the
    conversation stays writable meanwhile; when it changed under the summary, the window is
    summarised again as it now is."""
    conversation = long_conversation(client, turns=6)
    scripted.script(model_name, [
        {"content": "Stale summary.", "gate": "summary"},
        {"content": SUMMARY},
        {"content": "Answer after compaction."},
    ])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            client.responses.create, model=model_name, conversation=conversation.id,
            input="The newest question?", context_management=MANAGED,
        )
        scripted.wait_for_gate("summary")
        # Held under the create's lock, this would wait for the summary (and time out).
        late = client.with_options(timeout=15, max_retries=0).conversations.items.create(
            conversation.id, items=[{"role": "user", "content": "A late note."}],
        )
        scripted.release("summary")
        response = pending.result(timeout=60)
    assert response.status == "completed" and response.output_text == "Answer after compaction."
    stale, fresh, answering = sent_messages(scripted, model_name)
    assert "A late note." not in str(stale) and "A late note." in str(fresh)
    assert any(m["role"] == "system" and SUMMARY in m["content"] for m in answering)
    assert "Stale summary." not in str(answering)
    listed = [i.id for i in client.conversations.items.list(conversation.id, order="asc", limit=100)]
    assert listed.index(late.data[0].id) < listed.index(response.output[0].id)


def test_a_compacted_conversation_goes_on_past_the_models_window(client, scripted, model_name):
    """A conversation whose items come to more than the model holds keeps going: each response compacts
    once its context passes the threshold, so no prompt (summarising calls included) reaches the
    window, and the scripted model refuses any that would."""
    window = 1600
    scripted.script(model_name, [{"content": "noted: " + "z" * 400, "context_window": window, "repeat": True}])
    conversation = client.conversations.create()
    outputs = []
    for n in range(10):
        response = client.responses.create(
            model=model_name, conversation=conversation.id, input=f"turn {n}: " + "w" * 600,
            context_management=MANAGED,
        )
        assert response.status == "completed", response.error
        outputs.append([i.type for i in response.output])
    assert sum(types[0] == "compaction" for types in outputs) >= 2  # compacted, and compacted again
    items = client.conversations.items.list(conversation.id, order="asc", limit=100).data
    kept = sum(len(part.text) for i in items if i.type == "message" for part in i.content) // 4
    assert kept > window  # the conversation itself is longer than the model's window
    assert [i for i in items if i.type == "message"][-1].content[0].text.startswith("noted: ")


def test_context_management_below_the_threshold_changes_nothing(client, scripted, model_name):
    scripted.script(model_name, [{"content": "Short answer."}])
    response = client.responses.create(model=model_name, input="Hi.", context_management=MANAGED)
    assert [i.type for i in response.output] == ["message"]
    assert len(scripted.requests(model_name)) == 1


def test_context_management_compacts_a_stateless_window(client, scripted, model_name):
    # Clients that keep the items themselves: everything before the last user message is compacted.
    scripted.script(model_name, [{"content": SUMMARY}, {"content": "Done."}])
    window = []
    for n in range(6):
        window += [{"role": "user", "content": f"step {n}: " + "x" * 800},
                   {"role": "assistant", "content": f"did {n}: " + "y" * 800}]
    response = client.responses.create(
        model=model_name, input=[*window, {"role": "user", "content": "Finish."}], store=False,
        context_management=MANAGED,
    )
    assert [i.type for i in response.output] == ["compaction", "message"]
    sent = sent_messages(scripted, model_name)[1]
    assert sent[-1] == {"role": "user", "content": "Finish."} and not any("did 0" in str(m["content"]) for m in sent)
    # Going on statelessly: the output (compaction item included) sent back with the next message.
    scripted.script(model_name, [{"content": "Next."}])
    items = [i.model_dump(exclude_none=True) for i in response.output]
    nxt = client.responses.create(model=model_name, input=[*items, {"role": "user", "content": "Next?"}], store=False)
    assert nxt.output_text == "Next." and SUMMARY in str(sent_messages(scripted, model_name)[2])


def test_context_management_threshold_is_checked(server, model_name):
    bad = {"model": model_name, "input": "x", "context_management": [{"type": "compaction", "compact_threshold": 10}]}
    assert_error(httpx.post(f"{server.url}/responses", json=bad, timeout=30), 400,
                 param="context_management[0].compact_threshold")
    other = {"model": model_name, "input": "x", "context_management": [{"type": "summary"}]}
    assert_error(httpx.post(f"{server.url}/responses", json=other, timeout=30), 400, param="context_management[0].type")


@pytest.mark.asyncio
async def test_async_client_compacts_and_streams_from_the_window(aclient, scripted, model_name):
    scripted.script(model_name, [{"content": SUMMARY}, {"content": "Opening hours added."}])
    compacted = await lenient(aclient).responses.compact(model=model_name, input="Create a landing page for a dog cafe.")
    window = [i.model_dump(exclude_none=True, warnings=False) for i in compacted.output]
    async with aclient.responses.stream(
        model=model_name, input=[*window, {"role": "user", "content": "Add opening hours."}],
    ) as stream:
        response = await stream.get_final_response()
    assert response.output_text == "Opening hours added."
    sent = sent_messages(scripted, model_name)[1]
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "Create a landing page for a dog cafe.", "Add opening hours.",
    ]


def test_a_model_that_fails_to_compact_is_a_server_error(client, scripted, model_name):
    scripted.script(model_name, [{"error": {"status": 500, "message": "model down"}}])
    with pytest.raises(openai.InternalServerError) as caught:
        lenient(client).responses.compact(model=model_name, input="Plan a dog cafe.")
    assert caught.value.body["type"] == "server_error" and "could not compact" in caught.value.body["message"]


def test_compact_takes_only_post(server):
    for method in ("GET", "DELETE"):
        resp = httpx.request(method, f"{server.url}/responses/compact", timeout=30)
        assert_error(resp, 405)
        assert resp.headers["allow"] == "POST"
