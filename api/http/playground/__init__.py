"""The playground: a web page at /playground (and / redirecting there) that drives the public /v1 API
from the browser. Static HTML, CSS and ES modules shipped as package data; this module only serves
them, with a strict Content-Security-Policy (nothing is loaded from anywhere but this server), and
answers the one question the page cannot ask the API without provoking an error: is auth on, and is
there a `GET /v1/models` to pick models from."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from api.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/playground"

# Images of messages are fetched with the API key and shown from blob: URLs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class _PlaygroundFiles(StaticFiles):
    """StaticFiles (ETag / If-None-Match, Last-Modified) with the page's security headers."""

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        # Revalidate every time (a 304 is cheap), so an upgraded server never serves stale modules.
        response.headers["cache-control"] = "no-cache"
        return response


def _has_route(app: FastAPI, path: str, method: str) -> bool:
    return any(
        isinstance(route, Route) and route.path == path and method in (route.methods or ())
        for route in app.routes
    )


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the playground from `app`: `/` and `/playground` redirect to `/playground/`."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    @router.get(PREFIX)
    async def to_playground() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @router.get(f"{PREFIX}/config.json")
    async def config(request: Request) -> JSONResponse:
        body = {"auth": settings.auth, "models": _has_route(request.app, "/v1/models", "GET")}
        return JSONResponse(body, headers={**HEADERS, "cache-control": "no-store"})

    app.include_router(router)
    # Compressed here only: the API's own responses (and streams) are left as they are.
    files = GZipMiddleware(_PlaygroundFiles(directory=STATIC, html=True), minimum_size=1024)
    app.mount(PREFIX, files, name="playground")
