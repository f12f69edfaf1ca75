"""The Open Responses compliance suite, test by test (one test per compliance test id, named after it),
against the shared server and the scripted model.

Each test sends what the suite's test sends and checks what it checks: every streamed event against
the Open Responses streaming union (over WebSocket, the union plus the WebSocket error event), every
response against ResponseResource, a compaction against CompactResource. Like the suite, HTTP goes
over plain requests with an SSE parser that splits on LF only, and WebSocket mode over a bare
`websockets` client sending the suite's handshake headers, one request per turn. The scripted model
answers what the suite's prompts ask for (a tool call where a test expects one).
"""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.test_responses_shapes import RESPONSE_RESOURCE, nullable

INTEGER = {"type": "integer"}
STRING = {"type": "string"}
NUMBER = {"type": "number"}


def kind(name: str) -> dict:
    return {"const": name}


def obj(required: dict, optional: dict | None = None) -> dict:
    """An object with these keys required (and these optional); other keys are allowed, as the suite's
    schemas let them through."""
    return {"type": "object", "required": sorted(required), "properties": {**required, **(optional or {})}}


def enum(*values: str) -> dict:
    return {"enum": list(values)}


# --- Open Responses' schemas, as the suite validates with them ------------------------------------

TOP_LOGPROB = obj({"token": STRING, "logprob": NUMBER, "bytes": {"type": "array", "items": INTEGER}})
LOGPROB = obj({**TOP_LOGPROB["properties"], "top_logprobs": {"type": "array", "items": TOP_LOGPROB}})
URL_CITATION = obj({"type": kind("url_citation"), "url": STRING, "start_index": INTEGER, "end_index": INTEGER, "title": STRING})
PART = {
    "anyOf": [
        obj({"type": kind("input_text"), "text": STRING}),
        obj(
            {"type": kind("output_text"), "text": STRING, "annotations": {"type": "array", "items": URL_CITATION}},
            {"logprobs": {"type": "array", "items": LOGPROB}},
        ),
        obj({"type": kind("text"), "text": STRING}),
        obj({"type": kind("summary_text"), "text": STRING}),
        obj({"type": kind("reasoning_text"), "text": STRING}),
        obj({"type": kind("refusal"), "refusal": STRING}),
        obj({"type": kind("input_image"), "image_url": nullable(STRING), "detail": enum("low", "high", "auto")}),
        obj({"type": kind("input_file")}, {"filename": STRING, "file_url": STRING}),
    ]
}
MESSAGE_PART = {"anyOf": [*PART["anyOf"], obj({"type": kind("input_video")})]}
STATUS = enum("in_progress", "completed", "incomplete")
PHASE = enum("commentary", "final_answer")
ITEM = {
    "anyOf": [
        obj(
            {"type": kind("message"), "id": STRING, "status": STATUS,
             "role": enum("user", "assistant", "system", "developer"),
             "content": {"type": "array", "items": MESSAGE_PART}},
            {"phase": PHASE},
        ),
        obj({"type": kind("function_call"), "id": STRING, "call_id": STRING, "name": STRING, "arguments": STRING,
             "status": STATUS}),
        obj({"type": kind("function_call_output"), "id": STRING, "call_id": STRING, "status": STATUS,
             "output": {"anyOf": [STRING, {"type": "array", "items": PART}]}}),
        obj({"type": kind("reasoning"), "id": STRING, "summary": {"type": "array", "items": PART}},
            {"content": {"type": "array", "items": PART}, "encrypted_content": STRING}),
        obj({"type": kind("compaction"), "id": STRING, "encrypted_content": STRING}, {"created_by": STRING}),
    ]
}
USAGE = obj({
    "input_tokens": INTEGER, "output_tokens": INTEGER, "total_tokens": INTEGER,
    "input_tokens_details": obj({"cached_tokens": INTEGER}),
    "output_tokens_details": obj({"reasoning_tokens": INTEGER}),
})
FUNCTION_TOOL = obj({
    "type": kind("function"), "name": STRING, "description": nullable(STRING),
    "parameters": nullable({"type": "object"}), "strict": nullable({"type": "boolean"}),
})
FUNCTION_CHOICE = obj({"type": kind("function")}, {"name": STRING})
TEXT_FORMAT = {
    "anyOf": [
        obj({"type": kind("text")}),
        obj({"type": kind("json_object")}),
        obj({"type": kind("json_schema"), "name": STRING, "description": nullable(STRING), "schema": {},
             "strict": {"type": "boolean"}}),
    ]
}
RESPONSE = {
    **RESPONSE_RESOURCE,
    "properties": {
        **RESPONSE_RESOURCE["properties"],
        "status": STRING,
        "instructions": nullable(STRING),
        "incomplete_details": nullable(obj({"reason": STRING})),
        "output": {"type": "array", "items": ITEM},
        "error": nullable(obj({"code": STRING, "message": STRING})),
        "tools": {"type": "array", "items": FUNCTION_TOOL},
        "tool_choice": {
            "anyOf": [
                FUNCTION_CHOICE,
                enum("none", "auto", "required"),
                obj({"type": kind("allowed_tools"), "tools": {"type": "array", "items": FUNCTION_CHOICE},
                     "mode": enum("none", "auto", "required")}),
            ]
        },
        "text": obj({"format": TEXT_FORMAT}, {"verbosity": enum("low", "medium", "high")}),
        "reasoning": nullable(obj({
            "effort": nullable(enum("none", "low", "medium", "high", "xhigh")),
            "summary": nullable(enum("concise", "detailed", "auto")),
        })),
        "usage": nullable(USAGE),
    },
}
# The suite's ResponseResource has no `user`; a response may carry it all the same.
RESPONSE["required"] = [k for k in RESPONSE_RESOURCE["required"] if k != "user"]
COMPACT_RESOURCE = obj({
    "id": STRING, "object": kind("response.compaction"), "output": {"type": "array", "items": ITEM},
    "created_at": INTEGER, "usage": USAGE,
})


