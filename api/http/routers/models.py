"""The rest of an app's OpenAI calls on the same base URL: `/chat/completions` (plain and streamed),
`/embeddings` and `/models`, passed through to the model endpoint the calling key (or the server's
model catalogue) gives the model, with the API's own auth, allowed-models check and error bodies.

Requests and responses are relayed as they are with httpx: an OpenAI-compatible endpoint already
speaks this API, and parsing every streamed chunk into the SDK's models and back would only add
latency. Streams are forwarded chunk by chunk as they arrive (never buffered). The model name is
replaced by the one the catalogue sends the provider. `/embeddings` with the server's offline model
(`wordllama/l2_supercat-256`, the default of vector stores) is answered here, by that model.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import httpx
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from api.contract.errors import APIError, InvalidRequest, error_body
from api.http.deps import App
from api.runs.runtime import Services
from api.security import crypto
from api.security.auth import model_credentials
from api.security.models import OPENAI_COMPATIBLE, Catalog, Credentials, Route, catalog_for, unknown_model
from graph import tokens
from ingestion.embeddings import MINILM_MODEL, WORDLLAMA_MODEL, embeddings_from_settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["models"])
# The AzureOpenAI client's deployment paths (mounted under /openai only): the deployment names the model.
azure_router = APIRouter(tags=["models"])

OPENAI_BASE_URL = "https://api.openai.com/v1"
LOCAL_EMBEDDING_MODELS = {WORDLLAMA_MODEL: "wordllama", MINILM_MODEL: "minilm"}
_CLIENT_KEY = "model_relay_client"


class BadGateway(APIError):
    status_code = 502
    error_type = "server_error"


class GatewayTimeout(APIError):
    status_code = 504
    error_type = "server_error"


class ChatCompletionRequest(BaseModel):
    """What the relay itself needs of a chat request; every other field goes to the endpoint as sent."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: str | None = None
    dimensions: int | None = Field(default=None, ge=1)


def http_client(request: Request) -> httpx.AsyncClient:
    """One pooled client per process, made on first use and closed with the app (`close`)."""
    client = getattr(request.app.state, _CLIENT_KEY, None)
    if client is None:
        client = httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
        setattr(request.app.state, _CLIENT_KEY, client)
    return client


async def close(app) -> None:
    client = getattr(app.state, _CLIENT_KEY, None)
    if client is not None:
        await client.aclose()


async def _credentials(app: Services) -> Credentials:
    if not app.caller.key_id:
        return Credentials()
    secret = crypto.configured_secret(app.settings)
    async with app.pool.connection() as conn:
        found, _ = await model_credentials(conn, app.caller.key_id, secret)
    return Credentials(**found)


def _check_allowed(app: Services, model: str) -> None:
    if app.caller.allowed_models is not None and model not in app.caller.allowed_models:
        raise unknown_model(model)


async def _route(app: Services, model: str) -> Route:
    _check_allowed(app, model)
    route = catalog_for(app.settings).route(model, await _credentials(app))
    if route is None:
        raise unknown_model(model)
    return route


def _upstream(route: Route, path: str) -> tuple[str, dict[str, str]]:
    url = (route.base_url or OPENAI_BASE_URL).rstrip("/") + path
    # identity: chunks are forwarded as they come, not as compressed blocks.
    headers = {"accept-encoding": "identity"}
    if route.api_key:
        headers["authorization"] = f"Bearer {route.api_key}"
    return url, headers


