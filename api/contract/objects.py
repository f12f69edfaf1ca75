"""Builders of Assistants API objects: every field the contract requires, null where nullable."""

from __future__ import annotations

from typing import Any

from api.contract import schemas
from api.contract.ids import new_id, now

from api.contract.run_status import ACTIVE as ACTIVE_RUN_STATUSES  # noqa: F401 (the name other modules import)
from api.contract.run_status import TERMINAL as TERMINAL_RUN_STATUSES  # noqa: F401


def dump(model: Any) -> Any:
    """A request model (or list/union of them) as the plain JSON the API stores and returns."""
    if model is None or isinstance(model, (str, int, float, bool)):
        return model
    if isinstance(model, list):
        return [dump(m) for m in model]
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def tools_json(tools: list | None) -> list[dict]:
    out = []
    for tool in dump(tools) or []:
        if tool["type"] == "function":
            # `description` and `parameters` are typed non-null in the contract: absent when unset.
            tool["function"].setdefault("strict", False)
        elif tool["type"] == "file_search":
            settings = tool.setdefault("file_search", {})
            settings.setdefault("ranking_options", {"ranker": "auto", "score_threshold": 0.0})
        out.append(tool)
    return out


def assistant(body: schemas.CreateAssistant) -> dict:
    return {
        "id": new_id("assistant"),
        "object": "assistant",
        "created_at": now(),
        "name": body.name,
        "description": body.description,
        "model": body.model,
        "instructions": body.instructions,
        "tools": tools_json(body.tools),
        # Filled in by api.files.tool_resources.resolve, which checks what it references.
        "tool_resources": {},
        "metadata": body.metadata or {},
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "response_format": dump(body.response_format) or "auto",
        "reasoning_effort": body.reasoning_effort,
    }


def modify_assistant(current: dict, body: schemas.ModifyAssistant) -> dict:
    updated = dict(current)
    given = body.model_fields_set
    for field in ("name", "description", "instructions", "model", "reasoning_effort"):
        if field in given:
            updated[field] = getattr(body, field)
    if "model" in given and body.model is None:
        updated["model"] = current["model"]
    if "tools" in given:
        updated["tools"] = tools_json(body.tools)
    if "metadata" in given:
        updated["metadata"] = body.metadata or {}
    if "temperature" in given:
        updated["temperature"] = 1.0 if body.temperature is None else body.temperature
    if "top_p" in given:
        updated["top_p"] = 1.0 if body.top_p is None else body.top_p
    if "response_format" in given:
        updated["response_format"] = dump(body.response_format) or "auto"
    return updated


def thread(metadata: dict | None) -> dict:
    return {
        "id": new_id("thread"),
        "object": "thread",
        "created_at": now(),
        "tool_resources": {},  # filled in by api.files.tool_resources.resolve
        "metadata": metadata or {},
    }


def message_content(content: str | list) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": {"value": content, "annotations": []}}]
    out = []
    for part in dump(content):
        if part["type"] == "text":
            out.append({"type": "text", "text": {"value": part["text"], "annotations": []}})
        elif part["type"] == "image_url":
            part["image_url"].setdefault("detail", "auto")
            out.append(part)
        else:
            part["image_file"].setdefault("detail", "auto")
            out.append(part)
    return out


def user_message(thread_id: str, body: schemas.CreateMessage) -> dict:
    created = now()
    return {
        "id": new_id("message"),
        "object": "thread.message",
        "created_at": created,
        "thread_id": thread_id,
        "status": "completed",
        "incomplete_details": None,
        "completed_at": created,
        "incomplete_at": None,
        "role": body.role,
        "content": message_content(body.content),
        "assistant_id": None,
        "run_id": None,
        "attachments": dump(body.attachments) or [],
        "metadata": body.metadata or {},
    }


def assistant_message(thread_id: str, run: dict, message_id: str) -> dict:
    return {
        "id": message_id,
        "object": "thread.message",
        "created_at": now(),
        "thread_id": thread_id,
        "status": "in_progress",
        "incomplete_details": None,
        "completed_at": None,
        "incomplete_at": None,
        "role": "assistant",
        "content": [],
        "assistant_id": run["assistant_id"],
        "run_id": run["id"],
        "attachments": [],
        "metadata": {},
    }