def _event(name: str, optional: dict | None = None, **fields: dict) -> dict:
    return obj({"type": kind(name), "sequence_number": INTEGER, **fields}, optional)


_AT = {"item_id": STRING, "output_index": INTEGER}
_IN_PART = {**_AT, "content_index": INTEGER}
_IN_SUMMARY = {**_AT, "summary_index": INTEGER}
_OBFUSCATION = {"obfuscation": STRING}
_LOGPROBS = {"logprobs": {"type": "array", "items": LOGPROB}}
ERROR_PAYLOAD = obj({"type": STRING, "code": nullable(STRING), "message": STRING, "param": nullable(STRING)},
                    {"headers": {"type": "object", "additionalProperties": STRING}})
STREAMING_EVENT = {
    "anyOf": [
        *(_event(f"response.{s}", response=RESPONSE)
          for s in ("created", "queued", "in_progress", "completed", "failed", "incomplete")),
        *(_event(f"response.output_item.{s}", output_index=INTEGER, item={"anyOf": [ITEM, {"type": "null"}]})
          for s in ("added", "done")),
        *(_event(f"response.content_part.{s}", **_IN_PART, part=PART) for s in ("added", "done")),
        _event("response.output_text.delta", {**_LOGPROBS, **_OBFUSCATION}, **_IN_PART, delta=STRING),
        _event("response.output_text.done", _LOGPROBS, **_IN_PART, text=STRING),
        _event("response.refusal.delta", **_IN_PART, delta=STRING),
        _event("response.refusal.done", **_IN_PART, refusal=STRING),
        _event("response.function_call_arguments.delta", _OBFUSCATION, **_AT, delta=STRING),
        _event("response.function_call_arguments.done", **_AT, arguments=STRING),
        *(_event(f"response.reasoning_summary_part.{s}", **_IN_SUMMARY, part=PART) for s in ("added", "done")),
        _event("response.reasoning.delta", _OBFUSCATION, **_IN_PART, delta=STRING),
        _event("response.reasoning.done", **_IN_PART, text=STRING),
        _event("response.reasoning_summary_text.delta", _OBFUSCATION, **_IN_SUMMARY, delta=STRING),
        _event("response.reasoning_summary_text.done", **_IN_SUMMARY, text=STRING),
        _event("response.output_text.annotation.added", **_IN_PART, annotation_index=INTEGER,
               annotation=nullable(URL_CITATION)),
        _event("error", error=ERROR_PAYLOAD),
    ]
}
WEBSOCKET_ERROR = obj({
    "type": kind("error"), "status": INTEGER,
    "error": obj({"code": STRING, "message": STRING}, {"type": STRING, "param": nullable(STRING)}),
})
WEBSOCKET_EVENT = {"anyOf": [STREAMING_EVENT, WEBSOCKET_ERROR]}


