"""A run's Assistants events → the Responses stream events of one response. A pure object: no
I/O, one handler per Assistants event kind (like `api/runs/mapper.py` on the other side).

It numbers the events it returns (`sequence_number`, from 0), so replaying a run's kept events
from the response's first one through a fresh translator gives the same events with the same
numbers: that is how a stream is resumed with `starting_after`. Lifecycle events carry the
response's snapshot; the last one (`response.completed`, `.incomplete` or `.failed`) carries the
response as `GET /v1/responses/{id}` builds it, which the caller passes to `finish`.

Objects the response did not open (the step a client's function outputs complete, which belongs
to the previous response) are ignored: only steps and messages created within the response's
events become output items.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from api.responses import items as item_views
from api.responses.ids import call_item_id


@dataclass
class _Call:
    index: int  # output_index
    kind: str  # item type
    item: dict
    text: str = ""  # arguments (functions, mcp calls) or code (code_interpreter) streamed so far
    done: bool = False


@dataclass
class _Message:
    index: int
    item: dict
    text: str = ""
    annotations: int = 0
    done: bool = False


@dataclass
class ResponseEventTranslator:
    skeleton: dict  # the response's request settings (id, model, tools, ...)
    kinds: dict[str, str]  # function name → "client" | "web_search" (see items.tool_kinds)
    container: str
    include: set[str]
    filenames: dict[str, str] = field(default_factory=dict)
    background: bool = False
    ending: str | None = None  # the Assistants event that ended the response
    leading: list[dict] = field(default_factory=list)  # output items before the run's (a compaction)
    _seq: int = -1
    _output: list[Any] = field(default_factory=list)  # _Call | _Message by output_index
    _steps: set[str] = field(default_factory=set)
    _calls: dict[tuple[str, int], _Call] = field(default_factory=dict)
    # Calls whose item type waits for their answer (items.undecided), as streamed so far.
    _undecided: dict[tuple[str, int], dict] = field(default_factory=dict)
    _answered: set[tuple[str, int]] = field(default_factory=set)  # calls whose server answer is an item
    _messages: dict[str, _Message] = field(default_factory=dict)
    _started: bool = False

    # --- numbering and snapshots -------------------------------------------------------------

    def _event(self, kind: str, **fields) -> dict:
        self._seq += 1
        return {"type": kind, "sequence_number": self._seq, **fields}

    def _snapshot(self, status: str) -> dict:
        return {
            **copy.deepcopy(self.skeleton),
            "status": status,
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
            "output": [copy.deepcopy(o.item) for o in self._output if o.done],
            "usage": None,
        }

    # --- dispatch ----------------------------------------------------------------------------

    def start(self) -> list[dict]:
        """The first event of every stream of the response."""
        return [self._event("response.created", response=self._snapshot("queued" if self.background else "in_progress"))]

    def handle(self, name: str, data: dict) -> list[dict]:
        if self.ending is not None:
            return []
        handler = getattr(self, "on_" + name.removeprefix("thread.").replace(".", "_"), None)
        return handler(data) if handler else []

    def error(self, code: str | None, message: str) -> dict:
        """An `error` event: the stream cannot go on (its events are gone, or its key was revoked)."""
        return self._event("error", code=code, message=message, param=None)

    def finish(self, final: dict) -> list[dict]:
        """The last events: items still open, closed as the stored response shows them, then the
        response itself, once the run ended or waits for the client."""
        events = self._close_open({item.get("id"): item for item in final["output"]})
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(final["status"], "response.failed")
        events.append(self._event(kind, response=final))
        return events

    # --- run lifecycle -------------------------------------------------------------------------

    def on_run_in_progress(self, run: dict) -> list[dict]:
        if self._started:
            return []  # an execution that took the run over starts it again
        self._started = True
        events = [self._event("response.in_progress", response=self._snapshot("in_progress"))]
        for item in self.leading:
            entry = _Call(len(self._output), item["type"], copy.deepcopy(item), done=True)
            self._output.append(entry)
            events.append(self._event("response.output_item.added", output_index=entry.index, item=copy.deepcopy(item)))
            events.append(self._event("response.output_item.done", output_index=entry.index, item=copy.deepcopy(item)))
        return events

    def _end(self, run: dict) -> list[dict]:
        # What is still open is closed by `finish`, from the response as stored.
        self.ending = "thread.run." + run["status"]
        return []

    on_run_requires_action = on_run_completed = on_run_incomplete = on_run_failed = on_run_cancelled = _end
    on_run_expired = _end

    # --- messages ---------------------------------------------------------------------------------

    def on_message_created(self, message: dict) -> list[dict]:
        if message["id"] in self._messages or message.get("role") != "assistant":
            return []
        item = {"type": "message", "id": message["id"], "role": "assistant", "status": "in_progress", "content": []}
        entry = _Message(len(self._output), item)
        self._output.append(entry)
        self._messages[message["id"]] = entry
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [
            self._event("response.output_item.added", output_index=entry.index, item=copy.deepcopy(item)),
            self._event(
                "response.content_part.added", item_id=item["id"], output_index=entry.index, content_index=0, part=part
            ),
        ]

    def on_message_delta(self, delta: dict) -> list[dict]:
        entry = self._messages.get(delta["id"])
        if entry is None or entry.done:
            return []
        events = []
        for block in delta["delta"].get("content") or []:
            if block.get("type") != "text" or block.get("index") != 0:
                continue  # images the code drew show among its code_interpreter_call's outputs
            text = block["text"]
            if text.get("value"):
                entry.text += text["value"]
                events.append(self._text_delta(entry, text["value"]))
            for raw in text.get("annotations") or []:
                shown = item_views.annotation(raw, self.filenames, self.container)
                if shown is None:
                    continue
                events.append(
                    self._event(
                        "response.output_text.annotation.added",
                        item_id=entry.item["id"],
                        output_index=entry.index,
                        content_index=0,
                        annotation_index=entry.annotations,
                        annotation=shown,
                    )
                )
                entry.annotations += 1
        return events

    def _text_delta(self, entry: _Message, piece: str) -> dict:
        return self._event(
            "response.output_text.delta",
            item_id=entry.item["id"],
            output_index=entry.index,
            content_index=0,
            delta=piece,
            logprobs=[],
        )

    def _message_done(self, message: dict) -> list[dict]:
        entry = self._messages.get(message["id"])
        if entry is None or entry.done:
            return []
        item = item_views.message_item(message, self.filenames, self.container)
        part = item["content"][0] if item["content"] else {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        events = []
        if part["text"].startswith(entry.text) and len(part["text"]) > len(entry.text):
            # Deltas are not kept for runs nobody streamed: the text arrives whole.
            events.append(self._text_delta(entry, part["text"][len(entry.text) :]))
        entry.text, entry.item, entry.done = part["text"], item, True
        item_id, index = item["id"], entry.index
        events += [
            self._event("response.output_text.done", item_id=item_id, output_index=index, content_index=0,
                        text=part["text"], logprobs=[]),
            self._event("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part),
            self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item)),
        ]
        return events

    on_message_completed = on_message_incomplete = _message_done

    # --- steps and tool calls ----------------------------------------------------------------------

    def on_run_step_created(self, step: dict) -> list[dict]:
        self._steps.add(step["id"])
        return []

    def on_run_step_delta(self, delta: dict) -> list[dict]:
        step_id = delta["id"]
        if step_id not in self._steps:
            return []
        events = []
        for call in (delta["delta"].get("step_details") or {}).get("tool_calls") or []:
            key = (step_id, call["index"])
            entry = self._calls.get(key)
            if entry is None and key in self._undecided:
                call = _merged(self._undecided.pop(key), call)
            if entry is None:
                if not call.get("id"):
                    continue
                if item_views.undecided(call, self.kinds):
                    self._undecided[key] = call
                    continue
                events += self._call_added(key, call)
            else:
                events += self._call_delta(entry, call)
        return events

    def _call_added(self, key: tuple[str, int], call: dict) -> list[dict]:
        kind = item_views.call_kind(call, self.kinds)
        item_id = call_item_id(kind, call["id"])
        if kind == "function_call":
            item = {"type": kind, "id": item_id, "call_id": call["id"], "name": call["function"]["name"],
                    "arguments": "", "status": "in_progress"}
        elif kind == "mcp_call":
            item = {"type": kind, "id": item_id, "server_label": item_views.SERVER_LABEL, "name": call["function"]["name"],
                    "arguments": "", "output": None, "error": None, "status": "in_progress"}
        elif kind == "web_search_call":
            item = {"type": kind, "id": item_id, "action": {"type": "search", "query": None}, "status": "in_progress"}
        elif kind == "file_search_call":
            item = {"type": kind, "id": item_id, "queries": [], "status": "in_progress", "results": None}
        else:
            item = {"type": kind, "id": item_id, "code": "", "container_id": self.container, "outputs": None,
                    "status": "in_progress"}
        entry = _Call(len(self._output), kind, item)
        self._output.append(entry)
        self._calls[key] = entry
        events = [self._event("response.output_item.added", output_index=entry.index, item=copy.deepcopy(item))]
        progress = {
            "mcp_call": ["response.mcp_call.in_progress"],
            "web_search_call": ["response.web_search_call.in_progress", "response.web_search_call.searching"],
            "file_search_call": ["response.file_search_call.in_progress", "response.file_search_call.searching"],
            "code_interpreter_call": ["response.code_interpreter_call.in_progress"],
        }.get(kind, [])
        events += [self._event(name, item_id=item_id, output_index=entry.index) for name in progress]
        return events + self._call_delta(entry, call)

    def _call_delta(self, entry: _Call, call: dict) -> list[dict]:
        item_id = entry.item["id"]
        if entry.kind == "code_interpreter_call":
            piece = (call.get("code_interpreter") or {}).get("input") or ""
            if not piece:
                return []
            entry.text += piece
            return [self._event("response.code_interpreter_call_code.delta", item_id=item_id,
                                output_index=entry.index, delta=piece)]
        piece = (call.get("function") or {}).get("arguments") or ""
        if not piece:
            return []
        entry.text += piece
        if entry.kind == "function_call":
            return [self._event("response.function_call_arguments.delta", item_id=item_id,
                                output_index=entry.index, delta=piece)]
        if entry.kind == "mcp_call":
            return [self._event("response.mcp_call_arguments.delta", item_id=item_id,
                                output_index=entry.index, delta=piece)]
        return []  # web_search: the query shows in the item when the search is done

    def _step_done(self, step: dict) -> list[dict]:
        if step["id"] not in self._steps or step["type"] != "tool_calls":
            return []
        self._learn_step(step)
        events = []
        for position, call in enumerate(step["step_details"].get("tool_calls") or []):
            key = (step["id"], position)
            if key not in self._calls:
                self._undecided.pop(key, None)
                events += self._call_added(key, call)
            events += self._call_done(self._calls[key], item_views.call_item(call, step["status"], self.kinds,
                                                                             self.include, self.container))
            answer = item_views.answered_by_server(call, self.kinds)
            if answer is not None and key not in self._answered:
                # The error the model was given for a name the run does not have: an item of its own.
                self._answered.add(key)
                entry = _Call(len(self._output), "function_call_output", answer, done=True)
                self._output.append(entry)
                events += [
                    self._event("response.output_item.added", output_index=entry.index, item=copy.deepcopy(answer)),
                    self._event("response.output_item.done", output_index=entry.index, item=copy.deepcopy(answer)),
                ]
        return events

    on_run_step_completed = on_run_step_failed = on_run_step_cancelled = on_run_step_expired = _step_done

    def _learn_step(self, step: dict) -> None:
        for call in step["step_details"].get("tool_calls") or []:
            for result in (call.get("file_search") or {}).get("results") or []:
                if result.get("file_name"):
                    self.filenames.setdefault(result["file_id"], result["file_name"])

    def _call_done(self, entry: _Call, item: dict) -> list[dict]:
        if entry.done:
            return []
        entry.item, entry.done = item, True
        item_id, index = item["id"], entry.index
        names: list[tuple[str, dict]] = []
        if entry.kind == "function_call":
            names.append(("response.function_call_arguments.done", {"arguments": item["arguments"]}))
        elif entry.kind == "mcp_call":
            names.append(("response.mcp_call_arguments.done", {"arguments": item["arguments"]}))
            names.append(("response.mcp_call.failed" if item["status"] == "failed" else "response.mcp_call.completed", {}))
        elif entry.kind == "web_search_call":
            names.append(("response.web_search_call.completed", {}))
        elif entry.kind == "file_search_call":
            names.append(("response.file_search_call.completed", {}))
        elif entry.kind == "code_interpreter_call":
            names.append(("response.code_interpreter_call_code.done", {"code": item["code"] or ""}))
            names.append(("response.code_interpreter_call.interpreting", {}))
            names.append(("response.code_interpreter_call.completed", {}))
        events = [self._event(name, item_id=item_id, output_index=index, **extra) for name, extra in names]
        events.append(self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item)))
        return events

    # --- the end -------------------------------------------------------------------------------------

    def _close_open(self, stored: dict[str, dict]) -> list[dict]:
        """Items still open when the response ends (the client's function calls it waits for, the
        server's calls in the same step, whatever a failure or cancel cut short), closed as the
        stored response shows them."""
        events = []
        for entry in self._output:
            if entry.done:
                continue
            item = stored.get(entry.item["id"])
            if isinstance(entry, _Message):
                if item is None:
                    part = {"type": "output_text", "text": entry.text, "annotations": [], "logprobs": []}
                    item = {**entry.item, "status": "incomplete", "content": [part]}
                entry.item, entry.done = item, True
                events.append(self._event("response.output_item.done", output_index=entry.index, item=copy.deepcopy(item)))
            else:
                if item is None:
                    if entry.kind == "function_call":
                        item = {**entry.item, "arguments": entry.text, "status": "incomplete"}
                    else:
                        item = {**entry.item, "status": "incomplete" if entry.kind != "mcp_call" else "failed"}
                events += self._call_done(entry, item)
        return events


def _merged(call: dict, delta: dict) -> dict:
    """A function call as streamed so far, with one more delta of it."""
    fn, more = dict(call.get("function") or {}), delta.get("function") or {}
    fn["arguments"] = (fn.get("arguments") or "") + (more.get("arguments") or "")
    if more.get("output") is not None:
        fn["output"] = more["output"]
    return {**call, "function": fn}
