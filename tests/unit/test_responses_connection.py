"""A WebSocket connection's memory of its latest response, without a server: which request the
service gets for each `response.create`, and what is kept or forgotten after each turn."""

from __future__ import annotations

import json

import pytest

from api.contract.errors import InvalidRequest, NotFound
from api.http.encoders import responses_ws
from api.responses.connection import Connection, Latest, PreviousResponseNotFound
from api.responses.params import CreateResponse

USER = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
ASSISTANT = {
    "type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
    "content": [{"type": "output_text", "text": "hello", "annotations": []}],
}
CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "arguments": "{}", "status": "completed"}
OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": "42"}


def body(**fields) -> CreateResponse:
    return CreateResponse.model_validate({"model": "m", "stream": True, **fields})


def done(response_id: str, output: list[dict], *, store: bool = False, status: str = "completed") -> dict:
    return {"id": response_id, "status": status, "store": store, "output": output}


# (latest kept, request) → (previous_response_id the service gets, its input, the id the response shows)
TURNS = [
    pytest.param(None, body(input="hi"), None, "hi", None, id="a new chain"),
    pytest.param(
        Latest("resp_1", False, None, [USER]), body(input="more", previous_response_id="resp_1"),
        None, [USER, {**USER, "content": [{"type": "input_text", "text": "more"}]}], "resp_1",
        id="continuing the latest, not stored: its items in front",
    ),
    pytest.param(
        Latest("resp_2", False, "resp_0", [USER]), body(input=[OUTPUT], previous_response_id="resp_2"),
        "resp_0", [USER, OUTPUT], "resp_2", id="a chain on a stored response keeps it as the base",
    ),
    pytest.param(
        Latest("resp_1", True, None, [USER]), body(input="more", previous_response_id="resp_1"),
        "resp_1", "more", "resp_1", id="continuing a stored response: the service reads it",
    ),
    pytest.param(
        Latest("resp_1", False, None, [USER]), body(input="more", previous_response_id="resp_9"),
        "resp_9", "more", "resp_9", id="another id: left to the service (stored, or not found)",
    ),
]


@pytest.mark.parametrize("latest, request_body, sent_previous, sent_input, shown", TURNS)
def test_the_request_the_service_gets(latest, request_body, sent_previous, sent_input, shown):
    turn = Connection(latest).turn(request_body)
    assert turn.body.previous_response_id == sent_previous
    assert turn.body.input == sent_input
    assert turn.shown_previous == shown


def test_a_settled_turn_becomes_the_latest_with_its_output():
    connection = Connection()
    first = connection.turn(body(input="hi", store=False))
    connection.settled(first, done("resp_1", [ASSISTANT]), stored=False)
    assert connection.latest.id == "resp_1" and connection.latest.base is None
    assert [i["role"] for i in connection.latest.items] == ["user", "assistant"]
    second = connection.turn(body(input=[OUTPUT], previous_response_id="resp_1"))
    connection.settled(second, done("resp_2", [CALL]), stored=False)
    assert [i["type"] for i in connection.latest.items] == ["message", "message", "function_call_output", "function_call"]


@pytest.mark.parametrize(
    "status, kept", [("completed", True), ("incomplete", True), ("failed", False), ("cancelled", False)]
)
def test_what_a_turn_leaves_behind(status, kept):
    connection = Connection(Latest("resp_1", False, None, [USER]))
    turn = connection.turn(body(input="more", previous_response_id="resp_1"))
    connection.settled(turn, done("resp_2", [], status=status), stored=False)
    assert (connection.latest is not None and connection.latest.id == "resp_2") is kept
    if not kept:
        assert connection.latest is None  # the response it continued is evicted too


def test_a_failed_turn_evicts_only_the_response_it_continued():
    connection = Connection(Latest("resp_1", False, None, [USER]))
    connection.failed(connection.turn(body(input="x")))
    assert connection.latest is not None
    connection.failed(connection.turn(body(input="x", previous_response_id="resp_1")))
    assert connection.latest is None


def test_not_found_previous_responses_get_the_mode_s_code():
    turn = Connection().turn(body(input="x", previous_response_id="resp_9"))
    explained = Connection.explain(NotFound("Previous response ...", param="previous_response_id"), turn)
    assert isinstance(explained, PreviousResponseNotFound) and explained.status_code == 400
    assert explained.code == "previous_response_not_found" and "resp_9" in explained.message
    other = InvalidRequest("bad", param="input")
    assert Connection.explain(other, turn) is other


def test_a_stream_s_error_event_goes_out_in_the_socket_s_error_shape():
    sse_error = {"type": "error", "sequence_number": 7, "code": "stream_expired", "message": "gone", "param": None}
    assert json.loads(responses_ws.encode(sse_error)) == {
        "type": "error",
        "status": 500,
        "sequence_number": 7,
        "error": {"type": "server_error", "code": "stream_expired", "message": "gone", "param": None},
    }
    delta = {"type": "response.output_text.delta", "sequence_number": 3, "delta": "hi"}
    assert json.loads(responses_ws.encode(delta)) == delta
    refused = json.loads(responses_ws.error(InvalidRequest("bad", param="input")))
    assert refused == {
        "type": "error",
        "status": 400,
        "error": {"type": "invalid_request_error", "code": "invalid_request_error", "message": "bad", "param": "input"},
    }
