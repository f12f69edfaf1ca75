"""The model catalogue: names and patterns routed to two different endpoints and to a provider of
LangChain's init_chat_model (Ollama's API, served by a second scripted model), what GET /v1/models
lists, unknown models refused where OpenAI refuses them, and per-key endpoints overriding it all."""

from __future__ import annotations

import json
import uuid

import openai
import pytest

from graph.tokens import count
from ingestion.embeddings import WORDLLAMA_MODEL
from tests.conftest import ADMIN_KEY, _extra_server, _own_database, stop_process
from tests.scripted_model import start_in_thread
from tests.test_tenancy import as_key, new_key


@pytest.fixture(scope="module")
def second_model():
    model, url, stop = start_in_thread()
    model.base_url = url
    yield model
    stop()


@pytest.fixture(scope="module")
def catalog_server(scripted, second_model, workdir, database_url, tmp_path_factory):
    catalogue = tmp_path_factory.mktemp("catalogue") / "models.yaml"
    # The file holds the first entries; ASSISTGRAPH_MODELS (JSON) adds more after them.
    catalogue.write_text(
        "models:\n"
        "  - match: alpha-*\n"
        f"    base_url: {scripted.base_url}\n"
        "    api_key: sk-alpha\n"
        "    owned_by: alpha-lab\n"
        "  - match: beta\n"
        f"    base_url: {second_model.base_url}\n"
        "    api_key_env: BETA_MODEL_KEY\n"
        "    model: beta-upstream\n"
    )
    inline = [
        {"match": "llama-*", "provider": "ollama", "base_url": second_model.base_url.removesuffix("/v1"),
         "list": ["llama-3.2"], "options": {"keep_alive": "5m"}},
    ]
    srv = _extra_server(
        scripted, workdir, "catalog", _own_database(database_url, "catalog"),
        ASSISTGRAPH_AUTH="true", ASSISTGRAPH_ADMIN_KEY=ADMIN_KEY,
        ASSISTGRAPH_MODEL_CATALOG=str(catalogue), ASSISTGRAPH_MODELS=json.dumps(inline), BETA_MODEL_KEY="sk-beta",
    )
    yield srv
    stop_process(srv.proc)


@pytest.fixture(scope="module")
def client(catalog_server):
    return as_key(catalog_server, new_key(catalog_server, name="catalogue user"))


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_two_models_route_to_two_endpoints(client, scripted, second_model):
    alpha = unique("alpha-")
    scripted.script(alpha, [{"content": "from alpha"}])
    second_model.script("beta-upstream", [{"content": "from beta"}])
    answers = {}
    for model in (alpha, "beta"):
        assistant = client.beta.assistants.create(model=model)
        run = client.beta.threads.create_and_run_poll(
            assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "who are you?"}]}
        )
        assert run.status == "completed" and run.model == model
        answers[model] = client.beta.threads.messages.list(run.thread_id).data[0].content[0].text.value
    assert answers == {alpha: "from alpha", "beta": "from beta"}
    assert scripted.requests(alpha)[-1]["headers"]["authorization"] == "Bearer sk-alpha"
    beta = second_model.requests("beta-upstream")[-1]
    assert beta["headers"]["authorization"] == "Bearer sk-beta" and beta["path"] == "/v1/chat/completions"
    assert second_model.requests(alpha) == [] and scripted.requests("beta-upstream") == []

    # The same routes for the app's own chat completions.
    second_model.script("beta-upstream", [{"content": "relayed"}])
    completion = client.chat.completions.create(model="beta", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content == "relayed"
    assert second_model.requests("beta-upstream")[-1]["body"]["model"] == "beta-upstream"


def test_a_langchain_provider_serves_a_pattern(client, second_model):
    model = "llama-3.2"
    second_model.script(model, [{"content": "hello from ollama", "chunk_delay": 0.05, "usage": {"prompt_tokens": 7, "completion_tokens": 4}}])
    assistant = client.beta.assistants.create(model=model, instructions="Be brief.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    deltas = []
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        for event in stream:
            if event.event == "thread.message.delta":
                deltas.append(event.data.delta.content[0].text.value)
        run = stream.get_final_run()
    assert run.status == "completed" and run.usage.prompt_tokens == 7 and run.usage.completion_tokens == 4
    assert "".join(deltas) == "hello from ollama" and len(deltas) > 1  # streamed token by token
    sent = second_model.requests(model)[-1]
    assert sent["path"] == "/api/chat" and sent["body"]["keep_alive"] == "5m"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "Be brief."}

    # The budget holds here too: the provider's stream is read up to max_completion_tokens.
    long = " ".join(f"token{i} of a long answer" for i in range(300))
    second_model.script(model, [{"content": long, "chunk_size": 9}])
    client.beta.threads.messages.create(thread.id, role="user", content="more")
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256)
    assert run.status == "incomplete" and run.incomplete_details.reason == "max_completion_tokens"
    assert run.usage.completion_tokens == 256
    text = client.beta.threads.messages.list(thread.id).data[0].content[0].text.value
    assert count(text) == 256 and long.startswith(text)
    assert second_model.requests(model)[-1]["body"]["options"]["num_predict"] == 256

    # Not relayed by /chat/completions, which speaks to OpenAI-compatible endpoints only.
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert "ollama" in caught.value.message and caught.value.param == "model"


