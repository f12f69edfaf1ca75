"""The installed tools: the project's own and third parties', all LangChain tools.

A package adds tools by declaring entry points in the `assistgraph.tools` group (as `llm` plugins
do), and local code by import paths (`module:attribute`) the host passes in. An entry may be a
`BaseTool` instance, a `BaseTool` subclass, or a factory returning one; classes and factories get
the keyword arguments the host configures for that entry's name (web_search gets its provider).

Each tool is enabled on an assistant as `{"type": "<tool name>"}`, so a name must be a valid
function name and not one of the Assistants API's own tool types.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "assistgraph.tools"
# Tool types the Assistants API defines itself (and `action`, OpenAPI actions): never plugin names.
RESERVED_TYPES = ("function", "code_interpreter", "file_search", "action", "mcp")
NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
OWN_DISTRIBUTION = "assistgraph"


@dataclass(frozen=True)
class InstalledTool:
    tool: BaseTool
    source: str  # the distribution that registered it, or the import path it came from

    @property
    def name(self) -> str:
        return self.tool.name

    def function(self) -> dict[str, Any]:
        """The tool as an OpenAI function definition (name, description, JSON schema of its arguments)."""
        spec = convert_to_openai_tool(self.tool)["function"]
        spec.setdefault("parameters", {"type": "object", "properties": {}})
        return spec


class ToolRegistry:
    def __init__(self, tools: Iterable[InstalledTool] = (), problems: Iterable[str] = ()):
        self._tools: dict[str, InstalledTool] = {}
        self.problems: list[str] = list(problems)
        for installed in tools:
            self.add(installed)

    def add(self, installed: InstalledTool) -> None:
        name = installed.name
        if not NAME.match(name) or name in RESERVED_TYPES:
            self._problem(f"tool {name!r} from {installed.source} is not usable as a tool type; skipped")
        elif name in self._tools:
            self._problem(
                f"tool {name!r} from {installed.source} is already provided by {self._tools[name].source}; skipped"
            )
        else:
            self._tools[name] = installed

    def _problem(self, text: str) -> None:
        log.warning(text)
        self.problems.append(text)

    def get(self, name: str) -> InstalledTool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def __iter__(self):
        return iter(self._tools[name] for name in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    @classmethod
    def discover(
        cls, import_paths: Iterable[str] = (), config: Mapping[str, Mapping[str, Any]] | None = None
    ) -> "ToolRegistry":
        """Entry points of installed packages (this project's first), then local import paths.

        A plugin that fails to load is reported and skipped: one broken package must not take the
        server down with it.
        """
        config = config or {}
        registry = cls()
        points = sorted(
            entry_points(group=ENTRY_POINT_GROUP),
            key=lambda ep: (_distribution(ep) != OWN_DISTRIBUTION, _distribution(ep), ep.name),
        )
        for ep in points:
            source = _distribution(ep)
            try:
                tool = _instantiate(ep.load(), config.get(ep.name, {}))
            except Exception as exc:
                registry._problem(f"tool plugin {ep.name!r} from {source} failed to load: {exc}")
                continue
            registry.add(InstalledTool(tool, source))
        for path in import_paths:
            try:
                module, _, attribute = path.partition(":")
                if not attribute:
                    raise ValueError("expected 'module:attribute'")
                target = getattr(importlib.import_module(module), attribute)
                tool = _instantiate(target, config.get(attribute, {}))
            except Exception as exc:
                registry._problem(f"tool {path!r} failed to load: {exc}")
                continue
            registry.add(InstalledTool(tool, path))
        return registry


def _distribution(ep) -> str:
    return ep.dist.name if getattr(ep, "dist", None) is not None else ep.module.split(".")[0]


def _instantiate(target: Any, kwargs: Mapping[str, Any]) -> BaseTool:
    if isinstance(target, BaseTool):
        return target
    if isinstance(target, type) and issubclass(target, BaseTool):
        return target(**kwargs)
    if callable(target):
        tool = target(**kwargs)
        if isinstance(tool, BaseTool):
            return tool
        raise TypeError(f"factory returned {type(tool).__name__}, not a LangChain BaseTool")
    raise TypeError(f"{type(target).__name__} is not a LangChain BaseTool, tool class or factory")


@lru_cache(maxsize=1)
def default_registry() -> ToolRegistry:
    """Installed tools with their defaults: what a graph run outside the API (LangGraph Studio) sees."""
    return ToolRegistry.discover()
