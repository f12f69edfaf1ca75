"""Small conformance points, each checked against the contract (assistants-openapi.yaml):

- keys the contract types as non-null are left out when unset, never sent as `null`
  (FunctionObject.description / parameters, OpenAIFile.expires_at / status_details,
  VectorStoreObject.expires_after);
- `include[]` takes only the values of its enum;
- vector store search honours `ranking_options.ranker` and `rewrite_query`.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from ingestion.embeddings import embeddings_from_settings
from tests.conftest import assert_error

INCLUDE = "step_details.tool_calls[*].file_search.results[*].content"


@pytest.fixture
def http(server) -> httpx.Client:
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer sk-client"}, timeout=30) as c:
        yield c


def test_function_tool_without_description_or_parameters_has_no_null_keys(client, http, model_name):
    bare = {"type": "function", "function": {"name": "ping"}}
    raw = client.beta.assistants.with_raw_response.create(model=model_name, tools=[bare])
    function = json.loads(raw.text)["tools"][0]["function"]
    assert function == {"name": "ping", "strict": False}
    assistant = raw.parse()
    assert assistant.tools[0].function.description is None

    # The run copies the assistant's tools as they are; the modify path renders them the same way.
    thread = client.beta.threads.create()
    run = json.loads(http.post(f"/threads/{thread.id}/runs", json={"assistant_id": assistant.id}).text)
    assert run["tools"][0]["function"] == {"name": "ping", "strict": False}
    modified = http.post(f"/assistants/{assistant.id}", json={"tools": [bare, {"type": "function", "function": {
        "name": "pong", "description": "Answers.", "parameters": {"type": "object", "properties": {}}}}]}).json()
    assert [t["function"] for t in modified["tools"]] == [
        {"name": "ping", "strict": False},
        {"name": "pong", "description": "Answers.", "parameters": {"type": "object", "properties": {}}, "strict": False},
    ]


def test_file_without_expiry_has_no_expires_at_or_status_details(client, http):
    created = client.files.with_raw_response.create(file=("a.txt", b"hello"), purpose="assistants")
    body = json.loads(created.text)
    assert "expires_at" not in body and "status_details" not in body
    assert set(body) == {"id", "object", "bytes", "created_at", "filename", "purpose", "status"}
    for shown in (http.get(f"/files/{body['id']}").json(), http.get("/files").json()["data"][0]):
        assert "expires_at" not in shown and "status_details" not in shown
    expiring = client.files.create(
        file=("b.txt", b"bye"), purpose="assistants", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert http.get(f"/files/{expiring.id}").json()["expires_at"] == expiring.created_at + 3600


def test_vector_store_without_expiry_has_no_expires_after(client, http):
    store = client.vector_stores.with_raw_response.create(name="forever")
    body = json.loads(store.text)
    assert "expires_after" not in body and body["expires_at"] is None  # expires_at is nullable
    expiring = http.post("/vector_stores", json={"expires_after": {"anchor": "last_active_at", "days": 2}}).json()
    assert expiring["expires_after"] == {"anchor": "last_active_at", "days": 2}
    cleared = http.post(f"/vector_stores/{expiring['id']}", json={"expires_after": None}).json()
    assert "expires_after" not in cleared and cleared["expires_at"] is None
    listed = {s["id"]: s for s in http.get("/vector_stores", params={"limit": 100}).json()["data"]}
    assert "expires_after" not in listed[body["id"]]


@pytest.mark.parametrize("value", ["step_details.tool_calls[*].function.output", "content", ""])
def test_invalid_include_values_are_400(client, http, model_name, value):
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create()
    expected = f"Invalid value for 'include[]': '{value}'. Supported values are: '{INCLUDE}'."
    resp = http.post(f"/threads/{thread.id}/runs", params={"include[]": [value]}, json={"assistant_id": assistant.id})
    assert_error(resp, 400, param="include", message=expected)
    assert client.beta.threads.runs.list(thread.id).data == []  # nothing was created
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id, include=[INCLUDE])
    assert run.status == "completed"
    for path in (f"/threads/{thread.id}/runs/{run.id}/steps", f"/threads/{thread.id}/runs/{run.id}/events"):
        assert_error(http.get(path, params={"include[]": [INCLUDE, value]}), 400, param="include", message=expected)
    step = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, include=[INCLUDE]).data[0]
    assert_error(
        http.get(f"/threads/{thread.id}/runs/{run.id}/steps/{step.id}", params={"include[]": value}),
        400, param="include", message=expected,
    )
    resp = http.post("/threads/runs", params={"include[]": value}, json={"assistant_id": assistant.id})
    assert_error(resp, 400, param="include", message=expected)


# --- vector store search: ranker and rewrite_query ---------------------------------------------

DOCS = {
    "returns.txt": "Return policy: electronics may be returned within 30 days with the receipt. "
    "Opened software cannot be returned.",
    "garden.txt": "Tomatoes need six hours of sun a day and deep watering twice a week in summer.",
    "vault.txt": "The vault in room B12 is opened with the code ZEPHYR-5521 on weekdays only.",
}


@pytest.fixture(scope="module")
def store(server):
    from tests.conftest import sdk

    client = sdk(server.url)
    files = [client.files.create(file=(name, text.encode()), purpose="assistants") for name, text in DOCS.items()]
    vs = client.vector_stores.create(name="ranking")
    batch = client.vector_stores.file_batches.create_and_poll(vector_store_id=vs.id, file_ids=[f.id for f in files])
    assert batch.file_counts.completed == len(DOCS)
    return vs


def _cosine(a: list[float], b: list[float]) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_ranker_none_ranks_by_similarity_alone_and_auto_fuses_keywords(client, store):
    embeddings = embeddings_from_settings("default").embeddings
    query = "vault code ZEPHYR-5521"
    plain = client.vector_stores.search(store.id, query=query, ranking_options={"ranker": "none"}).data
    assert {h.filename for h in plain} == set(DOCS)  # every chunk is a semantic neighbour
    vector = embeddings.embed_query(query)
    for hit in plain:
        # The score is the cosine similarity of the query and the chunk (clipped to 0-1): nothing
        # else went into it.
        similarity = _cosine(vector, embeddings.embed_query(hit.content[0].text))
        assert hit.score == pytest.approx(max(0.0, similarity), abs=2e-3)
    assert [h.score for h in plain] == sorted((h.score for h in plain), reverse=True)

    for ranker in ("auto", "default-2024-11-15"):
        fused = client.vector_stores.search(store.id, query=query, ranking_options={"ranker": ranker}).data
        # First by meaning and by keywords: the fused score's maximum; the others are found by one list.
        assert fused[0].filename == "vault.txt" and fused[0].score == 1.0
        assert all(h.score < 0.6 for h in fused[1:])
    default = client.vector_stores.search(store.id, query=query).data
    assert [(h.file_id, h.score) for h in default] == [(h.file_id, h.score) for h in fused]
    assert [h.score for h in plain] != [h.score for h in fused]

    # A word no embedding knows but the text holds: only the keyword half of `auto` finds it first.
    threshold = {"score_threshold": 0.9}
    assert [h.filename for h in client.vector_stores.search(
        store.id, query="ZEPHYR-5521", ranking_options={"ranker": "auto", **threshold}).data] == ["vault.txt"]


def test_rewrite_query_searches_the_keywords(client, http, store):
    question = "What is the return policy for electronics?"
    body = http.post(f"/vector_stores/{store.id}/search", json={"query": question, "rewrite_query": True}).json()
    assert body["search_query"] == ["return policy electronics"]
    assert body["data"][0]["filename"] == "returns.txt"
    # Not rewritten unless asked; a list is rewritten query by query; a query of stop words stays.
    assert http.post(f"/vector_stores/{store.id}/search", json={"query": question}).json()["search_query"] == [question]
    many = http.post(
        f"/vector_stores/{store.id}/search",
        json={"query": ["How much SUN do Tomatoes need?", "what is it", "state-of-the-art vault"], "rewrite_query": True},
    ).json()
    assert many["search_query"] == ["much sun tomatoes need", "what is it", "state-of-the-art vault"]
    page = client.vector_stores.search(store.id, query=question, rewrite_query=True)
    assert page.data[0].filename == "returns.txt"
