"""Items: what the Responses and Conversations APIs call the parts of a conversation, as views of
what threads and runs store. Pure functions, no I/O.

- Input items are checked and normalised (`normalize_input`), then written as Assistants messages
  (user and assistant messages, `to_create_message`) or as conversation items kept beside them.
- An Assistants message shows as a `message` item (`message_item`, `input_message_item`).
- A run step's tool call shows as the item of its kind (`call_item`, `step_items`): the client's functions as
  `function_call` (and `function_call_output` once answered), file_search as `file_search_call`,
  code_interpreter as `code_interpreter_call`, web_search as `web_search_call`, and every other
  tool the server runs (plugins, OpenAPI actions, MCP servers' tools) as `mcp_call` with
  `server_label` "assistgraph". A name the request never declared shows as a `function_call` followed
  by its `function_call_output` (the error the model was given), as on the Assistants side.
"""

from __future__ import annotations

import json
import re
from posixpath import basename
from typing import Any

from api.contract.errors import InvalidRequest
from api.contract.objects import FILE_SEARCH_QUERIES
from api.responses.ids import call_item_id, new_item_id
from graph.nodes import NO_SUCH_TOOL

SERVER_LABEL = "assistgraph"

INPUT_ROLES = ("user", "assistant", "system", "developer")
# Items a client may give as input that the engine keeps as conversation items: echoes of earlier
# outputs (the stateless pattern sends a response's output back) and reasoning from elsewhere.
# They are part of the conversation; the model sees function calls and outputs, and messages.
KEPT_ITEM_TYPES = (
    "function_call",
    "function_call_output",
    "file_search_call",
    "web_search_call",
    "code_interpreter_call",
    "mcp_call",
    "reasoning",
)
INCLUDABLE = (
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
)
_URL = re.compile(r"https?://[^\s)\]>\"']+")


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def check_include(include: list[str] | None, param: str = "include") -> set[str]:
    for value in include or []:
        if value not in INCLUDABLE:
            raise _bad(
                f"Invalid value for '{param}': '{value[:200]}'. Supported values are: {', '.join(INCLUDABLE)}.", param
            )
    return set(include or [])


# --- input ------------------------------------------------------------------------------------


def _text_part(part: dict, param: str, allowed: tuple[str, ...]) -> dict:
    kind = part.get("type")
    if kind not in allowed:
        raise _bad(f"Invalid content part type '{kind}' here; expected one of {', '.join(allowed)}.", f"{param}.type")
    return part


def _content(role: str, content: Any, param: str) -> list[dict]:
    """A message's content as a list of parts, checked for its role."""
    if isinstance(content, str):
        return [{"type": "output_text" if role == "assistant" else "input_text", "text": content}]
    if not isinstance(content, list):
        raise _bad("Invalid 'content': expected a string or a list of content parts.", param)
    parts = []
    allowed = ("output_text", "refusal", "input_text") if role == "assistant" else (
        ("input_text",) if role in ("system", "developer") else ("input_text", "input_image", "input_file")
    )
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        if not isinstance(part, dict):
            raise _bad("Invalid content part: expected an object.", where)
        part = _text_part(part, where, allowed)
        kind = part["type"]
        if kind in ("input_text", "output_text"):
            if not isinstance(part.get("text"), str):
                raise _bad("Missing required parameter: 'text'.", f"{where}.text")
        elif kind == "refusal":
            if not isinstance(part.get("refusal"), str):
                raise _bad("Missing required parameter: 'refusal'.", f"{where}.refusal")
        elif kind == "input_image":
            if not isinstance(part.get("image_url"), str) and not isinstance(part.get("file_id"), str):
                raise _bad("An input_image needs an 'image_url' or a 'file_id'.", where)
            if part.get("detail") not in (None, "auto", "low", "high", "original"):
                raise _bad("Invalid 'detail': expected one of auto, low, high, original.", f"{where}.detail")
        elif kind == "input_file":
            if not isinstance(part.get("file_id"), str):
                raise _bad(
                    "An input_file needs a 'file_id' here: upload the file with POST /v1/files first "
                    "(file_data and file_url are not supported).",
                    where,
                )
        parts.append(part)
    return parts


