"""web_search in responses: `external_web_access: false` makes no live request (the call's result says
so), and a search that failed shows as a `web_search_call` with status `failed`. The search provider
is the fake SearxNG of tests/fake_search.py (a query with the word "boom" gets an HTTP 500)."""

from __future__ import annotations

import openai
import pytest


def _search_requests(fake_search, query: str) -> list[dict]:
    return [r for r in fake_search.requests if r["query"] == query]


def test_no_live_request_without_external_web_access(client, scripted, model_name, fake_search):
    query = f"offline {model_name}"
    scripted.script(model_name, [
        {"tool_calls": [{"name": "web_search", "arguments": {"query": query}}]},
        {"content": "I could not search the web."},
    ])
    with client.responses.stream(
        model=model_name, input="Search.", tools=[{"type": "web_search", "external_web_access": False}],
    ) as stream:
        events = list(stream)
        response = stream.get_final_response()
    search, answer = response.output
    assert search.type == "web_search_call" and search.status == "completed"
    assert search.action.query == query
    assert _search_requests(fake_search, query) == []
    # What the model was given as the call's result.
    tool_message = scripted.requests(model_name)[1]["body"]["messages"][-1]
    assert tool_message["role"] == "tool" and "external_web_access: false" in tool_message["content"]
    assert answer.type == "message"
    assert response.tools[0].type == "web_search" and response.tools[0].external_web_access is False
    assert "response.web_search_call.completed" in {e.type for e in events}

    # The default (and `true`) searches the live web.
    live = f"online {model_name}"
    scripted.script(model_name, [
        {"tool_calls": [{"name": "web_search", "arguments": {"query": live}}]},
        {"content": "Found."},
    ])
    searched = client.responses.create(
        model=model_name, input="Search.", tools=[{"type": "web_search", "external_web_access": True}],
    )
    assert searched.output[0].status == "completed" and len(_search_requests(fake_search, live)) == 1


def test_a_failed_search_shows_as_failed(client, scripted, model_name, fake_search):
    query = f"boom {model_name}"
    scripted.script(model_name, [
        {"tool_calls": [{"name": "web_search", "arguments": {"query": query}}]},
        {"content": "The search is down."},
    ])
    with client.responses.stream(model=model_name, input="Search.", tools=[{"type": "web_search"}]) as stream:
        events = list(stream)
        response = stream.get_final_response()
    search, answer = response.output
    assert search.type == "web_search_call" and search.status == "failed"
    assert len(_search_requests(fake_search, query)) == 1
    done = [e.item for e in events if e.type == "response.output_item.done" and e.item.type == "web_search_call"]
    assert [d.status for d in done] == ["failed"]
    assert client.responses.retrieve(response.id).output[0].status == "failed"
    assert answer.type == "message" and response.status == "completed"


def test_external_web_access_must_be_a_boolean(client, model_name):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=model_name, input="x", tools=[{"type": "web_search", "external_web_access": "no"}],
        )
    assert caught.value.body["param"] == "tools[0].external_web_access"
