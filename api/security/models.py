"""Which models this server serves, and through which provider, endpoint and key: the model
catalogue (`ASSISTGRAPH_MODEL_CATALOG` / `ASSISTGRAPH_MODELS`), and the route one caller's request
for one model name takes.

An entry maps a model name or a glob pattern (`fnmatch`, case-sensitive) to a provider: `openai`
(the default) is any OpenAI-compatible endpoint, called with `ChatOpenAI` (and relayed as it is by
`/v1/chat/completions`); any other name is a provider of LangChain's `init_chat_model`
(`anthropic`, `google_genai`, `ollama`, `bedrock_converse`, ... each needs its integration package).
The first entry that matches a name wins. Without a catalogue every name goes to the server's own
endpoint (`OPENAI_BASE_URL`), as before.

A key with its own model endpoint (`model_base_url`) sends every model there: the catalogue is the
server's, not the key's. A key with only its own `model_api_key` uses it where the server's own key
would have been used (OpenAI-compatible entries without an endpoint and key of their own).
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from api.contract.errors import InvalidRequest, NotFound
from api.settings import Settings

log = logging.getLogger(__name__)

OPENAI_COMPATIBLE = "openai"
ENTRY_KEYS = frozenset(
    {"match", "provider", "base_url", "api_key", "model", "list", "options", "owned_by", "text_tool_calls"}
)


@dataclass(frozen=True)
class Route:
    """Where one model name goes: `model` is the name the provider is sent."""

    provider: str
    model: str
    base_url: str | None
    api_key: str | None
    options: dict[str, Any] = field(default_factory=dict)
    # Tool calls the model writes as text in its answer are turned into real calls.
    text_tool_calls: bool = False

    @property
    def openai_compatible(self) -> bool:
        return self.provider == OPENAI_COMPATIBLE


@dataclass(frozen=True)
class Entry:
    match: str
    provider: str
    base_url: str | None
    api_key: str | None
    model: str | None
    names: tuple[str, ...]  # what GET /v1/models lists for a pattern (besides what its endpoint lists)
    options: dict[str, Any]
    owned_by: str
    text_tool_calls: bool = False

    @property
    def is_pattern(self) -> bool:
        return any(c in self.match for c in "*?[")

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.match) if self.is_pattern else name == self.match

    @classmethod
    def parse(cls, raw: dict, index: int) -> "Entry":
        where = f"model catalogue entry {index}"
        unknown = set(raw) - ENTRY_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(ENTRY_KEYS)})")
        match = raw.get("match")
        if not isinstance(match, str) or not match:
            raise ValueError(f"{where}: `match` (a model name or glob pattern) is required")
        provider = str(raw.get("provider") or OPENAI_COMPATIBLE)
        names = raw.get("list") or ()
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{where}: `list` must be a list of model names")
        options = raw.get("options") or {}
        if not isinstance(options, dict):
            raise ValueError(f"{where}: `options` must be a mapping of keyword arguments")
        text_tool_calls = raw.get("text_tool_calls", False)
        if not isinstance(text_tool_calls, bool):
            raise ValueError(f"{where}: `text_tool_calls` must be true or false")
        if text_tool_calls and provider != OPENAI_COMPATIBLE:
            raise ValueError(f"{where}: `text_tool_calls` applies to OpenAI-compatible endpoints only")
        return cls(
            match=match,
            provider=provider,
            base_url=raw.get("base_url") or None,
            api_key=raw.get("api_key") or None,
            model=raw.get("model") or None,
            names=tuple(names),
            options=dict(options),
            owned_by=str(raw.get("owned_by") or provider),
            text_tool_calls=text_tool_calls,
        )


@dataclass(frozen=True)
class Credentials:
    """A key's own model endpoint and key (either may be unset)."""

    base_url: str | None = None
    api_key: str | None = None


class Catalog:
    def __init__(self, entries: list[Entry], settings: Settings):
        self.entries = entries
        self.default_base_url = settings.openai_base_url
        self.default_api_key = settings.openai_api_key

    @property
    def configured(self) -> bool:
        return bool(self.entries)

    def entry_for(self, name: str) -> Entry | None:
        return next((e for e in self.entries if e.matches(name)), None)

    def route(self, name: str, creds: Credentials | None = None) -> Route | None:
        """The route of `name` for a caller with these credentials; None: the server serves no such model."""
        creds = creds or Credentials()
        if creds.base_url:
            return Route(OPENAI_COMPATIBLE, name, creds.base_url, creds.api_key)
        if not self.configured:
            return Route(OPENAI_COMPATIBLE, name, self.default_base_url, creds.api_key or self.default_api_key)
        entry = self.entry_for(name)
        if entry is None:
            return None
        api_key = entry.api_key
        if entry.provider == OPENAI_COMPATIBLE and not entry.base_url and not entry.api_key:
            api_key = creds.api_key or self.default_api_key  # the server's endpoint, and its key
        base_url = entry.base_url
        if entry.provider == OPENAI_COMPATIBLE and not base_url:
            base_url = self.default_base_url
        return Route(entry.provider, entry.model or name, base_url, api_key, entry.options, entry.text_tool_calls)

    def serves(self, name: str, creds: Credentials | None = None) -> bool:
        return self.route(name, creds) is not None


_catalogs: dict[int, tuple[Settings, Catalog]] = {}
_lock = threading.Lock()


def catalog_for(settings: Settings) -> Catalog:
    """The settings' catalogue, parsed once (a malformed one raises ValueError: the server does not start)."""
    with _lock:
        cached = _catalogs.get(id(settings))
        if cached is not None and cached[0] is settings:
            return cached[1]
        catalog = Catalog([Entry.parse(raw, i) for i, raw in enumerate(settings.model_catalog_entries())], settings)
        for entry in catalog.entries:
            if entry.provider != OPENAI_COMPATIBLE and not _provider_installed(entry.provider):
                log.warning(
                    "model catalogue: provider %r of %r is not installed; runs of those models will fail until "
                    "its LangChain integration package is installed", entry.provider, entry.match,
                )
        _catalogs[id(settings)] = (settings, catalog)
        return catalog


def _provider_installed(provider: str) -> bool:
    """Whether LangChain's `init_chat_model` finds the provider's integration package (without importing it)."""
    import importlib.util

    from langchain.chat_models import base

    known = getattr(base, "_BUILTIN_PROVIDERS", None)  # provider -> (module, class, ...)
    if not isinstance(known, dict) or provider not in known:
        return False
    spec = known[provider]
    module = spec[0] if isinstance(spec, tuple) else None
    return isinstance(module, str) and importlib.util.find_spec(module.split(".")[0]) is not None


def unknown_model(name: str) -> NotFound:
    """OpenAI's answer to a run (or completion) naming a model it does not serve."""
    return NotFound(
        f"The model `{name}` does not exist or you do not have access to it.", param="model", code="model_not_found"
    )


def unknown_model_for_assistant(name: str) -> InvalidRequest:
    """OpenAI's answer to an assistant created or modified with a model it does not serve."""
    return InvalidRequest(f"The requested model '{name}' does not exist.", param="model", code="model_not_found")
