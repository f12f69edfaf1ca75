"""Graph stream → Assistants events. A pure object: no I/O, one handler per kind of graph event.

It owns the run's snapshot and the step/message that are open, and returns the events to emit
(full objects for the run's transitions, steps and messages; deltas for tokens). Persisting and
publishing them is the executor's business; when the run moves is the lifecycle's
(`api/runs/lifecycle.py`, `api/contract/run_status.py`).

An execution that takes a run over after a crash re-creates the objects the lost one had opened
(their ids derive from the run and the model call): the mapper adopts what was stored instead (see
`adoption.py`).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.utils.json import parse_partial_json

from api.contract import objects
from api.contract.ids import derived_id
from api.contract.ids import now as default_now
from api.runs.adoption import Known, Streamed, public, streamed_input
from api.runs.events import Event
from graph import node_names
from graph.nodes import normalize_call_id


def code_of(arguments: str) -> str:
    """The `code` argument of a code_interpreter call, as far as its JSON has arrived."""
    if not arguments.lstrip().startswith("{"):
        return arguments  # a model that sends the bare source
    parsed = parse_partial_json(arguments)
    code = parsed.get("code") if isinstance(parsed, dict) else None
    return code if isinstance(code, str) else ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(part.get("text", ""))
    return "".join(parts)


def usage_json(usage: dict | None) -> dict:
    usage = usage or {}
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def turn_usage(message: AIMessage) -> dict:
    """The usage of the model call that produced `message`, as the graph's state counts it."""
    meta = message.usage_metadata or {}
    return {"prompt_tokens": meta.get("input_tokens", 0), "completion_tokens": meta.get("output_tokens", 0)}


