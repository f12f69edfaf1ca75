"""graph.text_tool_calls: which answers are tool calls written as text (each form of the table, and
the plain answers that merely show JSON), how early a streamed answer is known not to be one, and
the model client's stream with such a call turned into a real one."""

from __future__ import annotations

import asyncio
import json

import pytest

from graph.model_client import recover_text_calls
from graph.text_tool_calls import FORMATS, could_be_call, parse

NAMES = {"get_weather", "get_time"}
PARIS = {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}
TOKYO = {"name": "get_weather", "arguments": json.dumps({"city": "Tokyo"})}
NOW = {"name": "get_time", "arguments": "{}"}

CALLS = [
    ("bare JSON", '{"name": "get_weather", "arguments": {"city": "Paris"}}', [PARIS]),
    ("bare JSON, arguments as a JSON string", '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}', [PARIS]),
    ("bare JSON with spaces around", '\n  {"name": "get_weather", "arguments": {"city": "Paris"}}  \n', [PARIS]),
    ("Llama 3.x parameters", '{"name": "get_weather", "parameters": {"city": "Paris"}}', [PARIS]),
    ("OpenAI's shape written out", '{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}', [PARIS]),
    ("a JSON list", '[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]', [PARIS, NOW]),
    ("json fence", '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```', [PARIS]),
    ("bare fence", '```\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```', [PARIS]),
    ("Hermes / Qwen tags", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', [PARIS]),
    ("Hermes, two calls", '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
                          '<tool_call>{"name": "get_weather", "arguments": {"city": "Tokyo"}}</tool_call>', [PARIS, TOKYO]),
    ("Hermes, closing tag left out", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}', [PARIS]),
    ("Mistral list", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]', [PARIS]),
    ("Mistral name[ARGS]", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}', [PARIS]),
    ("Llama python tag", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>', [PARIS]),
]

ANSWERS = [
    ("plain text", "It is sunny in Paris."),
    ("text that shows JSON", 'Call it like this: {"name": "get_weather", "arguments": {"city": "Paris"}}'),
    ("JSON followed by text", '{"name": "get_weather", "arguments": {"city": "Paris"}} and that is it'),
    ("a tool that was not offered", '{"name": "launch_rockets", "arguments": {}}'),
    ("JSON that is data", '{"city": "Paris", "temperature": 21}'),
    ("a name without arguments", '{"name": "get_weather"}'),
    ("extra keys", '{"name": "get_weather", "arguments": {"city": "Paris"}, "comment": "sure"}'),
    ("arguments that are not an object", '{"name": "get_weather", "arguments": "Paris"}'),
    ("a python fence", '```python\nprint("hi")\n```'),
    ("a fence with text after it", '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\nDone.'),
    ("a list of numbers", "[1, 2, 3]"),
    ("broken JSON", '{"name": "get_weather", "arguments": {"city": "Par'),
    ("tags around text", "<tool_call>I would call the weather tool</tool_call>"),
    ("empty", ""),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in CALLS], ids=[c[0] for c in CALLS])
def test_a_call_written_as_text_is_recognised(text, expected):
    assert parse(text, NAMES) == expected
    # Held back from its first characters to its last: never shown as text while it streams.
    assert all(could_be_call(text[:n]) for n in range(len(text) + 1))


@pytest.mark.parametrize("text", [a[1] for a in ANSWERS], ids=[a[0] for a in ANSWERS])
def test_an_answer_stays_an_answer(text):
    assert parse(text, NAMES) is None


@pytest.mark.parametrize(
    "text, known_after",
    [
        ("It is sunny.", 1),
        ("  Sure!", 3),
        ("[1] See the note.", 2),
        ("[link](http://example.com)", 2),
        ("{ 42 }", 3),
        ("```python\nprint(1)\n```", 4),
        ("<b>bold</b>", 2),
    ],
)
def test_a_plain_answer_is_released_after_its_first_characters(text, known_after):
    """Streamed text is held back only while its start could open a call."""
    assert all(could_be_call(text[:n]) for n in range(known_after))
    assert not could_be_call(text[:known_after])


def test_every_format_has_an_example_that_parses():
    for fmt in FORMATS:
        calls = parse(fmt.example, {"f"})
        assert calls == [{"name": "f", "arguments": '{"x": 1}'}], fmt.name


# --- the stream a model client reads ---------------------------------------------------------------


def _chunks(text: str, size: int = 3, finish: str = "stop") -> list[dict]:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{**head, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    chunks.append({**head, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}})
    return chunks


def _read(chunks: list[dict]) -> list[dict]:
    async def source():
        for chunk in chunks:
            yield chunk

    async def read():
        return [chunk async for chunk in recover_text_calls(source(), NAMES)]

    return asyncio.run(read())


def test_a_streamed_call_written_as_text_is_announced_as_a_call():
    out = _read(_chunks('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'))
    (call,) = out[0]["choices"][0]["delta"]["tool_calls"]
    assert call["function"] == PARIS and call["id"].startswith("call_") and call["index"] == 0
    assert not any(c["delta"].get("content") for chunk in out for c in chunk["choices"])
    assert [c["finish_reason"] for chunk in out for c in chunk["choices"] if c["finish_reason"]] == ["tool_calls"]
    assert out[-1]["usage"]["completion_tokens"] == 7


@pytest.mark.parametrize(
    "chunks",
    [
        _chunks("It is sunny in Paris."),
        _chunks('{"city": "Paris", "temperature": 21}'),
        _chunks('{"name": "get_weather", "arguments": {"city": "Par'),  # cut short
    ],
    ids=["text", "data", "cut-short"],
)
def test_a_streamed_answer_comes_through_unchanged(chunks):
    assert _read(chunks) == chunks


def test_real_tool_calls_come_through_unchanged():
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    assert _read(chunks) == chunks