def _error_response(status: int, content: bytes) -> JSONResponse:
    """The endpoint's error as an OpenAI error body (relayed as it is when it already is one)."""
    try:
        body = httpx.Response(status, content=content).json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        message = str(error.get("message") or f"The model provider returned HTTP {status}.")
        body = error_body(message, str(error.get("type") or "invalid_request_error"), error.get("param"), error.get("code"))
    else:
        # vLLM and others answer {"object": "error", "message": ...}, or plain text.
        message = body.get("message") if isinstance(body, dict) else None
        text = message or content.decode(errors="replace").strip()[:500]
        body = error_body(f"The model provider returned HTTP {status}: {text}", "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse(body, status_code=status)


async def _send(request: Request, app: Services, route: Route, path: str, body: dict, *, stream: bool) -> Response:
    url, headers = _upstream(route, path)
    client = http_client(request)
    timeout = httpx.Timeout(app.settings.model_timeout, connect=10.0, read=app.settings.model_chunk_timeout or None)
    upstream = client.build_request("POST", url, json=body, headers=headers, timeout=timeout)
    try:
        response = await client.send(upstream, stream=True)
    except httpx.TimeoutException:
        raise GatewayTimeout(f"The model provider at {url} did not answer in time.") from None
    except httpx.HTTPError as exc:
        raise BadGateway(f"Could not reach the model provider at {url}: {exc or type(exc).__name__}") from None
    if response.status_code >= 400 or not stream:
        try:
            content = await response.aread()
        except httpx.HTTPError as exc:
            raise BadGateway(f"The response of the model provider at {url} broke off: {exc}") from None
        finally:
            await response.aclose()
        if response.status_code >= 400:
            return _error_response(response.status_code, content)
        return Response(content, status_code=response.status_code, media_type="application/json")

    async def relay():
        try:
            async for piece in response.aiter_bytes():
                yield piece
        except httpx.HTTPError as exc:  # the endpoint's stream broke off: end ours
            log.warning("model stream from %s broke off: %s", url, exc)

    return StreamingResponse(
        relay(),
        status_code=response.status_code,
        media_type=response.headers.get("content-type", "text/event-stream"),
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        background=BackgroundTask(response.aclose),
    )


# --- chat completions ----------------------------------------------------------------------------


async def _chat(request: Request, app: Services, body: ChatCompletionRequest) -> Response:
    route = await _route(app, body.model)
    if not route.openai_compatible:
        raise InvalidRequest(
            f"The model `{body.model}` is served by the provider '{route.provider}', which /chat/completions "
            "does not relay (it relays OpenAI-compatible endpoints); use it in assistants and runs.",
            param="model",
        )
    payload = body.model_dump(exclude_unset=True)
    payload["model"] = route.model
    return await _send(request, app, route, "/chat/completions", payload, stream=bool(body.stream))


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, app: App) -> Response:
    return await _chat(request, app, body)


@azure_router.post("/deployments/{deployment:path}/chat/completions")
async def azure_chat_completions(deployment: str, body: ChatCompletionRequest, request: Request, app: App) -> Response:
    body.model = deployment
    return await _chat(request, app, body)


# --- embeddings ----------------------------------------------------------------------------------


def _texts(value: str | list) -> list[str]:
    if isinstance(value, str):
        return [value]
    if value and isinstance(value[0], int):
        return [tokens.encoding().decode(value)]  # one input given as token ids (cl100k_base)
    return [tokens.encoding().decode(v) if isinstance(v, list) else v for v in value]


def _local_embeddings(model: str, body: EmbeddingRequest) -> dict:
    """Blocking (the model embeds on the CPU): run in a worker thread."""
    texts = _texts(body.input)
    if not texts or any(not text for text in texts):
        raise InvalidRequest("Invalid value for 'input': the input must not be empty.", param="input")
    try:
        embedder = embeddings_from_settings(LOCAL_EMBEDDING_MODELS[model])
    except Exception as exc:  # an optional model that is not installed
        raise InvalidRequest(f"The embedding model `{model}` is not available on this server: {exc}", param="model") from None
    if body.dimensions is not None and body.dimensions != embedder.dimension:
        raise InvalidRequest(
            f"The embedding model `{model}` only produces {embedder.dimension} dimensions.", param="dimensions"
        )
    vectors = embedder.embeddings.embed_documents(texts)
    data = []
    for index, vector in enumerate(vectors):
        if body.encoding_format == "base64":
            encoded: Any = base64.b64encode(np.asarray(vector, dtype="float32").tobytes()).decode()
        else:
            encoded = vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    used = sum(tokens.count(text) for text in texts)
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": used, "total_tokens": used}}


