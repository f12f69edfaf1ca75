"""The checkpoint saver (api/runs/checkpoints.py) is built on helpers LangGraph keeps private, so
pyproject.toml pins langgraph-checkpoint-postgres and langgraph-checkpoint to the exact releases it was
written against. These cases fail, naming the helper, when an upgrade of either changes one of them:
the test suite breaks, never a running server."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from langgraph.checkpoint.base import WRITES_IDX_MAP
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde import types as serde_types
from psycopg_pool import AsyncConnectionPool

from api.runs.checkpoints import RunSaver

POSITIONAL, KEYWORD = "POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY"
# The saver's methods RunSaver calls or overrides, with the parameters it relies on (name, kind).
SIGNATURES = {
    "_dump_blobs": [("thread_id", POSITIONAL), ("checkpoint_ns", POSITIONAL), ("values", POSITIONAL), ("versions", POSITIONAL)],
    "_dump_writes": [
        ("thread_id", POSITIONAL), ("checkpoint_ns", POSITIONAL), ("checkpoint_id", POSITIONAL),
        ("task_id", POSITIONAL), ("task_path", POSITIONAL), ("writes", POSITIONAL),
    ],
    "_cursor": [("pipeline", KEYWORD)],
    "aput": [("config", POSITIONAL), ("checkpoint", POSITIONAL), ("metadata", POSITIONAL), ("new_versions", POSITIONAL)],
    "aput_writes": [("config", POSITIONAL), ("writes", POSITIONAL), ("task_id", POSITIONAL), ("task_path", POSITIONAL)],
    "aget_tuple": [("config", POSITIONAL)],
}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_the_saver_method_has_the_signature_it_was_written_against(name):
    method = getattr(AsyncPostgresSaver, name, None)
    assert method is not None, f"AsyncPostgresSaver.{name} is gone: api/runs/checkpoints.py needs it"
    found = [(p.name, p.kind.name) for p in inspect.signature(method).parameters.values()][1:]
    assert found == SIGNATURES[name], f"AsyncPostgresSaver.{name} changed its signature: {found}"


@pytest.mark.parametrize("name", ["aget_tuple", "alist"])
def test_the_stock_reads_go_through_the_overridden_cursor(name):
    source = inspect.getsource(getattr(AsyncPostgresSaver, name))
    assert "self._cursor(" in source, f"AsyncPostgresSaver.{name} no longer reads through _cursor"


def test_the_delta_snapshot_type_is_where_it_was():
    snapshot = getattr(serde_types, "_DeltaSnapshot", None)
    assert isinstance(snapshot, type), "langgraph.checkpoint.serde.types._DeltaSnapshot is gone"
    assert snapshot._fields == ("value",), f"_DeltaSnapshot changed its fields: {snapshot._fields}"


def test_the_dumped_rows_have_the_columns_the_statements_take():
    async def rows():
        saver = RunSaver(AsyncConnectionPool("", open=False))
        blobs = saver._dump_blobs("t", "ns", {"messages": ["hi"]}, {"messages": "2", "gone": "3"})
        writes = saver._dump_writes("t", "ns", "c", "task", "path", [("messages", ["hi"]), (next(iter(WRITES_IDX_MAP)), None)])
        return saver, blobs, writes

    saver, blobs, writes = asyncio.run(rows())
    typed = saver.serde.dumps_typed(["hi"])
    assert blobs == [("t", "ns", "messages", "2", *typed), ("t", "ns", "gone", "3", "empty", None)], "_dump_blobs rows changed"
    assert writes[0] == ("t", "ns", "c", "task", "path", 0, "messages", *typed), "_dump_writes rows changed"
    assert writes[1][5] == WRITES_IDX_MAP[writes[1][6]], "_dump_writes no longer numbers special writes by WRITES_IDX_MAP"
