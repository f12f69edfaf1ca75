"""OpenAI's Agents SDK (`openai-agents`) against the server's Responses API: an agent with a function
tool, run with `Runner.run` and `Runner.run_streamed`, over HTTP (`OpenAIResponsesModel`) and over
WebSocket mode (`OpenAIResponsesWSModel`). The SDK keeps the conversation itself (`previous_response_id`
is not used) and executes the tool between two model turns, as agent loops do."""

from __future__ import annotations

import httpx
import openai
import pytest
from agents import Agent, Runner, function_tool, set_tracing_disabled
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