def normalize_input(value: Any, param: str = "input") -> list[dict]:
    """Input items in one canonical shape: messages as {"type": "message", "role", "content": [parts]},
    other items as given (checked)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        raise _bad(f"Invalid '{param}': expected a string or a list of items.", param)
    items = []
    for i, item in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(item, dict):
            raise _bad("Invalid item: expected an object.", where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in INPUT_ROLES:
                raise _bad(f"Invalid 'role': expected one of {', '.join(INPUT_ROLES)}.", f"{where}.role")
            if "content" not in item:
                raise _bad("Missing required parameter: 'content'.", f"{where}.content")
            items.append({"type": "message", "role": role, "content": _content(role, item["content"], f"{where}.content")})
        elif kind == "function_call":
            for field in ("call_id", "name", "arguments"):
                if not isinstance(item.get(field), str):
                    raise _bad(f"Missing required parameter: '{field}'.", f"{where}.{field}")
            items.append({k: item[k] for k in ("type", "call_id", "name", "arguments")})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _bad("Missing required parameter: 'call_id'.", f"{where}.call_id")
            output = item.get("output")
            if not isinstance(output, (str, list)):
                raise _bad("Missing required parameter: 'output'.", f"{where}.output")
            items.append({"type": kind, "call_id": item["call_id"], "output": output})
        elif kind == "item_reference":
            if not isinstance(item.get("id"), str):
                raise _bad("Missing required parameter: 'id'.", f"{where}.id")
            items.append({"type": kind, "id": item["id"]})
        elif kind == "compaction":
            sealed = item.get("encrypted_content")
            if not isinstance(sealed, str) or not sealed or len(sealed) > COMPACTION_MAX_CHARS:
                raise _bad("Missing or invalid parameter: 'encrypted_content'.", f"{where}.encrypted_content")
            items.append({"type": kind, "encrypted_content": sealed})
        elif kind in KEPT_ITEM_TYPES:
            items.append(_echoed(kind, item, where))
        else:
            raise _bad(
                f"Input items of type '{kind}' are not supported by this server.",
                f"{where}.type",
            )
    return items


# Items the server produces that clients send back (the stateless pattern) are kept as given:
# the fields every client needs to read them again, with their types.
_ECHOED_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "file_search_call": {"queries": (list,)},
    "web_search_call": {"action": (dict,)},
    "code_interpreter_call": {"container_id": (str,)},
    "mcp_call": {"server_label": (str,), "name": (str,), "arguments": (str,)},
    "reasoning": {"summary": (list,)},
}
_ECHOED_STATUS = {
    "file_search_call": ("in_progress", "searching", "completed", "incomplete", "failed"),
    "web_search_call": ("in_progress", "searching", "completed", "failed", "incomplete"),
    "code_interpreter_call": ("in_progress", "completed", "incomplete", "interpreting", "failed"),
    "mcp_call": ("in_progress", "completed", "incomplete", "calling", "failed"),
    "reasoning": ("in_progress", "completed", "incomplete"),
}


def _echoed(kind: str, item: dict, where: str) -> dict:
    for name, types in _ECHOED_FIELDS[kind].items():
        if not isinstance(item.get(name), types):
            raise _bad(f"Missing or invalid parameter: '{name}'.", f"{where}.{name}")
    if item.get("status") is not None and item["status"] not in _ECHOED_STATUS[kind]:
        raise _bad(f"Invalid 'status': expected one of {', '.join(_ECHOED_STATUS[kind])}.", f"{where}.status")
    if kind == "web_search_call" and item["action"].get("type") not in ("search", "open_page", "find_in_page"):
        raise _bad("Invalid 'action.type': expected search, open_page or find_in_page.", f"{where}.action.type")
    if kind == "file_search_call" and not all(isinstance(q, str) for q in item["queries"]):
        raise _bad("Invalid 'queries': expected a list of strings.", f"{where}.queries")
    if kind == "reasoning" and not all(
        isinstance(p, dict) and p.get("type") == "summary_text" and isinstance(p.get("text"), str) for p in item["summary"]
    ):
        raise _bad("Invalid 'summary': expected summary_text parts.", f"{where}.summary")
    for name in ("results", "outputs", "content"):
        if item.get(name) is not None and not isinstance(item[name], list):
            raise _bad(f"Invalid '{name}': expected a list.", f"{where}.{name}")
    for position, result in enumerate(item.get("results") or []):
        if not isinstance(result, dict):
            raise _bad("Invalid result: expected an object.", f"{where}.results[{position}]")
    for position, output in enumerate(item.get("outputs") or []):
        if not (isinstance(output, dict) and (
            (output.get("type") == "logs" and isinstance(output.get("logs"), str))
            or (output.get("type") == "image" and isinstance(output.get("url"), str))
        )):
            raise _bad("Invalid output: expected logs or an image url.", f"{where}.outputs[{position}]")
    error = item.get("error")
    if error is not None and not (
        kind == "mcp_call" and isinstance(error, dict)
        and error.get("type") in ("mcp_protocol_error", "mcp_tool_execution_error", "http_error")
    ):
        raise _bad("Invalid 'error'.", f"{where}.error")
    return {k: v for k, v in item.items() if k != "id"}


def output_text(output: str | list) -> str:
    """A function_call_output's output as the text the model reads."""
    if isinstance(output, str):
        return output
    return "\n".join(p.get("text") or "" for p in output if isinstance(p, dict) and p.get("type") == "input_text")


