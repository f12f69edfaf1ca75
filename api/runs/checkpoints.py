"""Where runs keep their checkpoints: LangGraph's Postgres saver, in its own tables and rows (any
`AsyncPostgresSaver` reads what this one writes, as the README's `show_run.py` does), with each save
one statement and no waiting on other runs.

The stock saver serialises every save in a worker thread (`asyncio.to_thread`), sends it as one
statement per channel blob plus one for the checkpoint, and holds one process-wide lock around each
database call, so with a pool every run's checkpoints queue behind every other run's. Here a save is
serialised where it is made (a run's state is the thread's history and the run's own few messages:
the thread hop cost more than the encoding), sent as one statement, on a pool connection of its own.

A save is as durable as before: LangGraph still awaits each one before the next super-step starts
(`durability="sync"`), and a statement is committed when it returns. One exception, a fresh run's
first saves (its input, and LangGraph's start step): they hold nothing the thread does not, so they
are sent with the save after the first node instead, in one transaction, rather than each making
the model wait for a commit. An execution lost before that save leaves no checkpoint, and the next
one starts the run over from the thread (see `resume.py`), as it would have from those saves.

This is built on the stock saver's private helpers (`_dump_blobs`, `_dump_writes` and `_cursor`,
and `_DeltaSnapshot`), so pyproject.toml pins langgraph-checkpoint-postgres and langgraph-checkpoint to
the exact releases it was written against, and tests/unit/test_checkpoint_internals.py fails, naming
the helper, when a release changes one. The public surface has no way to the same figures: its
`aput`/`aput_writes` are the thread hop, the statement per blob and the lock this module replaces, and
its reads take the lock unless `_cursor` is replaced; writing the rows and the reads here instead
would copy LangGraph's storage format (how blobs and delta channels are encoded and read back), which
the pinned helpers keep in step with the stock reader that `show_run.py` and resumes use.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Sequence

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.types import _DeltaSnapshot
from psycopg import AsyncCursor
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

# The checkpoint and the blobs of the channels it changed, in one statement.
PUT_CHECKPOINT = """
    WITH blobs AS (
        INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
        SELECT %(thread)s, %(ns)s, b.channel, b.version, b.type, b.blob
        FROM unnest(%(channels)b::text[], %(versions)b::text[], %(types)b::text[], %(blobs)b::bytea[])
            AS b(channel, version, type, blob)
        ON CONFLICT (thread_id, checkpoint_ns, channel, version) DO NOTHING
    )
    INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata)
    VALUES (%(thread)s, %(ns)s, %(id)s, %(parent)s, %(checkpoint)s, %(metadata)s)
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id)
    DO UPDATE SET checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata
"""
# A task's writes, in one statement (the stock saver's two variants: special writes replace, others stay).
PUT_WRITES = """
    INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, blob)
    SELECT %(thread)s, %(ns)s, %(id)s, %(task)s, %(path)s, w.idx, w.channel, w.type, w.blob
    FROM unnest(%(idxs)b::int[], %(channels)b::text[], %(types)b::text[], %(blobs)b::bytea[]) AS w(idx, channel, type, blob)
    ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO {on_conflict}
"""
UPSERT = "UPDATE SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob"


class RunSaver(AsyncPostgresSaver):
    def __init__(self, pool: AsyncConnectionPool):
        super().__init__(pool)
        self._fresh: set[str] = set()
        # Fresh runs' saves not sent yet: (statement, parameters) in the order they were made.
        self._held: dict[str, list[tuple[str, dict]]] = {}

    def expect_fresh(self, thread_id: str) -> None:
        """The next read of this checkpoint thread finds nothing: a run that no execution has
        checkpointed yet (still `queued`, never resumed), so the read is not made; and its saves
        up to the first node's are sent together."""
        self._fresh.add(thread_id)
        self._held[thread_id] = []

    def forget(self, thread_id: str) -> None:
        self._fresh.discard(thread_id)
        self._held.pop(thread_id, None)

    async def _save(self, thread_id: str, statement: str, params: dict, *, after_node: bool) -> None:
        held = self._held.get(thread_id)
        if held is None:
            async with self.conn.connection() as conn:
                await conn.execute(statement, params)
            return
        held.append((statement, params))
        if not after_node:
            return
        del self._held[thread_id]
        async with self.conn.connection() as conn, conn.pipeline(), conn.transaction():
            for query, values in held:
                await conn.execute(query, values)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id = config["configurable"]["thread_id"]
        if thread_id in self._fresh and not get_checkpoint_id(config):
            self._fresh.discard(thread_id)
            return None
        return await super().aget_tuple(config)

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[AsyncCursor[DictRow]]:
        # The stock saver's reads, on a pool connection of their own: no process-wide lock.
        async with self.conn.connection() as conn, conn.cursor(binary=True, row_factory=dict_row) as cur:
            yield cur

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id, ns = configurable["thread_id"], configurable["checkpoint_ns"]
        copy = checkpoint.copy()
        copy["channel_values"] = values = copy["channel_values"].copy()
        # As the stock saver stores them: primitive values inline, the others as blobs.
        blobs: dict[str, Any] = {}
        for key, value in checkpoint["channel_values"].items():
            if isinstance(value, _DeltaSnapshot):
                blobs[key] = values.pop(key)
                values[key] = True
            elif not (value is None or isinstance(value, (str, int, float, bool))):
                blobs[key] = values.pop(key)
        rows = self._dump_blobs(thread_id, ns, blobs, {k: v for k, v in new_versions.items() if k in blobs})
        await self._save(
            thread_id,
            PUT_CHECKPOINT,
            {
                "thread": thread_id,
                "ns": ns,
                **_columns(rows, 2, ("channels", "versions", "types", "blobs")),
                "id": checkpoint["id"],
                "parent": configurable.get("checkpoint_id"),
                "checkpoint": Jsonb(copy),
                "metadata": Jsonb(get_serializable_checkpoint_metadata(config, metadata)),
            },
            # step -1 is the input, 0 LangGraph's start: the first node's save comes at step 1
            after_node=metadata.get("step", 1) >= 1,
        )
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        configurable = config["configurable"]
        rows = self._dump_writes(
            configurable["thread_id"], configurable["checkpoint_ns"], configurable["checkpoint_id"], task_id, task_path, writes
        )
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        await self._save(
            configurable["thread_id"],
            _PUT_WRITES_UPSERT if replace else _PUT_WRITES_INSERT,
            {
                "thread": configurable["thread_id"],
                "ns": configurable["checkpoint_ns"],
                "id": configurable["checkpoint_id"],
                "task": task_id,
                "path": task_path,
                **_columns(rows, 5, ("idxs", "channels", "types", "blobs")),
            },
            after_node=False,
        )


def _columns(rows: list[tuple], start: int, names: tuple[str, ...]) -> dict[str, list]:
    """The stock saver's rows (as its `_dump_blobs` / `_dump_writes` make them) as the statement's
    arrays: `names` for the columns from `start` on."""
    return {name: [row[start + i] for row in rows] for i, name in enumerate(names)}


_PUT_WRITES_UPSERT = PUT_WRITES.format(on_conflict=UPSERT)
_PUT_WRITES_INSERT = PUT_WRITES.format(on_conflict="NOTHING")
