"""For operators, outside /v1 and the OpenAPI document: liveness, readiness and Prometheus metrics.
Unauthenticated (probes and scrapers carry no API key); nothing here names a tenant or an object."""

from __future__ import annotations

import asyncio
import logging
import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.files import vector_stores as vs
from api.observability import metrics
from api.storage import stats
from api.tooling import code_sessions

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

PROBE_TIMEOUT = 2.0


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up and serving requests."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready for traffic: the database answers, its schema is this code's, and the executor (when
    this process runs one) is running. 503 names what is not."""
    services = request.app.state.services
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            async with services.pool.connection() as conn:
                await conn.execute("SELECT 1")
                checks["database"] = "ok"
                pending = await stats.pending_migrations(conn)
        checks["migrations"] = "ok" if not pending else f"pending: {', '.join(map(str, pending))}"
    except Exception as exc:  # unreachable, timed out, refused: not ready, whatever the reason
        checks.setdefault("database", f"unavailable: {type(exc).__name__}")
        checks.setdefault("migrations", "unknown")
    workers = getattr(request.app.state, "workers_task", None)
    if not services.settings.executor:
        checks["executor"] = "disabled"
    elif workers is not None and not workers.done():
        checks["executor"] = "ok"
    else:
        checks["executor"] = "stopped"
    ready = all(value in ("ok", "disabled") for value in checks.values())
    body: dict = {"status": "ready" if ready else "not_ready", "checks": checks}
    limits = code_sessions.limits_in_force()
    if limits is not None:  # what bounds this process's code_interpreter sessions (README: The sandbox)
        body["code_interpreter"] = limits
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    services = request.app.state.services
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            async with services.pool.connection() as conn:
                figures = await stats.collect(conn, vs.INGEST_FILE)
        families = metrics.database_families(figures)
    except Exception as exc:  # the in-process metrics are still worth a scrape
        log.warning("metrics: the database figures are unavailable (%s)", exc)
        families = []
    body = await asyncio.to_thread(metrics.render, services.settings, families)
    return Response(body, media_type=metrics.CONTENT_TYPE)


def process_exited(settings) -> None:
    metrics.process_exited(settings, os.getpid())