def _members(schema: dict) -> list[dict]:
    return [m for member in schema["anyOf"] for m in _members(member)] if "anyOf" in schema else [schema]


def _typed(schema: dict) -> str | None:
    return schema.get("properties", {}).get("type", {}).get("const")


def schema_errors(value: Any, schema: dict, what: str) -> list[str]:
    """Where `value` breaks `schema`. For a union, what the members of the value's `type` say (a
    plain "valid under none of them" tells nothing), and inside, the closest branch's complaint."""
    if "anyOf" in schema and isinstance(value, dict) and any(_typed(m) for m in _members(schema)):
        same = [m for m in _members(schema) if _typed(m) == value.get("type")]
        if not same:
            return [f"{what}: type {value.get('type')!r} is not in the union"]
        return min((schema_errors(value, m, what) for m in same), key=len)
    found = []
    for error in jsonschema.Draft202012Validator(schema).iter_errors(value):
        where = f"{what}: {'.'.join(map(str, error.absolute_path)) or '(root)'}"
        if error.validator == "anyOf" and error.schema is not schema:
            found += schema_errors(error.instance, error.schema, where)
        else:
            found.append(f"{where}: {error.message[:300]}")
    return found


# --- the suite's transports ------------------------------------------------------------------------

TERMINAL = ("response.completed", "response.failed", "response.incomplete")


@dataclass
class Stream:
    """What one streamed request gave: its events, the problems found in them, its final response."""

    events: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    final: dict | None = None
    error_code: str | None = None
    error_event: dict | None = None

    def take(self, event: dict, schema: dict) -> None:
        self.events.append(event)
        self.errors += schema_errors(event, schema, f"event {event.get('type')}")
        if event.get("type") in TERMINAL and isinstance(event.get("response"), dict):
            self.final = event["response"]


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers={"Authorization": "Bearer sk-client"}, timeout=60)


def sse(server, body: dict) -> Stream:
    """POST /responses with `stream: true`, read as the suite reads it. Hand-written on purpose: the
    point is a parser that knows only LF line ends and `event:`/`data:` lines, as the suite's does
    (a CRLF-framed stream gives it no event at all), which a full SSE client would hide."""
    result = Stream()
    with httpx.stream(
        "POST", f"{server.url}/responses", json={**body, "stream": True},
        headers={"Authorization": "Bearer sk-client"}, timeout=60,
    ) as resp:
        assert resp.status_code == 200, resp.read()
        buffer, data = "", ""
        for chunk in resp.iter_text():
            buffer += chunk
            *lines, buffer = buffer.split("\n")
            for line in lines:
                if line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "" and data:
                    if data != "[DONE]":
                        try:
                            event = json.loads(data)
                        except ValueError:
                            result.errors.append(f"unparsable event data: {data}")
                        else:
                            result.take(event, STREAMING_EVENT)
                    data = ""
    return result


Step = dict | Callable[[list[Stream]], dict]