def to_create_message(item: dict) -> dict:
    """A user or assistant message item as the body of an Assistants message (files given as
    `input_file` become attachments searched with file_search)."""
    parts, attachments = [], []
    for part in item["content"]:
        kind = part["type"]
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image":
            detail = {"original": "high"}.get(part.get("detail") or "auto", part.get("detail") or "auto")
            if part.get("file_id"):
                parts.append({"type": "image_file", "image_file": {"file_id": part["file_id"], "detail": detail}})
            else:
                parts.append({"type": "image_url", "image_url": {"url": part["image_url"], "detail": detail}})
        elif kind == "input_file":
            attachments.append({"file_id": part["file_id"], "tools": [{"type": "file_search"}]})
    body: dict[str, Any] = {"role": item["role"], "content": parts or ""}
    if attachments:
        body["attachments"] = attachments
    return body


def kept_item(item: dict) -> dict:
    """A conversation item kept beside the thread's messages, with its id and status."""
    kept = {**item, "id": new_item_id(item["type"])}
    if item["type"] == "message":
        kept["status"] = "completed"
    elif item["type"] not in ("reasoning", "compaction"):
        kept.setdefault("status", "completed")
    return kept


# --- Assistants objects as items ------------------------------------------------------------------


def annotation(a: dict, filenames: dict[str, str], container: str) -> dict | None:
    if a.get("type") == "file_citation":
        file_id = a["file_citation"]["file_id"]
        return {"type": "file_citation", "file_id": file_id, "filename": filenames.get(file_id, ""), "index": a["start_index"]}
    if a.get("type") == "file_path":
        return {
            "type": "container_file_citation",
            "container_id": container,
            "file_id": a["file_path"]["file_id"],
            "filename": basename(a.get("text") or "") or a["file_path"]["file_id"],
            "start_index": a["start_index"],
            "end_index": a["end_index"],
        }
    return None


def output_text_part(text: dict, filenames: dict[str, str], container: str) -> dict:
    annotations = [annotation(a, filenames, container) for a in text.get("annotations") or []]
    return {"type": "output_text", "text": text["value"], "annotations": [a for a in annotations if a], "logprobs": []}


def message_item(message: dict, filenames: dict[str, str], container: str) -> dict:
    """An assistant's Assistants message as a Responses output message (text parts only: images
    the code drew are among its code_interpreter_call's outputs)."""
    content = [
        output_text_part(part["text"], filenames, container) for part in message["content"] if part["type"] == "text"
    ]
    return {
        "type": "message",
        "id": message["id"],
        "role": "assistant",
        "status": message["status"],
        "content": content,
    }