def test_models_lists_what_the_catalogue_serves(client, scripted):
    alpha = unique("alpha-")
    scripted.script(alpha, [{"content": "listed"}])  # the scripted endpoint now lists it
    models = {m.id: m for m in client.models.list()}
    assert {"beta", "llama-3.2", alpha, WORDLLAMA_MODEL} <= set(models)
    assert "scripted-model" not in models  # the endpoint serves it, but no entry routes it
    assert models[alpha].owned_by == "alpha-lab" and models["beta"].owned_by == "openai"
    assert models["llama-3.2"].owned_by == "ollama"
    assert client.models.retrieve("beta").id == "beta"
    assert client.models.retrieve("alpha-anything").owned_by == "alpha-lab"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gamma")


def test_unknown_models_are_refused_up_front(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.create(model="gamma")
    assert caught.value.code == "model_not_found" and caught.value.param == "model"
    assert caught.value.body["message"] == "The requested model 'gamma' does not exist."
    assistant = client.beta.assistants.create(model="beta")
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.assistants.update(assistant.id, model="gamma")
    assert caught.value.code == "model_not_found"
    assert client.beta.assistants.retrieve(assistant.id).model == "beta"

    thread = client.beta.threads.create()
    for create in (
        lambda: client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id, model="gamma"),
        lambda: client.beta.threads.create_and_run(assistant_id=assistant.id, model="gamma"),
        lambda: client.chat.completions.create(model="gamma", messages=[{"role": "user", "content": "x"}]),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            create()
        assert caught.value.code == "model_not_found" and caught.value.param == "model"
        assert caught.value.body["message"] == "The model `gamma` does not exist or you do not have access to it."
    assert client.beta.threads.runs.list(thread.id).data == []


def test_a_key_with_its_own_endpoint_overrides_the_catalogue(catalog_server, second_model):
    key = new_key(catalog_server, name="own endpoint", model_base_url=second_model.base_url, model_api_key="sk-own")
    client = as_key(catalog_server, key)
    model = unique("anything-")  # in no catalogue entry: the key's endpoint serves what it serves
    second_model.script(model, [{"content": "own endpoint"}, {"content": "own relay"}])
    assistant = client.beta.assistants.create(model=model)
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hi"}]}
    )
    assert run.status == "completed"
    assert second_model.requests(model)[-1]["headers"]["authorization"] == "Bearer sk-own"
    completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content == "own relay"
    assert model in {m.id for m in client.models.list()}
