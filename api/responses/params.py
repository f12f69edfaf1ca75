"""The request bodies of the Responses and Conversations APIs, and how a response's settings map
onto a run's: tools, tool_choice, text.format → response_format, and back for display."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from api.contract import schemas
from api.contract.errors import InvalidRequest
from api.contract.schemas import NAME_PATTERN, check_metadata
from tools.file_search import FileSearchTool

Metadata = schemas.Metadata


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# What the OpenAPI document says of ids the server reads by prefix (the server's own check answers).
CONVERSATION_ID = {"pattern": "^(conv_|thread_)"}


class ConversationRef(Body):
    id: str = Field(json_schema_extra=CONVERSATION_ID)


class TextFormatText(Body):
    type: Literal["text"]


class TextFormatJSONObject(Body):
    type: Literal["json_object"]


class TextFormatJSONSchema(Body):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["json_schema"]
    name: str = Field(pattern=NAME_PATTERN)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class TextConfig(Body):
    format: Union[TextFormatText, TextFormatJSONObject, TextFormatJSONSchema] | None = Field(
        default=None, discriminator="type"
    )
    verbosity: Literal["low", "medium", "high"] | None = None


class StreamOptions(Body):
    include_obfuscation: bool | None = None


class Reasoning(Body):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


# Items one request's `input` may carry. OpenAI documents no number; this bounds the work and memory of
# one request (a window past it is what /v1/responses/compact is for) while leaving long agent sessions
# sent in full (store: false) plenty of room.
MAX_INPUT_ITEMS = 10_000


def _bounded_input(value: Any) -> Any:
    if isinstance(value, list) and len(value) > MAX_INPUT_ITEMS:
        raise ValueError(
            f"at most {MAX_INPUT_ITEMS} items are accepted, got {len(value)}; compact older items "
            "(POST /v1/responses/compact) or continue with previous_response_id"
        )
    return value


class ContextManagement(Body):
    type: Literal["compaction"]
    # Tokens of the rendered context at which the server compacts it (OpenAI's minimum: 1000).
    compact_threshold: int | None = Field(default=None, ge=1000)


class CreateResponse(Body):
    # The document says what the server takes: a model, or an assistant that gives one.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"anyOf": [
            {"required": ["model"], "properties": {"model": {"type": "string", "minLength": 1}}},
            {"required": ["assistant_id"], "properties": {"assistant_id": {"type": "string"}}},
        ]},
    )
    model: str | None = Field(default=None, min_length=1)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = Field(default=None, max_length=256_000)
    conversation: Annotated[str, Field(json_schema_extra=CONVERSATION_ID)] | ConversationRef | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: int | None = Field(default=None, ge=16)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    truncation: Literal["auto", "disabled"] | None = None
    context_management: list[ContextManagement] | None = Field(default=None, max_length=1)
    metadata: Metadata = None
    include: list[str] | None = None
    background: bool | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    reasoning: Reasoning | None = None
    # Hints OpenAI uses for its own caching, routing and abuse detection: echoed, nothing more.
    user: str | None = None
    safety_identifier: str | None = Field(default=None, max_length=128)
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    top_logprobs: int | None = Field(default=None, ge=0)
    # Not in OpenAI's API (SDK callers pass them in extra_body): an assistant whose model,
    # instructions, tools, tool resources and sampling settings are this response's defaults, and
    # credentials for the run's OpenAPI actions and headers for its MCP servers (as on runs).
    assistant_id: str | None = None
    action_credentials: dict[str, dict[str, Any]] | None = Field(default=None, max_length=20)
    mcp_headers: dict[str, dict[str, Any]] | None = Field(default=None, max_length=20)

    _check_metadata = field_validator("metadata")(check_metadata)
    _check_input = field_validator("input")(_bounded_input)

    @field_validator("top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise ValueError("log probabilities are not available on this server; give 0 or leave it out")
        return value


class PromptCacheOptions(Body):
    mode: Literal["implicit", "explicit"] | None = None
    ttl: Literal["30m", "12h"] | None = None


class CompactResponse(Body):
    """`POST /v1/responses/compact`: a window (`input`, and/or a stored chain by `previous_response_id`)
    to turn into a compaction item."""

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]] | None = None
    previous_response_id: str | None = Field(default=None, json_schema_extra={"pattern": "^resp_"})
    instructions: str | None = Field(default=None, max_length=256_000)
    prompt_cache_key: str | None = Field(default=None, max_length=64)
    prompt_cache_options: PromptCacheOptions | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    service_tier: Literal["auto", "default", "fast", "flex", "scale", "priority"] | None = None
    safety_identifier: str | None = Field(default=None, max_length=128)
    # Sent by some clients along with the window (they send every request's settings): accepted; the
    # summary is text, so they change nothing.
    tools: list[dict[str, Any]] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: Reasoning | None = None
    text: TextConfig | None = None

    _check_input = field_validator("input")(_bounded_input)


class CreateConversation(Body):
    items: list[dict[str, Any]] | None = Field(default=None, max_length=20)
    metadata: Metadata = None

    _check_metadata = field_validator("metadata")(check_metadata)


class UpdateConversation(Body):
    metadata: dict[str, str] | None = Field(...)

    _check_metadata = field_validator("metadata")(check_metadata)


class CreateItems(Body):
    items: list[dict[str, Any]] = Field(min_length=1, max_length=20)


# --- tools ------------------------------------------------------------------------------------------

_TOOLS = TypeAdapter(list[schemas.Tool])
_TOOL_CHOICE = TypeAdapter(schemas.ToolChoice)
_RESPONSE_FORMAT = TypeAdapter(schemas.ResponseFormat)
# What file_search returns at most when the tool gives no `max_num_results` (shown, as OpenAI does).
FILE_SEARCH_MAX_RESULTS: int = FileSearchTool.model_fields["max_num_results"].default
WEB_SEARCH_TYPES = ("web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11")
# OpenAI's hosted tools this server has no counterpart for.
UNSUPPORTED_TOOLS = (
    "computer", "computer_use", "computer_use_preview", "image_generation", "local_shell", "shell",
    "apply_patch", "custom", "namespace", "tool_search", "programmatic_tool_calling",
)


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def _validated(adapter: TypeAdapter, value: Any, param: str) -> Any:
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith(("function-", "tagged-union")))
        message = err.get("msg", "invalid value").removeprefix("Value error, ")
        raise _invalid(f"Invalid value for '{param}': {message}" + (f" (at {where})" if where else ""), param) from None


class RunTools(BaseModel):
    """A response's tools as a run's: Assistants tool entries, and the tool resources they bring."""

    tools: list[Any]  # schemas.Tool models
    vector_store_ids: list[str] = []
    code_file_ids: list[str] = []
    container: str | None = None  # a container id the request named
    external_web_access: bool = True  # web_search may reach the live web


def run_tools(tools: list[dict], param: str = "tools") -> RunTools:
    out: list[dict] = []
    stores: list[str] = []
    code_files: list[str] = []
    container = None
    live = True
    for i, tool in enumerate(tools):
        where = f"{param}[{i}]"
        kind = tool.get("type")
        if not isinstance(kind, str):
            raise _invalid("Invalid tool: it needs a string `type`.", f"{where}.type")
        if kind == "function":
            if isinstance(tool.get("builtin"), dict):  # a built-in tool shown as a function, sent back
                out.append(tool["builtin"])
                continue
            fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
            if "name" not in fn:
                raise _invalid("Missing required parameter: 'name'.", f"{where}.name")
            out.append({"type": "function", "function": fn})
        elif kind == "file_search":
            ids = tool.get("vector_store_ids")
            if not isinstance(ids, list) or not ids or not all(isinstance(v, str) for v in ids):
                raise _invalid("file_search needs 'vector_store_ids': a list of vector store ids.", f"{where}.vector_store_ids")
            if tool.get("filters") is not None:
                raise _invalid("file_search 'filters' are not supported by this server.", f"{where}.filters")
            settings: dict[str, Any] = {}
            if tool.get("max_num_results") is not None:
                settings["max_num_results"] = tool["max_num_results"]
            ranking = tool.get("ranking_options") or {}
            if not isinstance(ranking, dict):
                raise _invalid("Invalid 'ranking_options': expected an object.", f"{where}.ranking_options")
            if ranking.get("score_threshold") is not None:
                settings["ranking_options"] = {"ranker": "auto", "score_threshold": ranking["score_threshold"]}
            out.append({"type": "file_search", "file_search": settings})
            stores += [v for v in ids if v not in stores]
        elif kind == "code_interpreter":
            spec = tool.get("container", "auto")
            if isinstance(spec, dict):
                files = spec.get("file_ids") or []
                if spec.get("type") != "auto" or not isinstance(files, list) or not all(isinstance(f, str) for f in files):
                    raise _invalid(
                        "Invalid 'container': expected a container id or {\"type\": \"auto\", \"file_ids\": [...]}.",
                        f"{where}.container",
                    )
                code_files += [f for f in files if f not in code_files]
            elif isinstance(spec, str):
                container = None if spec == "auto" else spec
            else:
                raise _invalid("Invalid 'container': expected a container id or {\"type\": \"auto\"}.", f"{where}.container")
            out.append({"type": "code_interpreter"})
        elif kind in WEB_SEARCH_TYPES:
            access = tool.get("external_web_access")
            if access is not None and not isinstance(access, bool):
                raise _invalid("Invalid 'external_web_access': expected a boolean.", f"{where}.external_web_access")
            live = live and access is not False
            out.append({"type": "web_search"})
        elif kind in UNSUPPORTED_TOOLS:
            raise _invalid(f"Tools of type '{kind}' are not supported by this server.", f"{where}.type")
        else:
            out.append(tool)  # a plugin by name, or {"type": "action", "id": ...}
    return RunTools(
        tools=_validated(_TOOLS, out, param), vector_store_ids=stores, code_file_ids=code_files, container=container,
        external_web_access=live,
    )


def validated_tools(tools: list[dict]) -> list[Any]:
    """Stored Assistants tool entries (an assistant's) as the models a run's `tools` takes."""
    return _validated(_TOOLS, tools, "tools")


def run_tool_choice(choice: str | dict | None, param: str = "tool_choice") -> tuple[Any, set[str] | None]:
    """The run's tool_choice, and the names of the tools `allowed_tools` keeps (None: all)."""
    if choice is None:
        return None, None
    if isinstance(choice, str):
        return _validated(_TOOL_CHOICE, choice, param), None
    kind = choice.get("type")
    if kind == "function":
        if not isinstance(choice.get("name"), str):
            raise _invalid("Missing required parameter: 'name'.", f"{param}.name")
        return _validated(_TOOL_CHOICE, {"type": "function", "function": {"name": choice["name"]}}, param), None
    if kind in ("file_search", "code_interpreter"):
        return _validated(_TOOL_CHOICE, {"type": kind}, param), None
    if kind in WEB_SEARCH_TYPES:
        return _validated(_TOOL_CHOICE, {"type": "function", "function": {"name": "web_search"}}, param), None
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise _invalid("Invalid 'mode': expected 'auto' or 'required'.", f"{param}.mode")
        listed = choice.get("tools")
        if not isinstance(listed, list):
            raise _invalid("Missing required parameter: 'tools'.", f"{param}.tools")
        names = set()
        for i, tool in enumerate(listed):
            if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
                raise _invalid("Invalid tool: it needs a string `type`.", f"{param}.tools[{i}]")
            if tool["type"] == "function" and not isinstance(tool.get("name"), str):
                raise _invalid("Missing required parameter: 'name'.", f"{param}.tools[{i}].name")
            names.add(tool["name"] if tool["type"] == "function" else tool["type"])
        return mode, names
    raise _invalid(f"Invalid value for '{param}': tool_choice of type '{kind}' is not supported.", f"{param}.type")


def allowed(tools: list[Any], names: set[str]) -> list[Any]:
    """The run's tools that `allowed_tools` names (by function name, or by type for the others)."""
    kept = []
    for tool in tools:
        kind = tool.type
        if kind == "function":
            if tool.function.name in names:
                kept.append(tool)
        elif kind in names or (kind == "web_search" and names & set(WEB_SEARCH_TYPES)):
            kept.append(tool)
    return kept


def response_format(text: TextConfig | None) -> Any:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return _validated(_RESPONSE_FORMAT, {"type": "json_object"}, "text.format")
    schema = {"name": fmt.name, "schema": fmt.schema_}
    if fmt.description is not None:
        schema["description"] = fmt.description
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    return _validated(_RESPONSE_FORMAT, {"type": "json_schema", "json_schema": schema}, "text.format")


def text_config(text: TextConfig | None, run_format: Any = None) -> dict:
    """`text` as a Response shows it (an assistant's response_format when the request gave none)."""
    if text is not None and text.format is not None:
        fmt = text.format.model_dump(by_alias=True, exclude_none=True)
    elif isinstance(run_format, dict) and run_format.get("type") == "json_schema":
        fmt = {"type": "json_schema", **run_format["json_schema"]}
    elif isinstance(run_format, dict) and run_format.get("type") == "json_object":
        fmt = {"type": "json_object"}
    else:
        fmt = {"type": "text"}
    out = {"format": fmt}
    if text is not None and text.verbosity is not None:
        out["verbosity"] = text.verbosity
    return out


def display_tools(
    run_tools: list[dict], resources: dict, container: str | None, external_web_access: bool = True
) -> list[dict]:
    """A run's tools as a Response lists them. Built-in tools other than web_search show as
    `function` tools carrying a `builtin` marker, as on assistants: strict clients parse them, and
    sending them back means the built-in tool again."""
    stores = ((resources or {}).get("file_search") or {}).get("vector_store_ids") or []
    code_files = ((resources or {}).get("code_interpreter") or {}).get("file_ids") or []
    out = []
    for tool in run_tools:
        kind = tool["type"]
        if kind == "function":
            fn = tool["function"]
            marker = tool.get("builtin")
            if isinstance(marker, dict) and marker.get("type") == "web_search":
                out.append({"type": "web_search"} if external_web_access else {"type": "web_search", "external_web_access": False})
                continue
            shown = {
                "type": "function",
                "name": fn["name"],
                "description": fn.get("description"),
                "parameters": fn.get("parameters"),
                "strict": bool(fn.get("strict")),
            }
            if isinstance(marker, dict):
                shown["builtin"] = marker
            out.append(shown)
        elif kind == "file_search":
            settings = tool.get("file_search") or {}
            ranking = settings.get("ranking_options") or {}
            out.append({
                "type": "file_search",
                "vector_store_ids": stores,
                "max_num_results": settings.get("max_num_results") or FILE_SEARCH_MAX_RESULTS,
                "ranking_options": {"ranker": "auto", "score_threshold": ranking.get("score_threshold", 0.0)},
                "filters": None,
            })
        elif kind == "code_interpreter":
            out.append({"type": "code_interpreter", "container": container or {"type": "auto", "file_ids": code_files}})
    return out


def display_tool_choice(choice: str | dict | None) -> str | dict:
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "allowed_tools":
        return {"type": "allowed_tools", "mode": choice.get("mode", "auto"), "tools": choice["tools"]}
    if choice.get("type") in WEB_SEARCH_TYPES:
        return {"type": "web_search_preview"} if choice["type"].startswith("web_search_preview") else {
            "type": "function", "name": "web_search"
        }
    return choice


def run_tool_choice_shown(choice: str | dict | None) -> str | dict:
    """A run's (Assistants) tool_choice as a Response shows it."""
    if choice is None or isinstance(choice, str):
        return choice or "auto"
    if choice.get("type") == "function":
        return {"type": "function", "name": choice["function"]["name"]}
    return {"type": choice["type"]}
