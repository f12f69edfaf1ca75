"""Why a run failed, in words a person can act on: the `last_error` of a run whose model provider,
network, tools or limits stopped it."""

from __future__ import annotations

import openai

from api.settings import Settings
from graph.errors import RunStopped


def _provider_message(exc: openai.APIError) -> str:
    """The provider's own error message, without the SDK's "Error code: N - " prefix."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return body["message"]
    return exc.message


def _connection_cause(exc: BaseException) -> tuple[bool, str]:
    """(whether the connection was never established, the innermost cause's text)."""
    never_connected, detail = False, ""
    seen: set[int] = set()
    cause = exc.__cause__ or exc.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if not isinstance(cause, openai.OpenAIError):  # skip the SDK's (and langchain's) wrappers
            if type(cause).__name__ in ("ConnectError", "ConnectTimeout") or isinstance(cause, ConnectionRefusedError):
                never_connected = True
            detail = str(cause) or type(cause).__name__
        cause = cause.__cause__ or cause.__context__
    return never_connected, detail


def _endpoint(exc: openai.APIError) -> str | None:
    """The endpoint the failed request went to: the run's route (its catalogue entry, or the key's
    own endpoint), which need not be OPENAI_BASE_URL."""
    try:
        url = exc.request.url
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError for a request never set
        return None
    path = url.path.rsplit("/", 1)[0] if url.path.endswith("/completions") else url.path
    path = path.removesuffix("/chat")
    return str(url.copy_with(path=path or "/", query=None, fragment=None)).rstrip("/")


class KeyRevoked(Exception):
    """The API key that created the run was revoked."""


class RunLost(Exception):
    """The run's executions kept being lost (killed, or stopped and handed back)."""

    def __init__(self, times: int):
        super().__init__(
            f"The run's execution was lost {times} times (its executor was killed or stopped each time); "
            "it was given up."
        )


class ToolUnavailable(Exception):
    """A tool the run enables is not installed in the process executing it."""


class ModelUnavailable(Exception):
    """The run's model is not (any more) in the model catalogue of the process executing it."""


def describe_model_error(exc: BaseException, settings: Settings) -> tuple[str, str]:
    """(last_error.code, message) a person can act on."""
    if isinstance(exc, (KeyRevoked, ToolUnavailable, ModelUnavailable, RunLost, RunStopped)):
        return "server_error", str(exc)
    if isinstance(exc, openai.RateLimitError):
        return "rate_limit_exceeded", f"The model provider rate-limited the request: {_provider_message(exc)}"
    if isinstance(exc, openai.APITimeoutError):
        return "server_error", "The model provider did not answer in time."
    if isinstance(exc, openai.APIConnectionError):
        where = _endpoint(exc) or settings.openai_base_url or "the default OpenAI endpoint"
        never_connected, detail = _connection_cause(exc)
        if never_connected or not detail:
            return "server_error", f"Could not reach the model provider at {where}: {detail or exc.message}"
        # Connected, then the response broke off (a dropped stream, a reset connection).
        return "server_error", f"The connection to the model provider at {where} broke off: {detail}"
    if isinstance(exc, openai.APIStatusError):
        return "server_error", f"The model provider returned HTTP {exc.status_code}: {_provider_message(exc)}"
    return "server_error", f"The run failed: {type(exc).__name__}: {exc}"


def expiry_error(settings: Settings, run: dict, *, waiting_for_outputs: bool = False) -> dict:
    """Why a run expired: its time ran out before any of the model's own limits (which would have
    failed it with their reason) could end it. The run's time is its own (set by the process that
    created it), the model's limits this process's."""
    lifetime = (run.get("expires_at") or 0) - (run.get("created_at") or 0)
    seconds = lifetime if lifetime > 0 else settings.run_expires_after
    expiry = f"The run expired: it had not finished {seconds} seconds after it was created (ASSISTGRAPH_RUN_EXPIRES_AFTER)"
    if waiting_for_outputs:
        return {"code": "server_error", "message": f"{expiry} while it waited for the outputs of its tool calls."}
    limits = f"ASSISTGRAPH_MODEL_TIMEOUT ({settings.model_timeout:g} s) in all"
    if settings.model_first_token_timeout:
        limits = f"ASSISTGRAPH_MODEL_FIRST_TOKEN_TIMEOUT ({settings.model_first_token_timeout:g} s) to their first token and {limits}"
    return {
        "code": "server_error",
        "message": f"{expiry} while it was still running. Its model calls may take {limits}; "
        "a limit longer than what is left of the run's time is never reached.",
    }
