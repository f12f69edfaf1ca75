"""Request bodies of the Assistants API, validated to the limits of the contract."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from tools.registry import RESERVED_TYPES

NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"

# OpenAI's request limits (the contract's section 6 and OpenAI's own 400s).
MAX_INSTRUCTIONS = 256_000
MAX_MESSAGE_CHARS = 256_000  # one message's text
MAX_THREAD_MESSAGES = 32  # messages in one thread create (and additional_messages of one run)
# The contract names no limit on a message's attachments; every one costs a lookup in the request's
# transaction, so they are bounded like a thread's code_interpreter files.
MAX_ATTACHMENTS = 20


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return value
    if len(value) > 16:
        raise ValueError("metadata can have at most 16 key-value pairs")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"metadata key '{key[:20]}...' is longer than 64 characters")
        if len(item) > 512:
            raise ValueError(f"metadata value of '{key}' is longer than 512 characters")
    return value


def refuse_null(expected: str):
    """A check for a field a modify request may leave out but, when it gives it, must give a value
    (pydantic runs field validators only on fields given)."""

    def check(value: Any) -> Any:
        if value is None:
            raise ValueError(f"expected {expected}, not null")
        return value

    return check


Metadata = Annotated[dict[str, str] | None, Field(default=None)]


class WithMetadata(Body):
    metadata: Metadata = None

    _check_metadata = field_validator("metadata")(check_metadata)


# --- tools -----------------------------------------------------------------------------------


class FunctionDefinition(Body):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(Body):
    type: Literal["function"]
    function: FunctionDefinition


class CodeInterpreterTool(Body):
    type: Literal["code_interpreter"]


class RankingOptions(Body):
    ranker: Literal["auto", "default_2024_08_21"] = "auto"
    score_threshold: float = Field(default=0.0, ge=0, le=1)


class FileSearchSettings(Body):
    max_num_results: int | None = Field(default=None, ge=1, le=50)
    ranking_options: RankingOptions | None = None


class FileSearchTool(Body):
    type: Literal["file_search"]
    file_search: FileSearchSettings | None = None


class BuiltinTool(Body):
    """An installed tool (web_search, a plugin's), enabled by its name; GET /v1/tools lists them."""

    type: str = Field(pattern=NAME_PATTERN)


class ActionTool(Body):
    """An OpenAPI action registered at /v1/actions: each of its operations becomes a tool."""

    type: Literal["action"]
    id: str = Field(pattern=r"^action_[A-Za-z0-9]+$")


class McpTool(Body):
    """An MCP server registered at /v1/mcp_servers (or configured for everyone): its tools become tools."""

    type: Literal["mcp"]
    id: str = Field(pattern=r"^mcp_[A-Za-z0-9_-]+$")


def _tool_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if not isinstance(kind, str):
        return None
    return kind if kind in RESERVED_TYPES else "builtin"


def _unwrap_builtin(value: Any) -> Any:
    """Responses show built-in tools and actions as `function` tools carrying a `builtin` marker
    (so strict clients parse them); sending such an entry back means the built-in tool itself."""
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("builtin"), dict):
        return value["builtin"]
    return value


Tool = Annotated[
    Union[
        Annotated[FunctionTool, Tag("function")],
        Annotated[CodeInterpreterTool, Tag("code_interpreter")],
        Annotated[FileSearchTool, Tag("file_search")],
        Annotated[ActionTool, Tag("action")],
        Annotated[McpTool, Tag("mcp")],
        Annotated[BuiltinTool, Tag("builtin")],
    ],
    Discriminator(_tool_kind, custom_error_type="invalid_tool", custom_error_message="Invalid tool: it needs a string `type`."),
    BeforeValidator(_unwrap_builtin),
]


# --- response format, tool choice, truncation ---------------------------------------------------


class JSONSchemaFormat(Body):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TextFormat(Body):
    type: Literal["text"]


class JSONObjectFormat(Body):
    type: Literal["json_object"]


class JSONSchemaResponseFormat(Body):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Union[
    Literal["auto"],
    Annotated[Union[TextFormat, JSONObjectFormat, JSONSchemaResponseFormat], Field(discriminator="type")],
]


class NamedFunction(Body):
    name: str


class FunctionToolChoice(Body):
    type: Literal["function"]
    function: NamedFunction


class FileSearchToolChoice(Body):
    type: Literal["file_search"]


class CodeInterpreterToolChoice(Body):
    type: Literal["code_interpreter"]


ToolChoice = Union[
    Literal["none", "auto", "required"],
    Annotated[
        Union[FunctionToolChoice, FileSearchToolChoice, CodeInterpreterToolChoice], Field(discriminator="type")
    ],
]


