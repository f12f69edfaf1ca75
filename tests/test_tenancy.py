"""API keys, the admin API, per-key model credentials, and tenant isolation on every endpoint."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, SECRET_KEY

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}


def admin(server, method: str, path: str = "", **kw) -> httpx.Response:
    return httpx.request(
        method, f"{server.url}/admin/keys{path}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10, **kw
    )


def new_key(server, **body) -> dict:
    response = admin(server, "POST", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def as_key(server, key: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key=key["value"], _strict_response_validation=True, max_retries=0)


@pytest.fixture(scope="module")
def tenants(auth_server):
    return new_key(auth_server, name="tenant A"), new_key(auth_server, name="tenant B")


def test_requests_without_a_valid_key_are_refused(auth_server):
    for headers in ({}, {"Authorization": "Bearer sk-ag-not-a-key"}, {"Authorization": "Basic abc"}):
        response = httpx.get(f"{auth_server.url}/assistants", headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
        assert set(error) == {"message", "type", "param", "code"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=auth_server.url, api_key="sk-wrong", max_retries=0).beta.assistants.list()


def test_admin_api_needs_the_admin_key(auth_server, tenants):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {tenants[0]['value']}"}):
        response = httpx.get(f"{auth_server.url}/admin/keys", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_key_lifecycle(auth_server):
    created = new_key(auth_server, name="ci", allowed_models=["m-allowed"])
    assert created["value"].startswith("sk-ag-") and created["id"].startswith("key_")
    assert created["redacted_value"] != created["value"] and created["revoked_at"] is None

    fetched = admin(auth_server, "GET", f"/{created['id']}").json()
    assert "value" not in fetched and fetched["name"] == "ci"
    listed = admin(auth_server, "GET", params={"limit": 100}).json()
    assert created["id"] in [k["id"] for k in listed["data"]]
    assert all("value" not in k for k in listed["data"])
    assert admin(auth_server, "GET", "/key_missing").status_code == 404

    client = as_key(auth_server, created)
    assert client.beta.assistants.list().data == []
    revoked = admin(auth_server, "DELETE", f"/{created['id']}").json()
    assert revoked["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError):
        client.beta.assistants.list()


def test_keys_in_one_project_share_objects(auth_server):
    first = new_key(auth_server, name="one")
    second = new_key(auth_server, name="two", project_id=first["project_id"])
    assistant = as_key(auth_server, first).beta.assistants.create(model="m-shared")
    assert as_key(auth_server, second).beta.assistants.retrieve(assistant.id).id == assistant.id


def test_per_key_model_credentials_reach_the_model(auth_server, scripted, model_name):
    own = new_key(auth_server, model_base_url=scripted.base_url, model_api_key="sk-tenant-own-model-key")
    plain = new_key(auth_server)
    for key, expected in ((own, "Bearer sk-tenant-own-model-key"), (plain, "Bearer sk-test-model-key")):
        client = as_key(auth_server, key)
        scripted.script(model_name, [{"content": "hello"}])
        assistant = client.beta.assistants.create(model=model_name)
        run = client.beta.threads.create_and_run_poll(
            assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hi"}]}, poll_interval_ms=20
        )
        assert run.status == "completed"
        assert scripted.requests(model_name)[-1]["headers"]["authorization"] == expected
    shown = admin(auth_server, "GET", f"/{own['id']}").json()
    assert shown["has_model_api_key"] is True and "sk-tenant-own-model-key" not in str(shown)


def test_allowed_models_are_enforced(auth_server, scripted, model_name):
    key = new_key(auth_server, allowed_models=[model_name])
    client = as_key(auth_server, key)
    allowed = client.beta.assistants.create(model=model_name)
    other = client.beta.assistants.create(model="m-not-allowed")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError) as err:
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=other.id)
    assert err.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=allowed.id, model="m-not-allowed")
    scripted.script(model_name, [{"content": "ok"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=allowed.id, poll_interval_ms=20)
    assert run.status == "completed"


@pytest.fixture(scope="module")
def tenant_a_objects(auth_server, tenants, scripted):
    """Tenant A's objects: an assistant, a thread with a message, a completed run and a run waiting for tools."""
    client = as_key(auth_server, tenants[0])
    model = "m-tenant-a"
    scripted.script(model, [{"content": "done"}, {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]}])
    assistant = client.beta.assistants.create(model=model, tools=[WEATHER_TOOL])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "secret of tenant A"}])
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20)
    step = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data[0]
    waiting = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "weather"}]}, poll_interval_ms=20
    )
    assert run.status == "completed" and waiting.status == "requires_action"
    file = client.files.create(file=("a.txt", b"tenant A's private notes"), purpose="assistants")
    store = client.vector_stores.create(name="A's store", file_ids=[file.id])
    batch = client.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=[file.id])
    return {
        "file": file.id,
        "vs": store.id,
        "batch": batch.id,
        "asst": assistant.id,
        "thread": thread.id,
        "msg": message.id,
        "run": run.id,
        "step": step.id,
        "wthread": waiting.thread_id,
        "wrun": waiting.id,
        "call": waiting.required_action.submit_tool_outputs.tool_calls[0].id,
    }