class RunEventMapper:
    def __init__(
        self,
        run: dict,
        *,
        open_steps: list[dict] | None = None,
        open_messages: list[dict] | None = None,
        known: list[dict] | None = None,
        streamed: Streamed | None = None,
        turn: int = 0,
        server_tools: dict[str, str] | None = None,
        clock: Callable[[], int] = default_now,
    ):
        self.run = copy.deepcopy(run)
        # Tools executed inside the graph, by name -> the tool-call type clients see
        # ("function", or "file_search"). Calls of other tools are the client's.
        self._server_tools = server_tools or {}
        # Citation marker text -> file id, from file_search results seen in this execution.
        self._citations: dict[str, str] = {}
        # code_interpreter results seen in this execution: /mnt/data paths -> file ids (for file_path
        # annotations), and images not yet shown in a message.
        self._sandbox_files: dict[str, str] = {}
        self._images: list[str] = []
        self._now = clock
        # Model calls the run has completed so far: the number in the ids of the next call's objects.
        self._turn = turn
        # Steps and messages stored by earlier executions: adopted when re-created.
        self._known = Known([*(open_steps or []), *(open_messages or []), *(known or [])])
        self._streamed = streamed or Streamed.none()
        # Objects left open by an earlier execution (a tool_calls step waiting for outputs, or
        # whatever a lost execution had open): closed on a terminal event unless adopted first.
        self._stale_steps = self._known.open("thread.run.step")
        self._stale_messages = self._known.open("thread.message")
        self._message: dict | None = None
        self._message_step: dict | None = None
        self._text: list[str] = []
        self._length = 0  # characters in self._text
        self._sent = 0  # characters of the open message clients have received
        self._final: dict | None = None  # the last model call's answer, closed with the run
        self._tool_step: dict | None = None
        self._calls: list[dict] = []  # {"id", "name", "arguments", "sent"} in order of appearance
        self._call_pos: dict[Any, int] = {}  # provider's chunk index -> position in the step
        self._chunk_source: str | None = None  # id of the model response being streamed
        self.pending_tool_usage: dict[str, dict] = {}  # tool_calls step id -> usage awaiting outputs

    @property
    def turn(self) -> int:
        return self._turn

    def fork(self) -> "RunEventMapper":
        """A copy to compute a run's closing events with. Closing changes the mapper (the message and
        steps it closes are no longer open); a closing batch the database refuses (the run was
        cancelled meanwhile) must leave this one as it was, so the cancel still closes them."""
        return copy.deepcopy(self)

    # --- dispatch ---------------------------------------------------------------------------

    def handle(self, mode: str, payload: Any) -> list[Event]:
        handler = getattr(self, f"on_{mode}", None)
        return handler(payload) if handler else []

    # --- what the lifecycle asks of the run's open objects (`lifecycle.py` moves the run) -----------

    def now(self) -> int:
        return self._now()

    def transition(self, status: str, **fields) -> Event:
        """The run moved to `status` (with these fields): its event, carrying the run as it is now."""
        status = str(status)  # the text, not a RunStatus member: the run dict is also what streams relay
        self.run.update(status=status, **fields)
        return Event(f"thread.run.{status}", copy.deepcopy(self.run))

    def close_answer(self, incomplete: str | None) -> list[Event]:
        """The run's answer (the last model call's message) and its step, closed as the run ends
        (the message incomplete when a budget cut it short)."""
        final = self._final or {}
        events = self._close_message(
            incomplete_reason="max_tokens" if incomplete else None, usage=final.get("usage"), text=final.get("text")
        )
        return events + self._close_steps("completed" if not incomplete else "cancelled")

    def close_open(self, step_status: str, message_reason: str, last_error: dict | None = None) -> list[Event]:
        """Whatever is open, closed as a run cut short leaves it: steps as `step_status`, the
        message incomplete for `message_reason`."""
        events = self._close_steps(step_status, last_error=last_error)
        return events + self._close_message(incomplete_reason=message_reason)

    # --- graph events -------------------------------------------------------------------------

    def on_messages(self, payload: tuple[BaseMessage, dict]) -> list[Event]:
        chunk, meta = payload
        if meta.get("langgraph_node") != node_names.MODEL or not isinstance(chunk, AIMessage):
            return []
        events: list[Event] = []
        if chunk.id and chunk.id != self._chunk_source:
            self._chunk_source = chunk.id
        text = _text_of(chunk.content)
        if text:
            events += self._text_delta(text)
        if isinstance(chunk, AIMessageChunk):
            pieces = [
                (c.get("index", i), c.get("id"), c.get("name"), c.get("args") or "")
                for i, c in enumerate(chunk.tool_call_chunks)
            ]
        else:  # a provider that does not stream hands over the whole message at once
            pieces = [
                (i, c.get("id"), c.get("name"), json.dumps(c.get("args", {})))
                for i, c in enumerate(chunk.tool_calls)
            ]
        for index, raw_id, name, args in pieces:
            events += self._tool_call_delta(index, raw_id, name, args)
        return events

    def on_updates(self, payload: dict) -> list[Event]:
        events: list[Event] = []
        for node, update in payload.items():
            if node == "__interrupt__":
                events += self._requires_action(update)
            elif node == node_names.MODEL and update:
                events += self._model_turn_done(update)
            elif node == node_names.SERVER_TOOLS and update:
                events += self._server_tools_done(update)
        return events

    # --- adopting what an earlier execution stored ----------------------------------------------

    def _ids(self, what: str) -> str:
        seed = f"{self.run['id']}:{self._turn}:{what}"
        return derived_id("message" if what == "message" else "step", seed)

    def _adopt(self, object_id: str) -> dict | None:
        """The stored object with this id, taken over by this execution (no longer stale)."""
        known = self._known.get(object_id)
        if known is None:
            return None
        self._stale_steps = [s for s in self._stale_steps if s["id"] != object_id]
        self._stale_messages = [m for m in self._stale_messages if m["id"] != object_id]
        if known.get("_pending_usage") is not None:
            self.pending_tool_usage[object_id] = known["_pending_usage"]
        return public(known)

    def _was_completed(self, obj: dict) -> bool:
        return self._known.was_completed(obj["id"])

    # --- message creation -----------------------------------------------------------------------

    def _text_delta(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._message is None:
            events += self._open_message()
        before = self._length
        self._text.append(text)
        self._length += len(text)
        if self._length <= self._sent:
            return events  # clients have this part already (sent before the execution was lost)
        piece = text[max(0, self._sent - before) :]
        block: dict[str, Any] = {"index": 0, "type": "text", "text": {"value": piece}}
        if self._sent == 0:
            block["text"]["annotations"] = []
        self._sent = self._length
        events.append(
            Event(
                "thread.message.delta",
                {"id": self._message["id"], "object": "thread.message.delta", "delta": {"content": [block]}},
            )
        )
        return events

    def _open_message(self) -> list[Event]:
        message_id, step_id = self._ids("message"), self._ids("message_step")
        events: list[Event] = []
        step = self._adopt(step_id)
        if step is None:
            step = objects.run_step(
                self.run, step_id, {"type": "message_creation", "message_creation": {"message_id": message_id}}
            )
            events += [
                Event("thread.run.step.created", copy.deepcopy(step)),
                Event("thread.run.step.in_progress", copy.deepcopy(step)),
            ]
        message = self._adopt(message_id)
        if message is None:
            message = objects.assistant_message(self.run["thread_id"], self.run, message_id)
            events += [
                Event("thread.message.created", copy.deepcopy(message)),
                Event("thread.message.in_progress", copy.deepcopy(message)),
            ]
        self._message_step, self._message = step, message
        self._text, self._length = [], 0
        stored = "".join(part["text"]["value"] for part in message["content"] if part["type"] == "text")
        self._sent = max(self._streamed.text.get(message_id, 0), len(stored))
        return events

    def _close_message(self, *, incomplete_reason: str | None, usage: dict | None = None, text: str | None = None) -> list[Event]:
        events: list[Event] = []
        for stale in self._stale_messages:
            stale.update(status="incomplete", incomplete_at=self._now(), incomplete_details={"reason": incomplete_reason or "run_failed"})
            events.append(Event("thread.message.incomplete", stale))
        self._stale_messages = []
        if self._message is None:
            return events
        if text is None:
            text = self._final["text"] if self._final else "".join(self._text)
        self._final = None
        message, step = self._message, self._message_step
        self._message = None
        if incomplete_reason in (None, "max_tokens"):
            self._message_step = None
        annotations = self._annotations(text)
        # Images the code drew since the last message follow the text (readers of content[0].text
        # keep working).
        images = [{"type": "image_file", "image_file": {"file_id": file_id}} for file_id in self._images]
        self._images = []
        content = [{"type": "text", "text": {"value": text, "annotations": annotations}}, *images]
        if self._was_completed(message) and message["content"] == content:
            return events  # an earlier execution stored this very answer and its step
        message["content"] = content
        blocks: list[dict] = []
        if annotations:
            # Each annotation once, complete, under its index (the SDK sums repeated numbers).
            blocks.append(
                {"index": 0, "type": "text", "text": {"annotations": [{"index": i, **a} for i, a in enumerate(annotations)]}}
            )
        blocks += [{"index": i, **part} for i, part in enumerate(images, start=1)]
        if blocks:
            events.append(
                Event(
                    "thread.message.delta",
                    {"id": message["id"], "object": "thread.message.delta", "delta": {"content": blocks}},
                )
            )
        if incomplete_reason:
            message.update(status="incomplete", incomplete_at=self._now(), incomplete_details={"reason": incomplete_reason})
            events.append(Event("thread.message.incomplete", copy.deepcopy(message)))
        else:
            message.update(status="completed", completed_at=self._now())
            events.append(Event("thread.message.completed", copy.deepcopy(message)))
        if incomplete_reason in (None, "max_tokens") and step["status"] == "in_progress":
            step.update(status="completed", completed_at=self._now(), usage=usage_json(usage) if usage else step["usage"])
            events.append(Event("thread.run.step.completed", copy.deepcopy(step)))
        return events

    def _annotations(self, value: str) -> list[dict]:
        """file_citation annotations for the file_search markers the answer quotes, and file_path
        annotations for the `sandbox:/mnt/data/...` links to files the code wrote."""
        found = []
        for kind, targets in (
            ("file_citation", self._citations),
            ("file_path", {f"sandbox:{path}": file_id for path, file_id in self._sandbox_files.items()}),
        ):
            for marker, file_id in targets.items():
                start = value.find(marker)
                while start != -1:
                    found.append((start, kind, marker, file_id))
                    start = value.find(marker, start + len(marker))
        return [
            {"type": kind, "text": marker, "start_index": start, "end_index": start + len(marker), kind: {"file_id": file_id}}
            for start, kind, marker, file_id in sorted(found)
        ]

    # --- tool calls -----------------------------------------------------------------------------

    def _open_tool_step(self) -> list[Event]:
        step_id = self._ids("tools")
        self._calls, self._call_pos = [], {}
        step = self._adopt(step_id)
        if step is not None:
            self._tool_step = step
            return []
        self._tool_step = objects.run_step(self.run, step_id, {"type": "tool_calls", "tool_calls": []})
        return [
            Event("thread.run.step.created", copy.deepcopy(self._tool_step)),
            Event("thread.run.step.in_progress", copy.deepcopy(self._tool_step)),
        ]

    def _tool_call_delta(self, index: Any, raw_id: str | None, name: str | None, args: str) -> list[Event]:
        events: list[Event] = []
        if self._message is not None:
            events += self._close_message(incomplete_reason=None)
        if self._tool_step is None:
            events += self._open_tool_step()
        if index not in self._call_pos:
            pos = len(self._calls)
            self._call_pos[index] = pos
            sent = self._streamed.arguments.get(self._tool_step["id"], {}).get(pos)
            stored = self._tool_step["step_details"]["tool_calls"]
            if pos < len(stored):  # an adopted step stored with its calls: clients have those
                sent = max(sent or 0, len(streamed_input(stored[pos])))
            call = {
                "id": normalize_call_id(raw_id, self._chunk_source, pos),
                "name": name or "",
                "arguments": args,
                # Characters of the arguments clients have; None: the call was never announced.
                "sent": sent,
            }
            self._calls.append(call)
        else:
            call = self._calls[self._call_pos[index]]
            call["arguments"] += args
        pos = self._call_pos[index]
        kind = self._kind(call["name"])
        # What clients see of the input: a function's arguments, the code a code_interpreter call
        # writes (decoded from its JSON as it arrives), nothing of a file_search query (as on OpenAI).
        shown = code_of(call["arguments"]) if kind == "code_interpreter" else call["arguments"]
        if call["sent"] is None:
            call["sent"] = len(shown)
            if kind == "file_search":
                body = {"index": pos, "id": call["id"], "type": "file_search", "file_search": {}}
            elif kind == "code_interpreter":
                body = {
                    "index": pos,
                    "id": call["id"],
                    "type": "code_interpreter",
                    "code_interpreter": {"input": shown, "outputs": []},
                }
            else:
                body = {
                    "index": pos,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": shown, "output": None},
                }
            events.append(self._step_delta(body))
        elif len(shown) > call["sent"] and kind != "file_search":
            piece, call["sent"] = shown[call["sent"] :], len(shown)
            if kind == "code_interpreter":
                events.append(self._step_delta({"index": pos, "type": "code_interpreter", "code_interpreter": {"input": piece}}))
            else:
                events.append(self._step_delta({"index": pos, "type": "function", "function": {"arguments": piece}}))
        return events

    def _model_turn_done(self, update: dict) -> list[Event]:
        messages = update.get("messages") or []
        if not messages:
            return []
        response: AIMessage = messages[-1]
        usage = update.get("usage")
        events: list[Event] = []
        if self._chunk_source != response.id or (self._message is None and self._tool_step is None):
            # Nothing was streamed for this response (a provider that does not stream, or an
            # answer an earlier execution got): replay it as one delta.
            self._chunk_source = response.id
            events += self.on_messages((response, {"langgraph_node": node_names.MODEL}))
        text = _text_of(response.content)
        if self._message is None and self._tool_step is None:
            events += self._open_message()  # an empty answer is still an (empty) message
        if self._message is not None:
            if response.tool_calls:
                events += self._close_message(incomplete_reason=None, text=text)
            else:
                # The run's answer: closed by finish(), in the transaction that ends the run.
                self._final = {"text": text, "usage": usage}
        if self._tool_step is not None:
            # Final ids/arguments come from the graph's normalised message.
            for pos, call in enumerate(response.tool_calls):
                if pos < len(self._calls):
                    self._calls[pos]["id"] = call["id"]
                    self._calls[pos]["name"] = call["name"]
                    self._calls[pos]["args"] = call["args"]
            del self._calls[len(response.tool_calls):]
            self._tool_step["step_details"]["tool_calls"] = [self._tool_call_json(c) for c in self._calls]
            self.pending_tool_usage[self._tool_step["id"]] = usage_json(usage)
        self._turn += 1
        return events

    def _kind(self, name: str) -> str:
        return self._server_tools.get(name, "function")

    def _tool_call_json(self, call: dict) -> dict:
        kind = self._kind(call["name"])
        if kind == "file_search":
            return {"id": call["id"], "type": "file_search", "file_search": call.get("file_search", {})}
        if kind == "code_interpreter":
            code = (call.get("args") or {}).get("code")
            return {
                "id": call["id"],
                "type": "code_interpreter",
                "code_interpreter": {
                    "input": code if isinstance(code, str) else code_of(call["arguments"]),
                    "outputs": call.get("outputs", []),
                },
            }
        return {
            "id": call["id"],
            "type": "function",
            "function": {"name": call["name"], "arguments": call["arguments"], "output": call.get("output")},
        }

    def _server_tools_done(self, update: dict) -> list[Event]:
        """Outputs of server-side tools (and errors for tools the run does not have): fill them in;
        the step completes unless client calls remain."""
        if self._tool_step is None:
            return []
        results = {m.tool_call_id: m for m in update.get("messages") or []}
        events: list[Event] = []
        for pos, call in enumerate(self._calls):
            message = results.get(call["id"])
            if message is None:
                continue
            if self._kind(call["name"]) == "file_search":
                artifact = message.artifact if isinstance(message.artifact, dict) else {}
                hits = artifact.get("results") or []
                for hit in hits:
                    self._citations[hit["marker"]] = hit["file_id"]
                call["file_search"] = {
                    # The Responses API shows it (file_search_call.queries); Assistants views leave it out.
                    objects.FILE_SEARCH_QUERIES: [artifact["query"]] if isinstance(artifact.get("query"), str) else [],
                    "ranking_options": artifact.get("ranking_options") or {"ranker": "auto", "score_threshold": 0.0},
                    "results": [
                        {
                            "file_id": h["file_id"],
                            "file_name": h["file_name"],
                            "score": h["score"],
                            "content": [{"type": "text", "text": h["content"]}],
                        }
                        for h in hits
                    ],
                }
            elif self._kind(call["name"]) == "code_interpreter":
                artifact = message.artifact if isinstance(message.artifact, dict) else {}
                outputs = artifact.get("outputs") or [{"type": "logs", "logs": _text_of(message.content)}]
                call["outputs"] = outputs
                self._sandbox_files.update(artifact.get("files") or {})
                drawn = [o["image"]["file_id"] for o in outputs if o["type"] == "image"]
                if drawn:
                    # A model that runs its plotting code again draws the chart again: the answer
                    # shows the last drawing call's images, each once.
                    self._images = list(dict.fromkeys(drawn))
                events.append(
                    self._step_delta(
                        {
                            "index": pos,
                            "type": "code_interpreter",
                            "code_interpreter": {"outputs": [{"index": i, **o} for i, o in enumerate(outputs)]},
                        }
                    )
                )
            else:
                call["output"] = _text_of(message.content)
                # Streams see the output arrive as the step's delta, as they saw the arguments.
                events.append(self._step_delta({"index": pos, "type": "function", "function": {"output": call["output"]}}))
            call["done"] = True
        step = self._tool_step
        step["step_details"]["tool_calls"] = [self._tool_call_json(c) for c in self._calls]
        if any(not c.get("done") for c in self._calls):
            return events  # client calls remain: the step waits for their outputs (requires_action)
        self._tool_step = None
        if self._was_completed(step):
            return []  # an earlier execution completed it; this was a replay
        step.update(status="completed", completed_at=self._now(), usage=self.pending_tool_usage.pop(step["id"], None))
        return [*events, Event("thread.run.step.completed", copy.deepcopy(step))]

    def _step_delta(self, tool_call: dict) -> Event:
        return Event(
            "thread.run.step.delta",
            {
                "id": self._tool_step["id"],
                "object": "thread.run.step.delta",
                "delta": {"step_details": {"type": "tool_calls", "tool_calls": [tool_call]}},
            },
        )

    def _requires_action(self, interrupts: Any) -> list[Event]:
        if self._tool_step is None:
            return []
        calls = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in self._calls
            if not c.get("done")
        ]
        step = self._tool_step
        # The step stays open while the client works; it is closed on submit.
        self._stale_steps.append(copy.deepcopy(step))
        self._tool_step = None
        return [
            # Carries the usage of the call that made the step, stored until the outputs arrive.
            Event(
                "thread.run.step.snapshot",
                {**copy.deepcopy(step), "_pending_usage": self.pending_tool_usage.get(step["id"])},
                publish=False,
            ),
            self.transition(
                "requires_action",
                required_action={"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}},
            ),
        ]

    def _close_steps(self, status: str, last_error: dict | None = None) -> list[Event]:
        events: list[Event] = []
        open_steps = self._stale_steps + [s for s in (self._message_step, self._tool_step) if s is not None]
        stamp = {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at", "expired": "expired_at"}[status]
        for step in open_steps:
            if step["status"] != "in_progress":
                continue
            step.update(status=status, **{stamp: self._now()})
            if last_error:
                step["last_error"] = last_error
            events.append(Event(f"thread.run.step.{status}", copy.deepcopy(step)))
        self._stale_steps = []
        self._tool_step = None
        if self._message is None:
            self._message_step = None
        return events
