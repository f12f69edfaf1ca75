"""Tools loaded by import path (ASSISTGRAPH_TOOL_PLUGINS), as local code that is not a package is."""

from __future__ import annotations

import asyncio
from pathlib import Path

from langchain_core.tools import tool


@tool
async def nap(seconds: float, started: str | None = None) -> str:
    """Wait for the given number of seconds, then say so. Stands in for a slow or hanging tool.

    Args:
        seconds: How long to wait.
        started: A file to create once the nap has begun (a test acts on it while the tool runs).
    """
    if started:
        Path(started).touch()
    await asyncio.sleep(seconds)
    return f"slept {seconds:g} s"