# Every endpoint that names an object, called by tenant B with tenant A's ids.
FOREIGN_CALLS = [
    ("GET", "/assistants/{asst}", None),
    ("POST", "/assistants/{asst}", {"name": "stolen"}),
    ("DELETE", "/assistants/{asst}", None),
    ("GET", "/threads/{thread}", None),
    ("POST", "/threads/{thread}", {"metadata": {"k": "v"}}),
    ("DELETE", "/threads/{thread}", None),
    ("POST", "/threads/{thread}/messages", {"role": "user", "content": "hi"}),
    ("GET", "/threads/{thread}/messages", None),
    ("GET", "/threads/{thread}/messages/{msg}", None),
    ("POST", "/threads/{thread}/messages/{msg}", {"metadata": {"k": "v"}}),
    ("DELETE", "/threads/{thread}/messages/{msg}", None),
    ("POST", "/threads/{thread}/runs", {"assistant_id": "{own_asst}"}),
    ("POST", "/threads/{own_thread}/runs", {"assistant_id": "{asst}"}),
    ("POST", "/threads/runs", {"assistant_id": "{asst}"}),
    ("POST", "/threads/{own_thread}/runs", {"assistant_id": "{asst}", "stream": True}),
    ("GET", "/threads/{thread}/runs", None),
    ("GET", "/threads/{thread}/runs/{run}", None),
    ("POST", "/threads/{thread}/runs/{run}", {"metadata": {"k": "v"}}),
    ("POST", "/threads/{wthread}/runs/{wrun}/cancel", None),
    ("POST", "/threads/{wthread}/runs/{wrun}/submit_tool_outputs", {"tool_outputs": [{"tool_call_id": "{call}", "output": "1"}]}),
    ("GET", "/threads/{thread}/runs/{run}/steps", None),
    ("GET", "/threads/{thread}/runs/{run}/steps/{step}", None),
    # A's run reached through B's own thread id must not exist either.
    ("GET", "/threads/{own_thread}/runs/{run}", None),
    # Files and vector stores, and A's objects named inside B's requests.
    ("GET", "/files/{file}", None),
    ("GET", "/files/{file}/content", None),
    ("DELETE", "/files/{file}", None),
    ("GET", "/vector_stores/{vs}", None),
    ("POST", "/vector_stores/{vs}", {"name": "stolen"}),
    ("DELETE", "/vector_stores/{vs}", None),
    ("GET", "/vector_stores/{vs}/files", None),
    ("POST", "/vector_stores/{vs}/files", {"file_id": "{own_file}"}),
    ("GET", "/vector_stores/{vs}/files/{file}", None),
    ("POST", "/vector_stores/{vs}/files/{file}", {"attributes": {"k": "v"}}),
    ("DELETE", "/vector_stores/{vs}/files/{file}", None),
    ("GET", "/vector_stores/{vs}/files/{file}/content", None),
    ("POST", "/vector_stores/{vs}/search", {"query": "private notes"}),
    ("POST", "/vector_stores/{vs}/file_batches", {"file_ids": ["{own_file}"]}),
    ("GET", "/vector_stores/{vs}/file_batches/{batch}", None),
    ("POST", "/vector_stores/{vs}/file_batches/{batch}/cancel", None),
    ("GET", "/vector_stores/{vs}/file_batches/{batch}/files", None),
    ("POST", "/vector_stores/{own_vs}/files", {"file_id": "{file}"}),
    ("POST", "/vector_stores", {"file_ids": ["{file}"]}),
    ("POST", "/threads/{own_thread}/messages", {"role": "user", "content": "x", "attachments": [{"file_id": "{file}", "tools": [{"type": "file_search"}]}]}),
    ("POST", "/assistants", {"model": "m", "tool_resources": {"file_search": {"vector_store_ids": ["{vs}"]}}}),
    ("POST", "/threads", {"tool_resources": {"code_interpreter": {"file_ids": ["{file}"]}}}),
]


