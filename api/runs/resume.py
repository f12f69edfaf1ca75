"""Where an execution of a run starts: from the thread's messages (a new run), from the client's
tool outputs (a run that waited in requires_action), or from the run's last checkpoint (a run
whose previous execution was lost: its process was killed, or stopped and handed it back).

A lost execution may have stored events the checkpoint does not cover yet (the first tokens of a
model call that will be made again), or the reverse (a model call or tool results checkpointed
whose events were never stored). So a taken-over run replays its checkpointed messages through a
mapper that adopts what was stored: stored objects are completed where they are open, objects
never stored are created, and clients are sent only what they have not seen. Updates LangGraph
kept as pending writes come back from the graph itself (marked cached), so they are not replayed
here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langgraph.types import Command
from psycopg_pool import AsyncConnectionPool

from api.runs import history
from api.contract.run_status import RunStatus
from api.runs.adoption import Streamed
from api.runs.events import Event
from api.runs.mapper import RunEventMapper, turn_usage
from api.runs.sink import kept_deltas
from api.storage import store
from api.files.file_store import FileStore
from graph import node_names
from graph.state import add_usage

# The graph has nothing left to do: the lost execution ended it, only its last events are missing.
FINISHED = object()


@dataclasses.dataclass
class RunTotals:
    """Token usage and early-stop reason, summed from the graph's updates as the state's reducers do
    (reading them back from the checkpoint would cost a query and a deserialisation per run)."""

    usage: dict | None = None
    incomplete: str | None = None

    def observe(self, updates: dict) -> None:
        if (updates.get("__metadata__") or {}).get("cached"):
            return  # a pending write the graph applies again: already in the checkpoint's totals
        for update in updates.values():
            if not isinstance(update, dict):
                continue  # an interrupt
            if update.get("usage"):
                self.usage = add_usage(self.usage, update["usage"])
            if update.get("incomplete"):
                self.incomplete = update["incomplete"]


@dataclasses.dataclass
class Plan:
    graph_input: Any  # the input for astream, None to continue from the checkpoint, or FINISHED
    mapper: RunEventMapper
    totals: RunTotals
    replay: list[Event]  # events the lost execution owed its clients
    taken_over: bool  # a lost execution's run (logged)
    fresh: bool = False  # no execution has checkpointed the run yet


async def plan(pool: AsyncConnectionPool, graph, row: dict, kinds: dict[str, str], files: FileStore) -> Plan:
    """`files`: where the Files API keeps the bytes of the images the thread's messages show."""
    run, config, run_id = row["obj"], row["config"], row["obj"]["id"]
    if row["status"] == RunStatus.QUEUED and "resume" not in config:
        messages = await history.thread_messages(pool, run["thread_id"], row["tenant_id"], files, row.get("history"))
        mapper = RunEventMapper(run, server_tools=kinds)
        return Plan({"history": messages}, mapper, RunTotals(), [], False, fresh=True)

    snapshot = await graph.aget_state({"configurable": {"thread_id": run_id}})
    values = snapshot.values or {}
    messages = list(values.get("messages") or [])
    totals = RunTotals(values.get("usage"), values.get("incomplete"))
    if row["status"] == RunStatus.QUEUED:
        # Tool outputs arrived for a run that waited for them: everything before is stored.
        mapper = RunEventMapper(run, turn=_model_calls(messages), server_tools=kinds)
        return Plan(Command(resume=config["resume"]), mapper, totals, [], False)

    async with pool.connection() as conn:
        known = await store.run_objects(conn, run_id)
        streamed = Streamed.from_deltas(await kept_deltas(conn, run_id))
    mapper = RunEventMapper(run, known=known, streamed=streamed, server_tools=kinds)
    if not values:  # lost before its first checkpoint: start over (adopting what it stored)
        thread = await history.thread_messages(pool, run["thread_id"], row["tenant_id"], files)
        # The thread as the run found it: without the message the lost execution was writing (a
        # run's own messages are the thread's last, nothing else is added while it is active).
        own = sum(1 for obj in known if obj.get("object") == "thread.message")
        return Plan({"history": thread[: len(thread) - own]}, mapper, RunTotals(), [], True)
    # Pending writes are the newest messages; the graph re-emits them itself when it continues.
    pending = sum(len((t.result or {}).get("messages") or []) for t in snapshot.tasks)
    replay = _replay(mapper, messages[: len(messages) - pending])
    if snapshot.interrupts and "resume" in config:
        graph_input: Any = Command(resume=config["resume"])  # outputs submitted before the loss
    elif snapshot.next:
        graph_input = None
    else:
        graph_input = FINISHED
    return Plan(graph_input, mapper, totals, replay, True)


def _model_calls(messages: list) -> int:
    return sum(isinstance(m, AIMessage) for m in messages)


def _replay(mapper: RunEventMapper, messages: list) -> list[Event]:
    """Feed the run's checkpointed messages to the mapper as the graph produced them: each model
    call, then the tool results that answered it."""
    events: list[Event] = []
    results: list[ToolMessage] = []

    def flush_results() -> None:
        if results:
            events.extend(mapper.on_updates({node_names.SERVER_TOOLS: {"messages": list(results)}}))
            results.clear()

    for message in messages:
        if isinstance(message, AIMessage):
            flush_results()
            events.extend(mapper.on_updates({node_names.MODEL: {"messages": [message], "usage": turn_usage(message)}}))
        elif isinstance(message, ToolMessage):
            results.append(message)
    flush_results()
    return events