def websocket_session(server, steps: list[Step]) -> list[Stream]:
    """One WebSocket on /responses with the suite's handshake headers; each step sent once the turn
    before it ended (at a terminal event, an `error` event or any event with a string
    `error.code`, a `[DONE]` message, or the socket closing), 30 s at most per turn. A step is the
    event, or makes it from the turns before it; steps after a turn that timed out or lost the
    socket are not sent (their turns stay empty)."""
    url = server.url.replace("http://", "ws://", 1) + "/responses"
    turns = [Stream() for _ in steps]
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-client"}
    with connect(url, additional_headers=headers, max_size=None) as socket:
        for n, (step, turn) in enumerate(zip(steps, turns)):
            socket.send(json.dumps(step(turns[:n]) if callable(step) else step))
            try:
                _read_turn(socket, turn)
            except TimeoutError:
                turn.errors.append("timed out waiting for a terminal event")
                break
            except ConnectionClosed:
                turn.errors.append("the socket closed before a terminal event")
                break
    return turns


def _read_turn(socket, turn: Stream) -> None:
    while True:
        message = socket.recv(timeout=30)
        text = message if isinstance(message, str) else message.decode()
        if text == "[DONE]":
            if turn.final is None and turn.error_code is None:
                turn.errors.append("[DONE] before a terminal event")
            return
        event = json.loads(text)
        turn.take(event, WEBSOCKET_EVENT)
        if turn.final is not None:
            return
        error = event.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        if event.get("type") == "error" or isinstance(code, str):
            turn.error_code = code if isinstance(code, str) else None
            turn.error_event = event
            if turn.error_code is None:
                turn.errors.append(f"error event without a code: {event}")
            return


def error_code(turn: Stream) -> str | None:
    """The turn's error code: of its error event, else of its final response's `error`."""
    if turn.error_code:
        return turn.error_code
    error = (turn.final or {}).get("error")
    return error.get("code") if isinstance(error, dict) and isinstance(error.get("code"), str) else None


def failed(turn: Stream) -> bool:
    return turn.error_event is not None or error_code(turn) is not None or (turn.final or {}).get("status") == "failed"


# --- the suite's checks ----------------------------------------------------------------------------


def check_response(response: Any, *, output: bool = True, completed: bool = True) -> dict:
    """ResponseResource, then the test's validators: some output, status completed."""
    problems = schema_errors(response, RESPONSE, "response")
    assert not problems, problems
    if output:
        assert response["output"], "the response has no output items"
    if completed:
        assert response["status"] == "completed", response
    return response


def check_streamed(turn: Stream) -> dict:
    """Events came, each in the union, and the final response is a completed ResponseResource."""
    assert turn.events, "no streaming events received"
    assert not turn.errors, turn.errors
    assert turn.final is not None, [e["type"] for e in turn.events]
    return check_response(turn.final, output=False)


def user(content: Any) -> dict:
    return {"type": "message", "role": "user", "content": content}


def assistant(content: Any, **extra: Any) -> dict:
    return {"type": "message", "role": "assistant", "content": content, **extra}


# --- the tests, in the suite's order ---------------------------------------------------------------


def test_basic_response(server, scripted, model_name):
    scripted.script(model_name, [{"content": "Hello there, friend."}])
    resp = post(server, "/responses", {"model": model_name, "input": [user("Say hello in exactly 3 words.")]})
    assert resp.status_code == 200, resp.text
    response = check_response(resp.json())
    assert response["output"][0]["content"][0]["text"] == "Hello there, friend."


def test_assistant_phase(server, scripted, model_name):
    scripted.script(model_name, [{"content": "four"}])
    resp = post(server, "/responses", {
        "model": model_name,
        "input": [
            assistant("I should answer with the saved number.", phase="commentary"),
            assistant("The number is four.", phase="final_answer"),
            user("Repeat only the number."),
        ],
    })
    assert resp.status_code == 200, resp.text
    check_response(resp.json())
    # Both phases of the assistant's history reached the model, in order.
    (request,) = scripted.requests(model_name)
    assert [(m["role"], m["content"]) for m in request["body"]["messages"]] == [
        ("assistant", "I should answer with the saved number."),
        ("assistant", "The number is four."),
        ("user", "Repeat only the number."),
    ]


