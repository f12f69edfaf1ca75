"""Response objects, built from what the run stored: its status, the steps of the response's part
of the run and the messages those steps wrote. No I/O: `service` reads the rows.

A response's part of its run starts after `steps_after` and ends at the first step that calls the
client's functions (the run then waits in requires_action and the response is `completed`, with
those `function_call` items last); function outputs sent with `previous_response_id` continue the
run as the next response.
"""

from __future__ import annotations

from api.responses import items as item_views

RUN_STATUS = {
    "queued": "queued",
    "in_progress": "in_progress",
    "cancelling": "in_progress",
    "requires_action": "completed",
    "completed": "completed",
    "incomplete": "incomplete",
    "failed": "failed",
    "expired": "failed",
    "cancelled": "cancelled",
}


# OpenAI's values when a request gives none. Responses show numbers for these, never null: strict
# clients (Open Responses' ResponseResource) refuse a null.
SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_logprobs": 0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


def with_sampling_defaults(skeleton: dict) -> dict:
    """The request settings a Response shows, with OpenAI's defaults for the sampling values not given
    (rows written before they were shown carry nulls)."""
    return {**skeleton, **{k: v for k, v in SAMPLING_DEFAULTS.items() if skeleton.get(k) is None}}


def segment(steps: list[dict], kinds: dict[str, str]) -> tuple[list[dict], bool]:
    """The response's steps (those after its start, up to the first calling the client's functions)
    and whether it ended there."""
    out = []
    for step in steps:
        out.append(step)
        if item_views.client_calls(step, kinds):
            return out, True
    return out, False


def usage(steps: list[dict], run: dict, whole_run: bool) -> dict | None:
    prompt = completion = 0
    seen = False
    for step in steps:
        counted = step.get("usage") or step.get("_pending_usage")
        if counted:
            seen = True
            prompt += counted.get("prompt_tokens", 0)
            completion += counted.get("completion_tokens", 0)
    if not seen and whole_run and run.get("usage"):
        prompt, completion = run["usage"]["prompt_tokens"], run["usage"]["completion_tokens"]
        seen = True
    if not seen:
        return None
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def output(
    steps: list[dict],
    messages: dict[str, dict],
    kinds: dict[str, str],
    include: set[str],
    filenames: dict[str, str],
    container: str,
    waits: bool = False,
) -> list[dict]:
    out: list[dict] = []
    for position, step in enumerate(steps):
        if waits and position == len(steps) - 1:
            # The run waits for the client here: the server's calls in this step are done.
            step = {**step, "status": "completed"}
        details = step["step_details"]
        if step["type"] == "message_creation":
            message = messages.get(details["message_creation"]["message_id"])
            if message is not None:
                out.append(item_views.message_item(message, filenames, container))
        else:
            out += item_views.step_items(step, kinds, include, container, with_outputs=False)
    return out


def error_of(run: dict) -> dict | None:
    if run["status"] == "failed":
        error = run.get("last_error") or {}
        return {"code": error.get("code") or "server_error", "message": error.get("message") or "The response failed."}
    if run["status"] == "expired":
        return {
            "code": "server_error",
            "message": "The response did not finish in time (ASSISTGRAPH_RUN_EXPIRES_AFTER) and expired.",
        }
    return None


def response(
    skeleton: dict,
    run: dict,
    steps: list[dict],
    messages: dict[str, dict],
    *,
    whole_run: bool,
    include: set[str],
    filenames: dict[str, str],
    container: str,
    leading: list[dict] = (),
) -> dict:
    """The Response: the request's settings (`skeleton`) with status, output (after `leading`, items
    it has before its run's), usage and errors."""
    kinds = item_views.tool_kinds(run["tools"])
    own, waits = segment(steps, kinds)
    status = "completed" if waits else RUN_STATUS[run["status"]]
    completed_at = None
    if status == "completed":
        completed_at = run.get("completed_at") if not waits else own[-1]["created_at"]
    incomplete = None
    if status == "incomplete":
        incomplete = {"reason": "max_output_tokens"}
    return {
        **skeleton,
        "status": status,
        "completed_at": completed_at,
        "error": error_of(run) if status == "failed" else None,
        "incomplete_details": incomplete,
        "output": [*leading, *output(own, messages, kinds, include, filenames, container, waits)],
        "usage": usage(own, run, whole_run and not waits),
    }


def message_ids(steps: list[dict]) -> list[str]:
    return [
        s["step_details"]["message_creation"]["message_id"] for s in steps if s["type"] == "message_creation"
    ]


def cited_files(messages: dict[str, dict]) -> set[str]:
    found = set()
    for message in messages.values():
        for part in message["content"]:
            if part["type"] == "text":
                for a in part["text"].get("annotations") or []:
                    if a.get("type") == "file_citation":
                        found.add(a["file_citation"]["file_id"])
    return found