class TruncationStrategy(Body):
    type: Literal["auto", "last_messages"]
    last_messages: int | None = Field(default=None, ge=1)


# --- tool resources ------------------------------------------------------------------------------


class CodeInterpreterResources(Body):
    file_ids: list[str] = Field(default_factory=list, max_length=20)


class VectorStoreHelper(WithMetadata):
    """`tool_resources.file_search.vector_stores[]`: create a store with these files."""

    file_ids: list[str] = Field(default_factory=list, max_length=500)
    chunking_strategy: dict[str, Any] | None = None


class FileSearchResources(Body):
    vector_store_ids: list[str] = Field(default_factory=list, max_length=1)
    vector_stores: list[VectorStoreHelper] | None = Field(default=None, max_length=1)


class ToolResources(Body):
    code_interpreter: CodeInterpreterResources | None = None
    file_search: FileSearchResources | None = None


# --- assistants ----------------------------------------------------------------------------------

ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None


class AssistantFields(WithMetadata):
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS)
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_resources: ToolResources | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort = None


class CreateAssistant(AssistantFields):
    model: str = Field(min_length=1)


class ModifyAssistant(AssistantFields):
    model: str | None = Field(default=None, min_length=1)


# --- messages ------------------------------------------------------------------------------------


class TextPart(Body):
    type: Literal["text"]
    text: str = Field(max_length=MAX_MESSAGE_CHARS)


class ImageURL(Body):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageURLPart(Body):
    type: Literal["image_url"]
    image_url: ImageURL


class ImageFile(Body):
    file_id: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageFilePart(Body):
    type: Literal["image_file"]
    image_file: ImageFile


ContentPart = Annotated[Union[TextPart, ImageURLPart, ImageFilePart], Field(discriminator="type")]


class AttachmentTool(Body):
    type: Literal["code_interpreter", "file_search"]


class Attachment(Body):
    file_id: str
    tools: list[AttachmentTool] = Field(default_factory=list)


class CreateMessage(WithMetadata):
    role: Literal["user", "assistant"]
    content: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)] | Annotated[list[ContentPart], Field(min_length=1)]
    attachments: list[Attachment] | None = Field(default=None, max_length=MAX_ATTACHMENTS)

    @field_validator("content")
    @classmethod
    def _text_size(cls, value):
        if isinstance(value, list):
            size = sum(len(part.text) for part in value if isinstance(part, TextPart))
            if size > MAX_MESSAGE_CHARS:
                raise ValueError(
                    f"string too long. Expected text parts of at most {MAX_MESSAGE_CHARS} characters in all, "
                    f"but got {size} characters instead."
                )
        return value


class ModifyMessage(WithMetadata):
    pass


# --- threads -------------------------------------------------------------------------------------


class CreateThread(WithMetadata):
    messages: list[CreateMessage] | None = Field(default=None, max_length=MAX_THREAD_MESSAGES)
    tool_resources: ToolResources | None = None


class ModifyThread(WithMetadata):
    tool_resources: ToolResources | None = None


# --- runs ----------------------------------------------------------------------------------------


class RunFields(WithMetadata):
    assistant_id: str
    model: str | None = None
    instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS)
    tools: list[Tool] | None = Field(default=None, max_length=20)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stream: bool | None = None
    max_prompt_tokens: int | None = Field(default=None, ge=256)
    max_completion_tokens: int | None = Field(default=None, ge=256)
    truncation_strategy: TruncationStrategy | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    reasoning_effort: ReasoningEffort = None
    # Not in OpenAI's API: credentials for this run's OpenAPI actions, by action id (they replace
    # the action's stored ones; kept encrypted, never shown). SDK callers pass them in extra_body.
    action_credentials: dict[str, dict[str, Any]] | None = Field(default=None, max_length=20)
    # Not in OpenAI's API either: headers for this run's MCP servers, by server id (merged over the
    # server's stored ones; kept encrypted, never shown).
    mcp_headers: dict[str, dict[str, Any]] | None = Field(default=None, max_length=20)


class CreateRun(RunFields):
    additional_instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS)
    additional_messages: list[CreateMessage] | None = Field(default=None, max_length=MAX_THREAD_MESSAGES)


class CreateThreadAndRun(RunFields):
    thread: CreateThread | None = None
    tool_resources: ToolResources | None = None


class ModifyRun(WithMetadata):
    pass


class ToolOutput(Body):
    tool_call_id: str
    output: str


class SubmitToolOutputs(Body):
    tool_outputs: list[ToolOutput] = Field(min_length=1)
    stream: bool | None = None

    @model_validator(mode="after")
    def _unique_ids(self):
        ids = [o.tool_call_id for o in self.tool_outputs]
        if len(ids) != len(set(ids)):
            raise ValueError("each tool_call_id may appear only once")
        return self
