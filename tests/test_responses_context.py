"""A response's context and the model's window: `truncation: "auto"` drops the oldest items of a
conversation longer than the model holds (ASSISTGRAPH_MODEL_CONTEXT_WINDOW), `disabled` sends all
of it and fails as the model refuses it. The scripted model refuses prompts over its window as
OpenAI-compatible servers do."""

from __future__ import annotations

import pytest

from tests.conftest import _extra_server, _own_database, sdk, stop_process

WINDOW = 1000


@pytest.fixture(scope="module")
def small_window_server(scripted, workdir, database_url, tool_env):
    # A database of its own: the setting applies where a run executes, and every server of a database
    # executes its runs.
    srv = _extra_server(
        scripted, workdir, "small-window", _own_database(database_url, "small_window"),
        ASSISTGRAPH_MODEL_CONTEXT_WINDOW=str(WINDOW), ASSISTGRAPH_DATA_DIR=str(workdir / "data"), **tool_env,
    )
    yield srv
    stop_process(srv.proc)


@pytest.fixture
def small(small_window_server):
    return sdk(small_window_server.url)


def long_conversation(client, turns: int = 8):
    """A conversation of `turns` user/assistant exchanges of ~200 tokens each."""
    items = []
    for n in range(turns):
        items.append({"role": "user", "content": f"question {n}: " + "x" * 800})
        items.append({"role": "assistant", "content": f"answer {n}: " + "y" * 800})
    conversation = client.conversations.create()
    for start in range(0, len(items), 16):
        client.conversations.items.create(conversation.id, items=items[start:start + 16])
    return conversation


def test_auto_truncation_drops_the_oldest_items(small, scripted, model_name):
    conversation = long_conversation(small)
    scripted.script(model_name, [{"content": "Still here.", "context_window": WINDOW}])
    response = small.responses.create(
        model=model_name, conversation=conversation.id, input="The newest question?", truncation="auto",
    )
    assert response.status == "completed", response.error
    assert response.truncation == "auto" and response.output_text == "Still here."
    (request,) = scripted.requests(model_name)
    sent = [m["content"] for m in request["body"]["messages"]]
    assert sent[-1] == "The newest question?"
    assert not any(str(c).startswith("question 0:") for c in sent)  # the oldest went first
    assert any(str(c).startswith("answer 7:") for c in sent)  # the newest stayed
    # The conversation itself keeps every item.
    assert len(small.conversations.items.list(conversation.id, limit=100).data) == 16 + 2


def test_disabled_truncation_fails_on_the_models_window(small, scripted, model_name):
    conversation = long_conversation(small)
    scripted.script(model_name, [{"content": "unreachable", "context_window": WINDOW, "repeat": True}])
    response = small.responses.create(model=model_name, conversation=conversation.id, input="And now?")
    assert response.truncation == "disabled"
    assert response.status == "failed" and "maximum context length" in response.error.message
    assert len(scripted.requests(model_name)[0]["body"]["messages"]) == 16 + 1