PHASED_OUTPUT = [
    {"id": "msg_phase_commentary", "type": "message", "status": "completed", "role": "assistant", "phase": "commentary",
     "content": [{"type": "output_text", "text": "I am checking the answer.", "annotations": []}]},
    {"id": "msg_phase_final", "type": "message", "status": "completed", "role": "assistant", "phase": "final_answer",
     "content": [{"type": "output_text", "text": "The answer is four.", "annotations": []}]},
]


def test_response_output_phase_schema(server, scripted, model_name):
    # The suite checks its schema on a fixture (no request): a response whose assistant messages carry
    # phase labels. Here the fixture is one of this server's responses with its output so labelled:
    # the schema the other tests hold the server to accepts the labels, and no other key of it changes.
    scripted.script(model_name, [{"content": "The answer is four."}])
    resp = post(server, "/responses", {"model": model_name, "input": "What is two and two?"})
    assert resp.status_code == 200, resp.text
    response = check_response({**resp.json(), "output": PHASED_OUTPUT})
    phases = [i["phase"] for i in response["output"] if i["type"] == "message" and i["role"] == "assistant"]
    assert phases == ["commentary", "final_answer"]
    assert schema_errors({**response, "output": [{**PHASED_OUTPUT[0], "phase": "draft"}]}, RESPONSE, "response")


def test_streaming_response(server, scripted, model_name):
    scripted.script(model_name, [{"content": "1, 2, 3, 4, 5."}])
    stream = sse(server, {"model": model_name, "input": [user("Count from 1 to 5.")]})
    response = check_streamed(stream)
    assert [e["sequence_number"] for e in stream.events] == list(range(len(stream.events)))
    assert "".join(e["delta"] for e in stream.events if e["type"] == "response.output_text.delta") == "1, 2, 3, 4, 5."
    assert response["output"][0]["content"][0]["text"] == "1, 2, 3, 4, 5."


def test_websocket_response(server, scripted, model_name):
    scripted.script(model_name, [{"content": "1, 2, 3."}])
    (turn,) = websocket_session(server, [
        {"type": "response.create", "model": model_name, "input": [user("Count from 1 to 3.")]},
    ])
    response = check_streamed(turn)
    assert response["store"] is True and response["output"][0]["content"][0]["text"] == "1, 2, 3."


def test_websocket_sequential_responses(server, scripted, model_name):
    scripted.script(model_name, [{"content": "first"}, {"content": "second"}])
    turns = websocket_session(server, [
        {"type": "response.create", "model": model_name, "store": False, "input": "Reply with exactly: first"},
        {"type": "response.create", "model": model_name, "store": False, "input": "Reply with exactly: second"},
    ])
    first, second = (check_streamed(t) for t in turns)
    assert first["output"][0]["content"][0]["text"] == "first"
    assert second["output"][0]["content"][0]["text"] == "second" and second["id"] != first["id"]
    assert second["previous_response_id"] is None


def test_websocket_continuation(server, scripted, model_name):
    scripted.script(model_name, [{"content": "OK"}, {"content": "cobalt"}])

    def continued(turns: list[Stream]) -> dict:
        assert turns[0].final and turns[0].final["id"], "the first turn returned no response id"
        return {"type": "response.create", "model": model_name, "store": False,
                "previous_response_id": turns[0].final["id"],
                "input": "What is the code word? Reply with only the code word."}

    first, second = websocket_session(server, [
        {"type": "response.create", "model": model_name, "store": False,
         "input": "Remember the code word: cobalt. Reply with OK."},
        continued,
    ])
    assert not first.errors, first.errors
    check_response(first.final, output=False, completed=False)
    response = check_streamed(second)
    assert response["previous_response_id"] == first.final["id"]
    # The continuation reached the model with the first exchange before it.
    sent = scripted.requests(model_name)[-1]["body"]["messages"]
    assert [m["content"] for m in sent] == [
        "Remember the code word: cobalt. Reply with OK.", "OK", "What is the code word? Reply with only the code word.",
    ]


