"""The FastAPI application: lifespan wiring, routers under /v1 (and /api/v1), error handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.http import playground
from api.http.errors import install_error_handlers
from api.http.guard import RequestGuard
from api.http.openapi import document_errors
from api.http.routers import (
    actions,
    assistants,
    conversations,
    files,
    keys,
    mcp_servers,
    models,
    ops,
    responses,
    responses_ws,
    runs,
    threads,
    tools,
    vector_stores,
)
from api.observability import tracing
from api.security.models import catalog_for
from api.runs.runtime import runtime
from api.settings import Settings, get_settings

log = logging.getLogger(__name__)


class PollAfterHeader:
    """Adds `openai-poll-after-ms`, which the SDK's poll helpers wait for instead of a full second."""

    def __init__(self, app, value: int):
        self.app = app
        self.header = (b"openai-poll-after-ms", str(value).encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_header(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        return await self.app(scope, receive, send_with_header)


def create_app(database_url: str, settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    catalog_for(settings)  # a malformed model catalogue stops the server here, with its reason

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with runtime(settings, database_url, with_executor=settings.executor) as (services, workers):
            app.state.services = services
            worker = asyncio.create_task(workers.run(), name="assistgraph-workers") if workers else None
            app.state.workers_task = worker
            try:
                yield
            finally:
                if worker:
                    worker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await worker
                await models.close(app)
                ops.process_exited(settings)
                tracing.shutdown()

    tracing.configure(settings)
    app = FastAPI(title="assistgraph", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(ops.router)
    # /openai: the paths the AzureOpenAI client calls (`{azure_endpoint}/openai/...`, `api-version` ignored).
    for prefix, in_schema in (("/v1", True), ("/api/v1", False), ("/openai", False)):
        # /threads/runs is registered before /threads/{thread_id} so it is not read as an id.
        for router in (
            assistants.router, runs.router, threads.router, files.router, vector_stores.router, tools.router,
            actions.router, keys.router, models.router, responses.router, responses_ws.router, conversations.router,
        ):
            app.include_router(router, prefix=prefix, include_in_schema=in_schema)
        app.include_router(mcp_servers.router, prefix=prefix, include_in_schema=in_schema)
    app.include_router(models.azure_router, prefix="/openai", include_in_schema=False)
    playground.install(app, settings)  # the web page at /playground, a client of the routes above
    app.add_middleware(PollAfterHeader, value=settings.poll_after_ms)
    app.add_middleware(RequestGuard, max_body=settings.max_request_bytes, read_timeout=settings.request_read_timeout)
    document_errors(app)
    tracing.instrument_app(app)
    return app


def app_from_settings() -> FastAPI:
    """The app of one of several `assistgraph serve --workers N` processes."""
    settings = get_settings()
    if not settings.database_url:
        raise RuntimeError("worker processes need the database URL their parent sets")
    return create_app(settings.database_url, settings)
