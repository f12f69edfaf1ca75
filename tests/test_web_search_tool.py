"""`web_search` against the fake providers in tests/fake_search.py, over real HTTP.

Failures must come back as "Error: ..." output rather than exceptions, because an exception would
end the run instead of letting the model react.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from tests.fake_search import RESULTS, start_fake_search
from tools.web_search import WebSearchTool


@pytest.fixture(scope="module")
def fake():
    server = start_fake_search()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clear_requests(fake):
    fake.requests.clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_schema_exposes_query_with_description():
    tool = WebSearchTool(provider="duckduckgo")
    schema = tool.tool_call_schema.model_json_schema()
    assert schema["required"] == ["query"]
    assert schema["properties"]["query"]["type"] == "string"
    assert "search" in schema["properties"]["query"]["description"].lower()

    function = convert_to_openai_tool(tool)["function"]
    assert function["name"] == "web_search"
    assert "URL" in function["description"]
    assert list(function["parameters"]["properties"]) == ["query"]
    assert function["parameters"]["properties"]["query"]["description"]


@pytest.mark.asyncio
async def test_searxng_results_reach_the_output(fake):
    tool = WebSearchTool(provider="searxng", searxng_url=fake.url)
    out = await tool.ainvoke({"query": "langgraph checkpoints"})

    assert out.startswith("1. langgraph checkpoints result 1\n")
    assert "URL: https://example.com/langgraph-checkpoints/1" in out
    assert "Snippet 1 about langgraph checkpoints." in out
    assert "5. langgraph checkpoints result 5" in out
    assert "6. " not in out  # default max_results

    [request] = fake.requests
    assert request["method"] == "GET" and request["path"] == "/search"
    assert request["query"] == "langgraph checkpoints"
    assert request["params"]["format"] == "json"


@pytest.mark.asyncio
async def test_searxng_honours_max_results_and_base_url_with_slash(fake):
    tool = WebSearchTool(provider="searxng", searxng_url=fake.url + "/", max_results=2)
    out = await tool.ainvoke({"query": "postgres advisory locks"})
    assert "1. postgres advisory locks result 1" in out
    assert "2. postgres advisory locks result 2" in out
    assert "3. " not in out
    assert RESULTS > 2  # the provider did send more


@pytest.mark.asyncio
async def test_searxng_no_results(fake):
    tool = WebSearchTool(provider="searxng", searxng_url=fake.url)
    assert await tool.ainvoke({"query": "empty page"}) == "No results for 'empty page'."


@pytest.mark.asyncio
async def test_searxng_http_500_is_an_error_output(fake):
    tool = WebSearchTool(provider="searxng", searxng_url=fake.url)
    out = await tool.ainvoke({"query": "boom"})
    assert out.startswith("Error:")
    assert "500" in out


@pytest.mark.asyncio
async def test_searxng_missing_url_is_an_error_output():
    out = await WebSearchTool(provider="searxng").ainvoke({"query": "anything"})
    assert out.startswith("Error:")
    assert "searxng_url" in out


@pytest.mark.asyncio
async def test_searxng_unreachable_is_an_error_output():
    tool = WebSearchTool(provider="searxng", searxng_url=f"http://127.0.0.1:{_free_port()}", timeout=3)
    out = await tool.ainvoke({"query": "anything"})
    assert out.startswith("Error:")
    assert "unreachable" in out


@pytest.mark.asyncio
async def test_searxng_hang_is_bounded_by_timeout(fake):
    tool = WebSearchTool(provider="searxng", searxng_url=fake.url, timeout=1)
    out = await tool.ainvoke({"query": "hang"})
    assert out.startswith("Error:") and "did not answer within 1 s" in out


@pytest.mark.asyncio
async def test_tavily_with_the_right_key(fake):
    tool = WebSearchTool(
        provider="tavily", tavily_api_url=fake.url, tavily_api_key=fake.tavily_api_key, max_results=3
    )
    out = await tool.ainvoke({"query": "fastapi lifespan"})

    assert out.startswith("1. fastapi lifespan result 1\n")
    assert "URL: https://example.com/fastapi-lifespan/3" in out
    assert "Snippet 3 about fastapi lifespan." in out
    assert "4. " not in out

    [request] = fake.requests
    assert request["method"] == "POST" and request["path"] == "/search"
    assert request["body"]["query"] == "fastapi lifespan"
    assert request["body"]["max_results"] == 3
    assert request["headers"]["authorization"] == f"Bearer {fake.tavily_api_key}"


@pytest.mark.asyncio
async def test_tavily_wrong_key_is_an_error_output_without_the_key(fake):
    wrong = "tvly-wrong-key-fedcba9876543210"
    tool = WebSearchTool(provider="tavily", tavily_api_url=fake.url, tavily_api_key=wrong)
    out = await tool.ainvoke({"query": "anything"})
    assert out.startswith("Error:")
    assert "401" in out
    assert wrong not in out and fake.tavily_api_key not in out
    assert wrong not in repr(tool) and wrong not in str(tool.model_dump())


@pytest.mark.asyncio
async def test_tavily_missing_key_is_an_error_output(fake, monkeypatch):
    # An environment key must not stand in for the configured one.
    monkeypatch.setenv("TAVILY_API_KEY", fake.tavily_api_key)
    out = await WebSearchTool(provider="tavily", tavily_api_url=fake.url).ainvoke({"query": "anything"})
    assert out.startswith("Error:")
    assert "API key" in out
    assert fake.requests == []


@pytest.mark.asyncio
async def test_tavily_http_500_and_hang_are_error_outputs(fake):
    tool = WebSearchTool(provider="tavily", tavily_api_url=fake.url, tavily_api_key=fake.tavily_api_key, timeout=1)
    out = await tool.ainvoke({"query": "boom"})
    assert out.startswith("Error:") and "500" in out
    assert fake.tavily_api_key not in out

    out = await tool.ainvoke({"query": "hang"})
    assert out.startswith("Error:") and "did not answer" in out


@pytest.mark.asyncio
async def test_tavily_no_results(fake):
    tool = WebSearchTool(provider="tavily", tavily_api_url=fake.url, tavily_api_key=fake.tavily_api_key)
    assert await tool.ainvoke({"query": "empty"}) == "No results for 'empty'."


@pytest.mark.asyncio
async def test_tool_call_yields_a_tool_message(fake):
    tool = WebSearchTool(provider="searxng", searxng_url=fake.url, max_results=1)
    message = await tool.ainvoke(
        {"type": "tool_call", "id": "call_1", "name": "web_search", "args": {"query": "uvicorn"}}
    )
    assert isinstance(message, ToolMessage)
    assert message.tool_call_id == "call_1"
    assert message.content.startswith("1. uvicorn result 1")


@pytest.mark.asyncio
async def test_search_does_not_block_the_event_loop(fake):
    tool = WebSearchTool(provider="searxng", searxng_url=fake.url, timeout=1)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    try:
        await tool.ainvoke({"query": "hang"})
    finally:
        task.cancel()
    # The ticker ran while the search waited (a blocked loop would let it tick only afterwards).
    assert ticks >= 2


def test_sync_invoke_works_outside_a_loop(fake):
    tool = WebSearchTool(provider="searxng", searxng_url=fake.url, max_results=1)
    assert tool.invoke({"query": "pytest"}).startswith("1. pytest result 1")


def _network_reachable() -> bool:
    try:
        socket.getaddrinfo("duckduckgo.com", 443)
    except OSError:
        return False
    return True


@pytest.mark.asyncio
async def test_duckduckgo_without_network_is_an_error_output():
    tool = WebSearchTool(provider="duckduckgo", timeout=3)
    out = await tool.ainvoke({"query": "python asyncio"})
    assert isinstance(out, str)
    if not _network_reachable():
        assert out.startswith("Error:")
        assert "DuckDuckGo" in out