def test_websocket_reconnect_store_false_recovery(server, scripted, model_name):
    scripted.script(model_name, [{"content": "OK"}, {"content": "recovered"}])
    (first,) = websocket_session(server, [
        {"type": "response.create", "model": model_name, "store": False,
         "input": "Remember the code word: copper. Reply with OK."},
    ])
    assert not first.errors, first.errors
    check_response(first.final, output=False, completed=False)
    reconnect, recovery = websocket_session(server, [
        {"type": "response.create", "model": model_name, "store": False, "previous_response_id": first.final["id"],
         "input": "Try to continue after reconnect. Reply with exactly: reconnected"},
        {"type": "response.create", "model": model_name, "store": False, "input": [user(
            "The previous store:false chain could not continue after reconnect. "
            "Start a new response and reply with exactly: recovered")]},
    ])
    assert not reconnect.errors, reconnect.errors
    assert error_code(reconnect) == "previous_response_not_found"
    response = check_streamed(recovery)
    assert response["output"][0]["content"][0]["text"] == "recovered"


def test_websocket_previous_response_not_found(server, model_name):
    (turn,) = websocket_session(server, [
        {"type": "response.create", "model": model_name, "store": False,
         "previous_response_id": f"resp_openresponses_missing_{int(time.time() * 1000)}",
         "input": "This should fail because the previous response is missing."},
    ])
    assert error_code(turn) == "previous_response_not_found", turn.events
    assert not turn.errors, turn.errors


def test_websocket_failed_continuation_evicts_cache(server, scripted, model_name):
    scripted.script(model_name, [{"content": "OK"}])

    def after_first(input_: Any) -> Callable[[list[Stream]], dict]:
        def step(turns: list[Stream]) -> dict:
            assert turns[0].final and turns[0].final["id"], "the first turn returned no response id"
            return {"type": "response.create", "model": model_name, "store": False,
                    "previous_response_id": turns[0].final["id"], "input": input_}
        return step

    first, failing, retry = websocket_session(server, [
        {"type": "response.create", "model": model_name, "store": False,
         "input": "Remember the code word: ember. Reply with OK."},
        after_first([{"type": "function_call_output", "call_id": "call_openresponses_missing",
                      "output": "No matching tool call exists in the previous response."}]),
        after_first("Try to continue after the failed turn. Reply with exactly: stale"),
    ])
    assert not first.errors, first.errors
    check_response(first.final, output=False, completed=False)
    assert failed(failing), failing.events
    assert not retry.errors, retry.errors
    assert error_code(retry) == "previous_response_not_found"
    assert len(scripted.requests(model_name)) == 1  # neither continuation reached the model


def test_websocket_compact_new_chain(server, scripted, model_name):
    scripted.script(model_name, [{"content": "The code word is slate."}, {"content": "compacted"}])
    resp = post(server, "/responses/compact", {"model": model_name, "input": [
        user([{"type": "input_text", "text": "Remember the compaction code word: slate."}]),
        assistant([{"type": "output_text", "text": "OK."}]),
        user([{"type": "input_text", "text": "Compress this conversation for later continuation."}]),
    ]})
    assert resp.is_success, resp.text
    output = resp.json()["output"]
    assert isinstance(output, list)
    (turn,) = websocket_session(server, [
        {"type": "response.create", "model": model_name, "store": False,
         "input": [*output, user("Continue from here. Reply with exactly: compacted")], "tools": []},
    ])
    response = check_streamed(turn)
    assert response["previous_response_id"] is None
    assert response["output"][0]["content"][0]["text"] == "compacted"
    # The new chain went on from the summary, with the window's user messages.
    sent = scripted.requests(model_name)[-1]["body"]["messages"]
    assert any("The code word is slate." in str(m["content"]) for m in sent if m["role"] == "system")
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "Remember the compaction code word: slate.",
        "Compress this conversation for later continuation.",
        "Continue from here. Reply with exactly: compacted",
    ]