def input_message_item(message: dict, filenames: dict[str, str], container: str) -> dict:
    """A user's (or an input assistant's) Assistants message as an item."""
    if message["role"] == "assistant":
        return message_item(message, filenames, container)
    content: list[dict] = []
    for part in message["content"]:
        if part["type"] == "text":
            content.append({"type": "input_text", "text": part["text"]["value"]})
        elif part["type"] == "image_url":
            content.append({"type": "input_image", "image_url": part["image_url"]["url"], "file_id": None,
                            "detail": part["image_url"].get("detail") or "auto"})
        elif part["type"] == "image_file":
            content.append({"type": "input_image", "file_id": part["image_file"]["file_id"], "image_url": None,
                            "detail": part["image_file"].get("detail") or "auto"})
    for attachment in message.get("attachments") or []:
        content.append({"type": "input_file", "file_id": attachment["file_id"],
                        "filename": filenames.get(attachment["file_id"])})
    return {"type": "message", "id": message["id"], "role": message["role"], "status": message["status"], "content": content}


# What a kept compaction item holds for the server only: what it opened to, and its origin.
COMPACTION_PRIVATE = ("summary", "origin", "user_messages")
# Open Responses bounds an input compaction item's encrypted_content to 10 MiB.
COMPACTION_MAX_CHARS = 10 * 1024 * 1024


def shown_kept_item(item: dict, include: set[str]) -> dict:
    """A kept conversation item as the API shows it."""
    if item.get("type") == "compaction":
        return {k: v for k, v in item.items() if k not in COMPACTION_PRIVATE}
    if item.get("type") == "file_search_call" and "file_search_call.results" not in include:
        return {**item, "results": None}
    if item.get("type") == "code_interpreter_call" and "code_interpreter_call.outputs" not in include:
        return {**item, "outputs": None}
    return item


# --- run steps' tool calls as items ----------------------------------------------------------------


# In `tool_kinds`: the run has tools whose names are only known once it runs (action operations,
# MCP servers' tools); no function can be named so.
OTHER_SERVER_TOOLS = "*"


def tool_kinds(run_tools: list[dict]) -> dict[str, str]:
    """Function name → "client" (the client's own function), "web_search" or "server" (an installed
    tool); OTHER_SERVER_TOOLS → "server" when actions or MCP servers add tools of other names."""
    kinds = {}
    for tool in run_tools:
        if tool.get("type") != "function":
            continue
        marker = tool.get("builtin")
        if not isinstance(marker, dict):
            kinds[tool["function"]["name"]] = "client"
        elif marker.get("type") == "web_search":
            kinds[tool["function"]["name"]] = "web_search"
        elif marker.get("type") in ("action", "mcp"):
            kinds[OTHER_SERVER_TOOLS] = "server"
        else:
            kinds[tool["function"]["name"]] = "server"
    return kinds


def _undeclared(call: dict, kinds: dict[str, str]) -> bool | None:
    """Whether a function call names a tool the run does not have; None: not known yet (a name that
    may be an action's or an MCP server's, not answered yet)."""
    fn = call.get("function") or {}
    if fn.get("name") in kinds:
        return False
    output = fn.get("output")
    if output is not None:
        # Answered: the server's answer says whether it had the tool (a run stored by an earlier
        # version may list fewer tools than it ran).
        return output.startswith(NO_SUCH_TOOL)
    return True if OTHER_SERVER_TOOLS not in kinds else None


def undecided(call: dict, kinds: dict[str, str]) -> bool:
    """A call whose item type is only known once it is answered."""
    return call.get("type", "function") == "function" and _undeclared(call, kinds) is None


def call_kind(call: dict, kinds: dict[str, str]) -> str:
    """The item type a step's tool call shows as."""
    if call["type"] == "file_search":
        return "file_search_call"
    if call["type"] == "code_interpreter":
        return "code_interpreter_call"
    if _undeclared(call, kinds):
        return "function_call"
    kind = kinds.get(call["function"]["name"], "server")
    return {"client": "function_call", "web_search": "web_search_call"}.get(kind, "mcp_call")


def answered_by_server(call: dict, kinds: dict[str, str]) -> dict | None:
    """The `function_call_output` of a call the server answered itself (a name the run does not
    have): part of the response, unlike the outputs the client gives its own functions."""
    if call["type"] != "function" or not _undeclared(call, kinds):
        return None
    return function_output_item(call)


def _status(step_status: str, *, done: str = "completed") -> str:
    return {"in_progress": "in_progress", "completed": done, "failed": "failed"}.get(step_status, "incomplete")


def _query(arguments: str) -> str | None:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return None
    query = parsed.get("query") if isinstance(parsed, dict) else None
    return query if isinstance(query, str) else None


