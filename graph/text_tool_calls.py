"""Tool calls a model wrote as text: recognised in the common forms small models and their chat
templates use, so that an endpoint that does not parse them (llama.cpp's server for many
templates, any server without a per-model parser) still yields real calls.

Hand-written: the maintained parsers live inside serving engines (vLLM's and SGLang's tool parsers)
that do not install without their GPU stacks, and the forms are few and simple. Each form is a row
of FORMATS; an answer is a tool call only when the whole of it (spaces aside) is calls in one form,
each naming an offered tool with its arguments: a plain answer that shows some JSON stays an
answer.

While an answer streams, `could_be_call` says from its first characters whether it may still turn
out to be a call (and so must be held back rather than shown as text).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Format:
    name: str
    # The text a call in this form starts with (after leading spaces).
    opening: str
    # Splits the whole answer into the JSON bodies of its calls; None: not this form.
    bodies: Any
    example: str


def _tagged(text: str) -> list[str] | None:
    # Hermes / Qwen 2.5: one `<tool_call>{...}</tool_call>` per call; models often stop before
    # the last closing tag.
    parts = re.findall(r"<tool_call>(.*?)(?:</tool_call>|$)", text, flags=re.S)
    rest = re.sub(r"<tool_call>.*?(?:</tool_call>|$)", "", text, flags=re.S)
    return parts if parts and not rest.strip() else None


def _mistral(text: str) -> list[str] | None:
    # Mistral: `[TOOL_CALLS][{...}, ...]`, or (newer templates) `[TOOL_CALLS]name[ARGS]{...}` per call.
    body = text.removeprefix("[TOOL_CALLS]").strip()
    if "[ARGS]" not in body:
        return [body]
    bodies = []
    for call in body.split("[TOOL_CALLS]"):
        name, sep, arguments = call.partition("[ARGS]")
        if not sep or not name.strip():
            return None
        parsed = _json(arguments)
        if parsed is _MISSING:
            return None
        bodies.append(json.dumps({"name": name.strip(), "arguments": parsed}))
    return bodies


def _python_tag(text: str) -> list[str] | None:
    # Llama 3.1+: `<|python_tag|>{"name": ..., "parameters": ...}` (calls separated by `;`),
    # sometimes with the end-of-message token left in.
    body = text.removeprefix("<|python_tag|>")
    body = re.sub(r"<\|(eom_id|eot_id)\|>\s*$", "", body.strip())
    return [part for part in body.split(";") if part.strip()] if body.strip().startswith("{") else [body]


def _fenced(text: str) -> list[str] | None:
    match = re.fullmatch(r"```(?:json|tool_call|tool_code)?[ \t]*\n(.*?)\n?[ \t]*```", text, flags=re.S)
    return [match.group(1)] if match else None


FORMATS: tuple[Format, ...] = (
    Format("hermes", "<tool_call>", _tagged, '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'),
    Format("mistral", "[TOOL_CALLS]", _mistral, '[TOOL_CALLS][{"name": "f", "arguments": {"x": 1}}]'),
    Format("llama-python-tag", "<|python_tag|>", _python_tag, '<|python_tag|>{"name": "f", "parameters": {"x": 1}}'),
    Format("fenced", "```", _fenced, '```json\n{"name": "f", "arguments": {"x": 1}}\n```'),
    # Bare JSON: an object (Llama 3.x writes "parameters", most others "arguments") or a list of them.
    Format("json", "{", lambda text: [text], '{"name": "f", "arguments": {"x": 1}}'),
    Format("json-list", "[", lambda text: [text], '[{"name": "f", "arguments": {"x": 1}}]'),
)

_FENCE_INFO = ("json", "tool_call", "tool_code")
_MISSING = object()


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return _MISSING


def could_be_call(text: str) -> bool:
    """Whether an answer beginning with `text` may still be a tool call in one of the forms."""
    head = text.lstrip()
    if not head:
        return True
    for fmt in FORMATS:
        if fmt.opening.startswith(head):
            return True  # the opening itself is still arriving
        if not head.startswith(fmt.opening):
            continue
        rest = head[len(fmt.opening) :]
        if fmt.name == "fenced":
            info, newline, body = rest.partition("\n")
            info = info.strip()
            if not newline:
                return any(allowed.startswith(info) for allowed in ("", *_FENCE_INFO))
            if info and info not in _FENCE_INFO:
                return False
            body = body.lstrip()
            return not body or body[0] in "{["
        if fmt.name == "json-list":
            rest = rest.lstrip()
            if not rest or rest[0] == "{":
                return True
            continue  # `[TOOL_CALLS]` is matched by its own row
        if fmt.name == "json":
            rest = rest.lstrip()
            return not rest or rest[0] == '"'
        return True
    return False


def _call(item: Any, names: set[str]) -> dict | None:
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict) and set(item) <= {"type", "function", "id"}:
        item = item["function"]  # OpenAI's own shape, written out
    if not set(item) <= {"name", "arguments", "parameters", "id", "type"} or item.get("name") not in names:
        return None
    arguments = item.get("arguments", item.get("parameters", _MISSING))
    if isinstance(arguments, str):
        arguments = _json(arguments)
    if not isinstance(arguments, dict):
        return None
    return {"name": item["name"], "arguments": json.dumps(arguments)}


def parse(text: str, names: set[str]) -> list[dict] | None:
    """The calls ({"name", "arguments": JSON text}) the whole of `text` makes of the tools `names`,
    or None when it is not exactly tool calls in one of the forms."""
    head = text.strip()
    for fmt in FORMATS:
        if not head.startswith(fmt.opening):
            continue
        bodies = fmt.bodies(head)
        if not bodies:
            continue
        calls: list[dict] = []
        for body in bodies:
            value = _json(body.strip())
            items = value if isinstance(value, list) else [value]
            found = [_call(item, names) for item in items]
            if not found or any(call is None for call in found):
                calls = []
                break
            calls += found
        if calls:
            return calls
    return None