def test_system_prompt(server, scripted, model_name):
    scripted.script(model_name, [{"content": "Ahoy, matey!"}])
    resp = post(server, "/responses", {"model": model_name, "input": [
        {"type": "message", "role": "system", "content": "You are a pirate. Always respond in pirate speak."},
        user("Say hello."),
    ]})
    assert resp.status_code == 200, resp.text
    check_response(resp.json())
    (request,) = scripted.requests(model_name)
    assert request["body"]["messages"][0] == {"role": "system", "content": "You are a pirate. Always respond in pirate speak."}


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"}},
        "required": ["location"],
    },
}


def test_tool_calling(server, scripted, model_name):
    scripted.script(model_name, [{"tool_calls": [{"name": "get_weather", "arguments": {"location": "San Francisco, CA"}}]}])
    resp = post(server, "/responses", {"model": model_name, "tools": [WEATHER],
                                       "input": [user("What's the weather like in San Francisco?")]})
    assert resp.status_code == 200, resp.text
    response = check_response(resp.json(), completed=False)
    (call,) = [i for i in response["output"] if i["type"] == "function_call"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"location": "San Francisco, CA"}
    (offered,) = scripted.requests(model_name)[0]["body"]["tools"]
    assert offered["function"]["name"] == "get_weather"


def png(width: int = 32, height: int = 32, rgb: tuple[int, int, int] = (220, 20, 60)) -> str:
    """A plain PNG of one colour as a data URL (the suite sends a small icon the same way)."""
    def chunk(name: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + name + data + struct.pack(">I", zlib.crc32(name + data))

    rows = b"".join(b"\0" + bytes(rgb) * width for _ in range(height))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(data).decode()


IMAGE = png()


def test_image_input(server, scripted, model_name):
    scripted.script(model_name, [{"content": "A red heart on a white background."}])
    resp = post(server, "/responses", {"model": model_name, "input": [user([
        {"type": "input_text", "text": "What do you see in this image? Answer in one sentence."},
        {"type": "input_image", "image_url": IMAGE},
    ])]})
    assert resp.status_code == 200, resp.text
    check_response(resp.json())
    (request,) = scripted.requests(model_name)
    parts = request["body"]["messages"][-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url"] and parts[1]["image_url"]["url"] == IMAGE


def test_multi_turn(server, scripted, model_name):
    scripted.script(model_name, [{"content": "Your name is Alice."}])
    resp = post(server, "/responses", {"model": model_name, "input": [
        user("My name is Alice."),
        assistant("Hello Alice! Nice to meet you. How can I help you today?"),
        user("What is my name?"),
    ]})
    assert resp.status_code == 200, resp.text
    check_response(resp.json())
    (request,) = scripted.requests(model_name)
    assert [m["role"] for m in request["body"]["messages"]] == ["user", "assistant", "user"]


def test_compact_response(server, scripted, model_name):
    scripted.script(model_name, [{"content": "Launch on Tuesday; notify support first."}])
    resp = post(server, "/responses/compact", {
        "model": model_name,
        "prompt_cache_key": "openresponses-compact-test",
        "input": [
            user("We agreed to launch on Tuesday and notify support first."),
            assistant("Understood. The launch is Tuesday, with support notified beforehand."),
        ],
    })
    assert resp.status_code == 200, resp.text
    body = resp.json()
    problems = schema_errors(body, COMPACT_RESOURCE, "compaction")
    assert not problems, problems
    assert body["object"] == "response.compaction" and body["output"]
    # As OpenAI's: the window's user messages, then one compaction item.
    retained, compacted = body["output"]
    assert retained["role"] == "user" and retained["content"] == [
        {"type": "input_text", "text": "We agreed to launch on Tuesday and notify support first."}
    ]
    assert compacted["type"] == "compaction" and compacted["id"].startswith("cmp_")


def test_compact_missing_model(server):
    resp = post(server, "/responses/compact", {"input": [user("Compact this conversation.")]})
    assert resp.status_code in (400, 422), resp.text
    assert resp.json()["error"]["param"] == "model"
