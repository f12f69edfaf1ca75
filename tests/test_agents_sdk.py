"""OpenAI's Agents SDK (`openai-agents`) against the server's Responses API: an agent with a function
tool, run with `Runner.run` and `Runner.run_streamed`, over HTTP (`OpenAIResponsesModel`) and over
WebSocket mode (`OpenAIResponsesWSModel`). The SDK keeps the conversation itself (`previous_response_id`
is not used) and executes the tool between two model turns, as agent loops do. Its compaction-aware
session (`OpenAIResponsesCompactionSession`) compacts the history it keeps through `/responses/compact`
and goes on from the compacted window."""

from __future__ import annotations

import httpx
import openai
import pytest
from agents import Agent, OpenAIResponsesCompactionSession, Runner, SQLiteSession, function_tool, set_tracing_disabled
from agents.models.openai_responses import OpenAIResponsesModel, OpenAIResponsesWSModel

# The SDK's traces go to OpenAI's own endpoint unless disabled; nothing leaves this machine.
set_tracing_disabled(True)

MODELS = {"http": OpenAIResponsesModel, "websocket": OpenAIResponsesWSModel}


class _NoHTTP(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"an HTTP request where only the WebSocket should be used: {request.url}")


def _agent(server_url: str, model_name: str, transport: str, asked: list[str]) -> Agent:
    @function_tool
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        asked.append(city)
        return f"{city}: sunny, 21 C"

    # Over WebSocket mode the client's HTTP transport refuses every request: the run can only go
    # through the WebSocket.
    http = httpx.AsyncClient(transport=_NoHTTP()) if transport == "websocket" else None
    client = openai.AsyncOpenAI(base_url=server_url, api_key="sk-client", max_retries=0, http_client=http)
    return Agent(
        name="Weather",
        instructions="Answer with the weather tool.",
        tools=[get_weather],
        model=MODELS[transport](model=model_name, openai_client=client),
    )


def _script(scripted, model_name: str) -> None:
    scripted.script(
        model_name,
        [
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
            {"content": "It is sunny in Oslo, 21 C."},
        ],
    )


def _tool_output_sent(scripted, model_name: str) -> bool:
    """The second model request carried the tool's output (the agent loop went through the server)."""
    second = scripted.requests(model_name)[1]["body"]["messages"]
    return any(m.get("role") == "tool" and "sunny, 21 C" in str(m.get("content")) for m in second)


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", MODELS)
async def test_runner_run_calls_the_tool_and_answers(server, scripted, model_name, transport):
    _script(scripted, model_name)
    asked: list[str] = []
    result = await Runner.run(_agent(server.url, model_name, transport, asked), "What's the weather in Oslo?")
    assert asked == ["Oslo"]
    assert result.final_output == "It is sunny in Oslo, 21 C."
    assert _tool_output_sent(scripted, model_name)


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", MODELS)
async def test_runner_run_streamed_streams_the_answer(server, scripted, model_name, transport):
    _script(scripted, model_name)
    asked: list[str] = []
    result = Runner.run_streamed(_agent(server.url, model_name, transport, asked), "What's the weather in Oslo?")
    deltas, kinds = [], []
    async for event in result.stream_events():
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
            deltas.append(event.data.delta)
        elif event.type == "run_item_stream_event":
            kinds.append(event.item.type)
    assert asked == ["Oslo"]
    assert "".join(deltas) == "It is sunny in Oslo, 21 C."
    assert result.final_output == "It is sunny in Oslo, 21 C."
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"] and kinds[-1] == "message_output_item"


COMPACTION_SUMMARY = "The user asked for the weather of five cities; each was sunny, 21 C."


@pytest.mark.asyncio
@pytest.mark.parametrize("transport", MODELS)
async def test_a_compaction_session_compacts_and_goes_on(server, scripted, model_name, transport):
    # The session compacts through /responses/compact once its history holds ten items other than
    # user messages: three a turn here (the call, its output, the answer), so after the fourth turn.
    compactor = f"gpt-{model_name}"  # the session takes OpenAI model names only
    scripted.script(compactor, [{"content": COMPACTION_SUMMARY}])
    cities = ["Oslo", "Lima", "Rome", "Kyiv", "Doha"]
    scripted.script(model_name, [
        turn for city in cities
        for turn in ({"tool_calls": [{"name": "get_weather", "arguments": {"city": city}}]},
                     {"content": f"It is sunny in {city}, 21 C."})
    ])
    asked: list[str] = []
    agent = _agent(server.url, model_name, transport, asked)
    client = openai.AsyncOpenAI(base_url=server.url, api_key="sk-client", max_retries=0)
    session = OpenAIResponsesCompactionSession(
        "weather", underlying_session=SQLiteSession("weather"), client=client, model=compactor
    )
    for n, city in enumerate(cities):
        result = await Runner.run(agent, f"What's the weather in {city}?", session=session)
        assert result.final_output == f"It is sunny in {city}, 21 C."
        compacted = len(scripted.requests(compactor))
        assert compacted == (n >= 3), (n, compacted)
        if n == 3:
            # The session's history is now the compacted window: the user messages and the compaction item.
            history = await session.get_items()
            assert [(i["type"], i.get("role")) for i in history] == [("message", "user")] * 4 + [("compaction", None)]
            assert [i["content"][0]["text"] for i in history[:4]] == [f"What's the weather in {c}?" for c in cities[:4]]
    assert asked == cities
    # The summarising call saw the four turns; the fifth turn went on from the summary, without them.
    (summarising,) = scripted.requests(compactor)
    assert all(f"sunny in {c}" in summarising["body"]["messages"][-1]["content"] for c in cities[:4])
    fifth = scripted.requests(model_name)[-2]["body"]["messages"]
    assert any(m["role"] == "system" and COMPACTION_SUMMARY in m["content"] for m in fifth)
    assert not any("sunny in Rome" in str(m.get("content")) for m in fifth)
    assert [m["content"] for m in fifth if m["role"] == "user"] == [f"What's the weather in {c}?" for c in cities]