def run_step(run: dict, step_id: str, step_details: dict) -> dict:
    return {
        "id": step_id,
        "object": "thread.run.step",
        "created_at": now(),
        "assistant_id": run["assistant_id"],
        "thread_id": run["thread_id"],
        "run_id": run["id"],
        "type": step_details["type"],
        "status": "in_progress",
        "step_details": step_details,
        "last_error": None,
        "expired_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "metadata": {},
        "usage": None,
    }


def run(thread_id: str, assistant: dict, body: schemas.RunFields, expires_in: int, *, additional_instructions: str | None = None) -> dict:
    created = now()
    instructions = body.instructions if body.instructions is not None else (assistant.get("instructions") or "")
    if additional_instructions:
        instructions = f"{instructions}\n\n{additional_instructions}" if instructions else additional_instructions
    tools = tools_json(body.tools) if body.tools is not None else assistant["tools"]
    truncation = dump(body.truncation_strategy) or {"type": "auto"}
    truncation.setdefault("last_messages", None)
    return {
        "id": new_id("run"),
        "object": "thread.run",
        "created_at": created,
        "thread_id": thread_id,
        "assistant_id": assistant["id"],
        "status": "queued",
        "required_action": None,
        "last_error": None,
        "expires_at": created + expires_in,
        "started_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "incomplete_details": None,
        "model": body.model or assistant["model"],
        "instructions": instructions,
        "tools": tools,
        "metadata": body.metadata or {},
        "usage": None,
        "temperature": body.temperature if body.temperature is not None else assistant.get("temperature"),
        "top_p": body.top_p if body.top_p is not None else assistant.get("top_p"),
        "max_prompt_tokens": body.max_prompt_tokens,
        "max_completion_tokens": body.max_completion_tokens,
        "truncation_strategy": truncation,
        "tool_choice": dump(body.tool_choice) or "auto",
        "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        "response_format": dump(body.response_format) or assistant.get("response_format") or "auto",
        "reasoning_effort": body.reasoning_effort or assistant.get("reasoning_effort"),
        "tool_resources": assistant.get("tool_resources") or {},
    }


def file(file_id: str, filename: str, size: int, purpose: str, *, expires_at: int | None = None) -> dict:
    # `expires_at` and `status_details` are typed non-null in the contract: present only when set.
    obj = {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": now(),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }
    if expires_at is not None:
        obj["expires_at"] = expires_at
    return obj


def deleted(object_id: str, kind: str) -> dict:
    return {"id": object_id, "object": f"{kind}.deleted", "deleted": True}


def page(items: list[dict], has_more: bool) -> dict:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


FILE_SEARCH_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"
# The queries a file_search call ran: kept in its step for the Responses API's file_search_call.queries,
# not part of an Assistants step. Only the Responses API's own readers ask for them (clients cannot:
# `include[]` takes FILE_SEARCH_CONTENT alone).
FILE_SEARCH_QUERIES = "queries"


def present_step(step: dict, include: list[str] | None) -> dict:
    """A run step as the client asked for it: file_search result text only with `include[]`."""
    include = include or []
    with_content, with_queries = FILE_SEARCH_CONTENT in include, FILE_SEARCH_QUERIES in include
    if (with_content and with_queries) or step.get("type") != "tool_calls":
        return step
    calls = step.get("step_details", {}).get("tool_calls") or []
    if not any(c.get("type") == "file_search" for c in calls):
        return step
    shown = {**step, "step_details": {**step["step_details"], "tool_calls": []}}
    for call in calls:
        if call.get("type") == "file_search" and isinstance(call.get("file_search"), dict):
            search = {k: v for k, v in call["file_search"].items() if with_queries or k != FILE_SEARCH_QUERIES}
            if not with_content and search.get("results"):
                search["results"] = [{k: v for k, v in r.items() if k != "content"} for r in search["results"]]
            call = {**call, "file_search": search}
        shown["step_details"]["tool_calls"].append(call)
    return shown