def _fill(value, ids):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


@pytest.mark.parametrize("method,path,body", FOREIGN_CALLS, ids=[f"{m} {p}" for m, p, _ in FOREIGN_CALLS])
def test_other_tenants_objects_do_not_exist(auth_server, tenants, tenant_a_objects, method, path, body):
    b = as_key(auth_server, tenants[1])
    own_file = b.files.create(file=("b.txt", b"tenant B"), purpose="assistants").id
    own = {
        "own_asst": b.beta.assistants.create(model="m-b").id,
        "own_thread": b.beta.threads.create().id,
        "own_file": own_file,
        "own_vs": b.vector_stores.create(name="B's store").id,
    }
    ids = {**tenant_a_objects, **own}
    response = httpx.request(
        method,
        auth_server.url + _fill(path, ids),
        json=_fill(body, ids),
        headers={"Authorization": f"Bearer {tenants[1]['value']}", "OpenAI-Beta": "assistants=v2"},
        timeout=10,
    )
    assert response.status_code == 404, response.text
    assert "error" in response.json()


def test_tenant_a_objects_are_untouched_and_listings_are_scoped(auth_server, tenants, tenant_a_objects):
    a, b = as_key(auth_server, tenants[0]), as_key(auth_server, tenants[1])
    ids = tenant_a_objects
    assert a.beta.assistants.retrieve(ids["asst"]).name is None
    assert a.beta.threads.retrieve(ids["thread"]).metadata == {}
    assert a.beta.threads.messages.retrieve(ids["msg"], thread_id=ids["thread"]).content[0].text.value == "secret of tenant A"
    assert a.beta.threads.runs.retrieve(ids["wrun"], thread_id=ids["wthread"]).status == "requires_action"
    assert ids["asst"] in [x.id for x in a.beta.assistants.list(limit=100)]
    assert ids["asst"] not in [x.id for x in b.beta.assistants.list(limit=100)]
    assert ids["file"] in [f.id for f in a.files.list()] and ids["file"] not in [f.id for f in b.files.list()]
    assert ids["vs"] in [v.id for v in a.vector_stores.list(limit=100)]
    assert ids["vs"] not in [v.id for v in b.vector_stores.list(limit=100)]
    assert a.files.content(ids["file"]).read() == b"tenant A's private notes"
    # The default tenant (auth off) is a tenant like any other.
    assert all(x.id != ids["asst"] for x in b.beta.assistants.list(limit=100))


def test_revoking_a_key_ends_its_streams(auth_server, scripted, model_name):
    key = new_key(auth_server)
    client = as_key(auth_server, key)
    answer = "word " * 400
    # The answer stops after a few pieces and goes on only once the stream has ended.
    scripted.script(model_name, [{"content": answer, "chunk_size": 5, "gate": model_name, "gate_after": 10}])
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "talk"}])
    deltas = []
    try:
        with pytest.raises(openai.APIError):
            with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
                for text in stream.text_deltas:
                    if not deltas:
                        scripted.wait_for_gate(model_name)
                        admin(auth_server, "DELETE", f"/{key['id']}")
                    deltas.append(text)
    finally:
        scripted.release(model_name)
    assert deltas and "".join(deltas) != answer  # the stream ended while the answer was held
    with pytest.raises(openai.AuthenticationError):
        client.beta.assistants.list()


def test_no_secret_in_responses_or_logs(auth_server, tenants, scripted, model_name):
    key = new_key(auth_server, model_base_url=scripted.base_url, model_api_key="sk-model-secret-never-logged")
    client = as_key(auth_server, key)
    scripted.script(model_name, [{"content": "ok"}])
    assistant = client.beta.assistants.create(model=model_name)
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id, thread={"messages": [{"role": "user", "content": "hi"}]}, poll_interval_ms=20
    )
    assert run.status == "completed"
    listed = admin(auth_server, "GET", params={"limit": 100}).text
    assert "sk-model-secret-never-logged" not in listed and key["value"] not in listed
    log = auth_server.log()
    for secret in ("sk-model-secret-never-logged", key["value"], tenants[0]["value"], ADMIN_KEY, SECRET_KEY):
        assert secret not in log
