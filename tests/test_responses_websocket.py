"""WebSocket mode of the Responses API, driven by the official SDK's `client.responses.connect()`:
streamed turns (the same events as the SSE stream), function calls and their outputs, `store:
false` chains kept by the connection, warm-ups, queued turns, error events, and the handshake's
authentication."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import openai
import pytest
from openai._models import validate_type
from openai.types.responses import ResponseStreamEvent
from openai.types.responses.responses_server_event import ResponsesServerEvent
from websockets.exceptions import ConnectionClosedOK, InvalidStatus

from tests.conftest import _extra_server, _own_database, stop_process, wait_for
from tests.test_tenancy import new_key

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def turn(connection) -> list[dict]:
    """The events of one turn, as sent, each checked against the SDK's types (strict) and parsed
    by the connection as `recv()` parses it, up to its terminal event or an error."""
    events = []
    while True:
        raw = connection.recv_bytes()
        event = json.loads(raw)
        validate_type(type_=ResponsesServerEvent, value=event)
        assert connection.parse_event(raw).type == event["type"]
        events.append(event)
        if event["type"] in TERMINAL or event["type"] == "error":
            return events


async def aturn(connection) -> list[dict]:
    events = []
    while True:
        event = json.loads(await connection.recv_bytes())
        validate_type(type_=ResponsesServerEvent, value=event)
        events.append(event)
        if event["type"] in TERMINAL or event["type"] == "error":
            return events


def sse_events(client: openai.OpenAI, **body) -> list[dict]:
    with client.responses.create(stream=True, **body) as stream:
        return [event.to_dict() for event in stream]


def _collapsed(events: list[dict]) -> list[tuple[str, frozenset, str]]:
    """(type, fields, text) per event, a run of deltas of one item as one: the engine merges the
    deltas that arrive within its delta window, so how many there are depends on timing."""
    out: list[tuple[str, frozenset, str]] = []
    for event in events:
        delta = event.get("delta") if event["type"].endswith(".delta") else None
        if delta is not None and out and out[-1][0] == event["type"]:
            kind, fields, text = out.pop()
            out.append((kind, fields, text + delta))
            continue
        out.append((event["type"], frozenset(event), delta or ""))
    return out


def assert_same_events(over_socket: list[dict], over_http: list[dict]) -> None:
    """The same events in the same order, with the same fields (and the same text in their deltas),
    as the SSE stream, each numbered in order from 0."""
    for event in over_http:
        validate_type(type_=ResponseStreamEvent, value=event)
    for events in (over_socket, over_http):
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert _collapsed(over_socket) == _collapsed(over_http)


def error_of(events: list[dict]) -> dict:
    assert [e["type"] for e in events] == ["error"], events
    (event,) = events
    assert set(event) == {"type", "status", "error"}, event
    assert set(event["error"]) == {"type", "code", "message", "param"}, event
    assert isinstance(event["error"]["code"], str) and event["error"]["message"]
    return event


def test_a_streamed_turn_carries_the_sse_stream_events(client, scripted, model_name):
    script = [{"content": "Counting: one, two, three."}]
    scripted.script(model_name, script)
    with client.responses.connect() as connection:
        connection.response.create(model=model_name, input=[{"role": "user", "content": "Count from 1 to 3."}])
        events = turn(connection)
    scripted.script(model_name, script)
    over_http = sse_events(client, model=model_name, input=[{"role": "user", "content": "Count from 1 to 3."}])
    assert_same_events(events, over_http)
    final = events[-1]["response"]
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert final["status"] == "completed" and final["store"] is True
    assert final["output"][0]["content"][0]["text"] == "Counting: one, two, three."
    # Stored: the HTTP API has it.
    assert client.responses.retrieve(final["id"]).output_text == "Counting: one, two, three."


@pytest.mark.asyncio
async def test_async_connection_streams_text(aclient, scripted, model_name):
    scripted.script(model_name, [{"content": "Hello over a socket."}])
    async with aclient.responses.connect() as connection:
        await connection.response.create(model=model_name, input="Hi", stream=True)
        events = await aturn(connection)
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert deltas == "Hello over a socket."
        assert events[-1]["response"]["status"] == "completed"


def test_a_function_call_and_its_output_continue_on_the_socket(client, scripted, model_name):
    script = [
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_paris1"}]},
        {"content": "Sunny in Paris."},
    ]
    scripted.script(model_name, script)
    with client.responses.connect() as connection:
        connection.response.create(model=model_name, input="Weather in Paris?", tools=[WEATHER])
        first = turn(connection)
        assert "response.function_call_arguments.done" in [e["type"] for e in first]
        (call,) = first[-1]["response"]["output"]
        assert call["type"] == "function_call" and call["call_id"] == "call_paris1"
        connection.response.create(
            model=model_name,
            previous_response_id=first[-1]["response"]["id"],
            tools=[WEATHER],
            input=[{"type": "function_call_output", "call_id": "call_paris1", "output": "sunny, 21 °C"}],
        )
        second = turn(connection)
    final = second[-1]["response"]
    assert final["status"] == "completed" and final["previous_response_id"] == first[-1]["response"]["id"]
    assert final["output"][0]["content"][0]["text"] == "Sunny in Paris."
    sent = scripted.requests(model_name)[-1]["body"]["messages"]
    assert sent[-1] == {"role": "tool", "content": "sunny, 21 °C", "tool_call_id": "call_paris1"}
    # The same two turns over HTTP stream the same events.
    scripted.script(model_name, script)
    http_first = sse_events(client, model=model_name, input="Weather in Paris?", tools=[WEATHER])
    assert_same_events(first, http_first)
    http_second = sse_events(
        client, model=model_name, previous_response_id=http_first[-1]["response"]["id"], tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": "call_paris1", "output": "sunny, 21 °C"}],
    )
    assert_same_events(second, http_second)


@pytest.mark.asyncio
async def test_a_store_false_chain_lives_on_its_connection_only(aclient, scripted, model_name):
    scripted.script(
        model_name,
        [
            {"content": "Noted: cobalt."},
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}, "id": "call_oslo"}]},
            {"content": "Cold in Oslo; the word is cobalt."},
        ],
    )
    async with aclient.responses.connect() as connection:
        await connection.response.create(model=model_name, store=False, input="Remember the code word cobalt.")
        first = (await aturn(connection))[-1]["response"]
        assert first["store"] is False and first["status"] == "completed"
        with pytest.raises(openai.NotFoundError):
            await aclient.responses.retrieve(first["id"])  # not stored
        await connection.response.create(
            model=model_name, store=False, previous_response_id=first["id"], input="Weather in Oslo?", tools=[WEATHER]
        )
        second = (await aturn(connection))[-1]["response"]
        assert second["previous_response_id"] == first["id"] and second["output"][0]["type"] == "function_call"
        await connection.response.create(
            model=model_name, store=False, previous_response_id=second["id"], tools=[WEATHER],
            input=[{"type": "function_call_output", "call_id": "call_oslo", "output": "-3 °C"}],
        )
        third = (await aturn(connection))[-1]["response"]
        assert third["status"] == "completed" and third["previous_response_id"] == second["id"]
    # The model saw the whole chain: the first exchange, the call and its output.
    sent = scripted.requests(model_name)[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "tool"]
    assert sent[1]["content"] == "Noted: cobalt." and sent[-1]["tool_call_id"] == "call_oslo"
    async with aclient.responses.connect() as connection:
        await connection.response.create(model=model_name, store=False, previous_response_id=third["id"], input="Again?")
        event = error_of(await aturn(connection))
        assert event["status"] == 400
        assert event["error"]["code"] == "previous_response_not_found"
        assert event["error"]["param"] == "previous_response_id"
        # The connection goes on: a new chain with the full context.
        await connection.response.create(model=model_name, store=False, input="Start over.")
        assert (await aturn(connection))[-1]["response"]["status"] == "completed"


def test_a_failed_continuation_evicts_the_response_it_continued(client, scripted, model_name):
    with client.responses.connect() as connection:
        connection.response.create(model=model_name, store=False, input="First.")
        first = turn(connection)[-1]["response"]
        connection.response.create(
            model=model_name, store=False, previous_response_id=first["id"],
            input=[{"type": "function_call_output", "call_id": "call_missing", "output": "?"}],
        )
        assert error_of(turn(connection))["error"]["param"] == "input"
        connection.response.create(model=model_name, store=False, previous_response_id=first["id"], input="Again.")
        assert error_of(turn(connection))["error"]["code"] == "previous_response_not_found"


def test_a_warm_up_makes_no_model_call_and_starts_a_chain(client, scripted, model_name):
    scripted.script(model_name, [{"content": "Ready."}])
    with client.responses.connect() as connection:
        connection.send(
            {
                "type": "response.create", "generate": False, "model": model_name, "store": False,
                "instructions": "You are a coding agent.", "tools": [WEATHER],
                "input": [{"role": "user", "content": "The repository is assistgraph."}],
            }
        )
        warm = turn(connection)
        assert [e["type"] for e in warm] == ["response.created", "response.completed"]
        response = warm[-1]["response"]
        assert response["output"] == [] and response["usage"]["output_tokens"] == 0
        assert response["instructions"] == "You are a coding agent."
        assert scripted.requests(model_name) == []
        connection.response.create(
            model=model_name, store=False, previous_response_id=response["id"], input="What is it called?"
        )
        answer = turn(connection)[-1]["response"]
    assert answer["status"] == "completed" and answer["previous_response_id"] == response["id"]
    (request,) = scripted.requests(model_name)
    texts = [m["content"] for m in request["body"]["messages"]]
    assert texts == ["The repository is assistgraph.", "What is it called?"]


def test_turns_sent_together_run_one_after_the_other(client, scripted, model_name):
    scripted.script(model_name, [{"content": "one, held", "gate": "ws-queue", "gate_after": 1}, {"content": "two"}])
    with client.responses.connect() as connection:
        connection.response.create(model=model_name, store=False, input="First")
        scripted.wait_for_gate("ws-queue")  # the first response is running
        connection.response.create(model=model_name, store=False, input="Second")
        scripted.release("ws-queue")
        first, second = turn(connection), turn(connection)
    for events, text in ((first, "one, held"), (second, "two")):
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert len({e["response"]["id"] for e in events if "response" in e}) == 1
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == text
    assert first[-1]["response"]["id"] != second[-1]["response"]["id"]


def test_a_stored_response_continues_from_another_connection(client, scripted, model_name):
    scripted.script(model_name, [{"content": "Stored."}, {"content": "Continued."}])
    with client.responses.connect() as connection:
        connection.response.create(model=model_name, input="Keep this.")
        first = turn(connection)[-1]["response"]
    with client.responses.connect() as connection:
        connection.response.create(model=model_name, previous_response_id=first["id"], input="Go on.")
        second = turn(connection)[-1]["response"]
    assert second["status"] == "completed" and second["previous_response_id"] == first["id"]
    sent = scripted.requests(model_name)[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == ["Keep this.", "Stored.", "Go on."]


def test_bad_events_get_error_events_and_the_connection_stays_open(client, scripted, model_name):
    with client.responses.connect() as connection:
        connection.send_raw("{not json")
        assert error_of(turn(connection))["error"]["code"] == "invalid_json"
        connection.send({"type": "response.cancel"})
        event = error_of(turn(connection))
        assert event["error"]["code"] == "invalid_event_type" and event["error"]["param"] == "type"
        connection.response.create(model=model_name, input="Hi", temperature=5)
        event = error_of(turn(connection))
        assert event["status"] == 400 and event["error"]["param"] == "temperature"
        connection.send({"type": "response.create", "model": model_name, "input": "Hi", "unknown_field": 1})
        assert error_of(turn(connection))["error"]["param"] == "unknown_field"
        connection.send({"type": "response.create", "model": model_name, "input": "Hi", "background": True})
        assert error_of(turn(connection))["error"]["param"] == "background"
        connection.send({"type": "response.create", "input": "Hi"})
        assert error_of(turn(connection))["error"]["param"] == "model"
        connection.send_raw('{"type": "response.create", "model": "%s", "input": "nul \\u0000 here"}' % model_name)
        event = error_of(turn(connection))
        assert event["error"]["param"] == "input" and "NUL" in event["error"]["message"]
        connection.response.steer(previous_response_id="resp_1", input="Shorter, please.")
        refused = json.loads(connection.recv_bytes())
        validate_type(type_=ResponsesServerEvent, value=refused)
        assert refused["type"] == "response.steer.failed" and refused["error"]["code"] == "steering_not_supported"
        assert refused["steer"] == {"previous_response_id": "resp_1", "input": "Shorter, please."}
        # JSON in a binary message is taken too.
        connection.send_raw(json.dumps({"type": "response.create", "model": model_name, "input": "Still here?"}).encode())
        assert turn(connection)[-1]["response"]["status"] == "completed"


def test_the_handshake_needs_a_valid_key(auth_server, scripted, model_name):
    for key in ("sk-wrong", ""):
        refused = openai.OpenAI(base_url=auth_server.url, api_key=key or "unset", max_retries=0)
        if not key:
            refused.api_key = ""
        with pytest.raises(InvalidStatus) as caught:
            with refused.responses.connect():
                pass
        assert caught.value.response.status_code == 401
        assert json.loads(caught.value.response.body)["error"]["code"] == "invalid_api_key"
    key = new_key(auth_server, name="websocket tenant")
    other = new_key(auth_server, name="another tenant")
    scripted.script(model_name, [{"content": "Yours."}])
    mine = openai.OpenAI(base_url=auth_server.url, api_key=key["value"], max_retries=0)
    with mine.responses.connect() as connection:
        connection.response.create(model=model_name, input="Hello")
        response = turn(connection)[-1]["response"]
    assert mine.responses.retrieve(response["id"]).output_text == "Yours."
    theirs = openai.OpenAI(base_url=auth_server.url, api_key=other["value"], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(response["id"])


@pytest.fixture(scope="module")
def short_socket_server(scripted, workdir, database_url):
    """A server whose WebSocket connections last two seconds."""
    srv = _extra_server(
        scripted, workdir, "short-socket", _own_database(database_url, "short_socket"),
        ASSISTGRAPH_WEBSOCKET_MAX_SECONDS="2",
    )
    yield srv
    stop_process(srv.proc)


def test_a_connection_ends_at_its_time_limit_after_its_response(short_socket_server, scripted, model_name):
    scripted.script(model_name, [{"content": "Just in time."}])
    client = openai.OpenAI(base_url=short_socket_server.url, api_key="sk-client", max_retries=0)
    with client.responses.connect() as connection:
        connection.response.create(model=model_name, input="Hi")
        assert turn(connection)[-1]["response"]["status"] == "completed"
        event = error_of(turn(connection))  # pushed once the limit passed, with no request in flight
        assert event["status"] == 400 and event["error"]["code"] == "websocket_connection_limit_reached"
        with pytest.raises(ConnectionClosedOK) as closed:
            connection.recv_bytes()
    assert closed.value.rcvd.code == 1000


def test_closing_the_socket_cancels_the_response_it_runs(client, scripted, model_name):
    scripted.script(model_name, [{"content": "a long answer that never comes", "gate": "ws-close", "gate_after": 1}])
    with client.responses.connect() as connection:
        connection.response.create(model=model_name, input="Take your time.")
        created = json.loads(connection.recv_bytes())
        assert created["type"] == "response.created"
        scripted.wait_for_gate("ws-close")
    scripted.release("ws-close")
    response_id = created["response"]["id"]
    assert wait_for(lambda: client.responses.retrieve(response_id).status == "cancelled")


@pytest.fixture(scope="module")
def node_sdk(tmp_path_factory):
    """The openai package for Node, installed with npm into a folder of the test's own."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("the Node SDK test needs node and npm on PATH")
    folder = tmp_path_factory.mktemp("node-sdk")
    installed = subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund", "openai@^7.60", "ws"],
        cwd=folder, capture_output=True, text=True, timeout=300,
    )
    if installed.returncode != 0:
        pytest.skip(f"npm could not install the openai package: {installed.stderr[-500:]}")
    shutil.copy(Path(__file__).parent / "node" / "responses_ws.cjs", folder)
    return node, folder


def test_the_node_sdk_streams_a_turn_a_call_and_its_continuation(node_sdk, server, scripted, model_name):
    node, folder = node_sdk
    scripted.script(
        model_name,
        [
            {"content": "1, 2, 3."},
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "call_node"}]},
            {"content": "Sunny in Paris."},
        ],
    )
    ran = subprocess.run(
        [node, "responses_ws.cjs", server.url, model_name], cwd=folder, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, (ran.stderr, ran.stdout)
    text, call, answer = json.loads(ran.stdout)
    for events in (text, call, answer):
        assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        for event in events:
            validate_type(type_=ResponsesServerEvent, value=event)
    deltas = "".join(e["delta"] for e in text if e["type"] == "response.output_text.delta")
    assert deltas == "1, 2, 3."
    assert call[-1]["response"]["output"][0]["call_id"] == "call_node"
    assert answer[-1]["response"]["previous_response_id"] == call[-1]["response"]["id"]
    assert answer[-1]["response"]["output"][0]["content"][0]["text"] == "Sunny in Paris."