async def _embeddings(request: Request, app: Services, body: EmbeddingRequest) -> Response:
    if body.encoding_format not in (None, "float", "base64"):
        raise InvalidRequest(
            f"Invalid value for 'encoding_format': '{body.encoding_format}'. Supported values are: 'float' and 'base64'.",
            param="encoding_format",
        )
    if body.model in LOCAL_EMBEDDING_MODELS:
        _check_allowed(app, body.model)
        return JSONResponse(await asyncio.to_thread(_local_embeddings, body.model, body))
    route = await _route(app, body.model)
    if not route.openai_compatible:
        raise InvalidRequest(
            f"The model `{body.model}` is served by the provider '{route.provider}', which /embeddings does not relay.",
            param="model",
        )
    payload = body.model_dump(exclude_unset=True)
    payload["model"] = route.model
    return await _send(request, app, route, "/embeddings", payload, stream=False)


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request, app: App) -> Response:
    return await _embeddings(request, app, body)


@azure_router.post("/deployments/{deployment:path}/embeddings")
async def azure_embeddings(deployment: str, body: EmbeddingRequest, request: Request, app: App) -> Response:
    body.model = deployment
    return await _embeddings(request, app, body)


# --- models --------------------------------------------------------------------------------------


def _model(name: str, owned_by: str, created: int = 0) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by}


async def _endpoint_models(request: Request, base_url: str | None, api_key: str | None) -> list[dict]:
    """What an OpenAI-compatible endpoint lists at GET /models ([] when it cannot be asked)."""
    url = (base_url or OPENAI_BASE_URL).rstrip("/") + "/models"
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = await http_client(request).get(url, headers=headers, timeout=httpx.Timeout(10.0))
        response.raise_for_status()
        listed = response.json().get("data") or []
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        log.warning("could not list the models of %s: %s", url, exc)
        return []
    return [
        _model(str(m["id"]), str(m.get("owned_by") or "system"), int(m.get("created") or 0))
        for m in listed
        if isinstance(m, dict) and m.get("id")
    ]


async def _catalog_models(request: Request, catalog: Catalog, creds: Credentials) -> list[dict]:
    """Every name the catalogue serves: exact names, the names listed for patterns, and what the
    endpoints of OpenAI-compatible patterns list that the pattern (and no earlier entry) routes."""
    found: dict[str, dict] = {}
    asked: dict[tuple, list[dict]] = {}
    for entry in catalog.entries:
        names = [entry.match] if not entry.is_pattern else list(entry.names)
        if entry.is_pattern and entry.provider == OPENAI_COMPATIBLE:
            route = catalog.route(entry.match, creds)
            endpoint = (route.base_url, route.api_key) if route else (entry.base_url, entry.api_key)
            if endpoint not in asked:
                asked[endpoint] = await _endpoint_models(request, *endpoint)
            names += [m["id"] for m in asked[endpoint] if entry.matches(m["id"])]
        for name in names:
            if name not in found and catalog.entry_for(name) is entry:
                found[name] = _model(name, entry.owned_by)
    return list(found.values())


async def _served_models(request: Request, app: Services) -> list[dict]:
    creds = await _credentials(app)
    catalog = catalog_for(app.settings)
    if creds.base_url:
        listed = await _endpoint_models(request, creds.base_url, creds.api_key)
    elif catalog.configured:
        listed = await _catalog_models(request, catalog, creds)
    else:
        listed = await _endpoint_models(request, app.settings.openai_base_url, creds.api_key or app.settings.openai_api_key)
    listed = [m for m in listed if m["id"] not in LOCAL_EMBEDDING_MODELS]
    listed.append(_model(WORDLLAMA_MODEL, "assistgraph"))
    if app.caller.allowed_models is not None:
        listed = [m for m in listed if m["id"] in app.caller.allowed_models]
    return listed


@router.get("/models")
async def list_models(request: Request, app: App) -> dict:
    listed = await _served_models(request, app)
    return {"object": "list", "data": listed}


@router.get("/models/{model:path}")
async def retrieve_model(model: str, request: Request, app: App) -> dict:
    if model in LOCAL_EMBEDDING_MODELS and (app.caller.allowed_models is None or model in app.caller.allowed_models):
        return _model(model, "assistgraph")
    route = await _route(app, model)
    catalog = catalog_for(app.settings)
    if catalog.configured and not app.caller.own_endpoint:
        return _model(model, catalog.entry_for(model).owned_by)
    listed = {m["id"]: m for m in await _endpoint_models(request, route.base_url, route.api_key)}
    if model not in listed:
        raise unknown_model(model)
    return listed[model]