def file_search_results(call: dict) -> list[dict]:
    return [
        {
            "file_id": r["file_id"],
            "filename": r.get("file_name"),
            "score": r.get("score"),
            "text": "".join(c.get("text") or "" for c in r.get("content") or []),
            "attributes": {},
        }
        for r in (call.get("file_search") or {}).get("results") or []
    ]


def code_outputs(call: dict) -> list[dict]:
    outputs = []
    for output in (call.get("code_interpreter") or {}).get("outputs") or []:
        if output.get("type") == "logs":
            outputs.append({"type": "logs", "logs": output.get("logs") or ""})
        elif output.get("type") == "image":
            outputs.append({"type": "image", "url": f"/v1/files/{output['image']['file_id']}/content"})
    return outputs


def call_item(call: dict, step_status: str, kinds: dict[str, str], include: set[str], container: str) -> dict:
    """One tool call of a run step as its output item."""
    kind = call_kind(call, kinds)
    item_id = call_item_id(kind, call["id"])
    if kind == "file_search_call":
        return {
            "type": kind,
            "id": item_id,
            "queries": list((call.get("file_search") or {}).get(FILE_SEARCH_QUERIES) or []),
            "status": _status(step_status),
            "results": file_search_results(call) if "file_search_call.results" in include else None,
        }
    if kind == "code_interpreter_call":
        return {
            "type": kind,
            "id": item_id,
            "code": (call.get("code_interpreter") or {}).get("input") or "",
            "container_id": container,
            "outputs": code_outputs(call) if "code_interpreter_call.outputs" in include else None,
            "status": _status(step_status),
        }
    fn = call["function"]
    if kind == "function_call":
        # The call is complete once it is in the step: the step stays open while the client works.
        return {
            "type": kind,
            "id": item_id,
            "call_id": call["id"],
            "name": fn["name"],
            "arguments": fn.get("arguments") or "",
            "status": "completed",
        }
    if kind == "web_search_call":
        action: dict[str, Any] = {"type": "search", "query": _query(fn.get("arguments") or "")}
        if "web_search_call.action.sources" in include:
            action["sources"] = [{"type": "url", "url": u} for u in dict.fromkeys(_URL.findall(fn.get("output") or ""))]
        # The tool reports a failed search as its output ("Error: …"), so the step itself completes.
        failed = (fn.get("output") or "").startswith("Error: ")
        return {"type": kind, "id": item_id, "action": action, "status": "failed" if failed else _status(step_status)}
    output = fn.get("output")
    failed = step_status == "failed" or (output or "").startswith("Error: ")
    return {
        "type": "mcp_call",
        "id": item_id,
        "server_label": SERVER_LABEL,
        "name": fn["name"],
        "arguments": fn.get("arguments") or "",
        "output": output,
        "error": {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": output}]} if failed and output else None,
        "status": "failed" if failed else _status(step_status),
    }


def function_output_item(call: dict) -> dict | None:
    """The output a client gave a function call of a run, as a conversation item."""
    output = (call.get("function") or {}).get("output")
    if output is None:
        return None
    return {
        "type": "function_call_output",
        "id": call_item_id("function_call_output", call["id"]),
        "call_id": call["id"],
        "output": output,
        "status": "completed",
    }


def step_items(
    step: dict, kinds: dict[str, str], include: set[str], container: str, *, with_outputs: bool
) -> list[dict]:
    """A tool_calls step's items; `with_outputs` adds the client's function outputs (a
    conversation's view; a response's output ends at the calls)."""
    items = []
    for call in step["step_details"].get("tool_calls") or []:
        items.append(call_item(call, step["status"], kinds, include, container))
        if items[-1]["type"] == "function_call":
            answered = function_output_item(call) if with_outputs else answered_by_server(call, kinds)
            if answered is not None:
                items.append(answered)
    return items


def client_calls(step: dict, kinds: dict[str, str]) -> list[dict]:
    """The client's function calls in a tool_calls step (a response ends at the first such step)."""
    if step.get("type") != "tool_calls":
        return []
    return [
        c for c in step["step_details"].get("tool_calls") or []
        if c["type"] == "function" and kinds.get(c["function"]["name"]) == "client"
    ]
