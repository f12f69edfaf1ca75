"""A small HTTP service for OpenAPI action tests, with its own OpenAPI document.

Usage::

    service, stop = start_in_thread()
    service.url              # http://127.0.0.1:<port>
    service.document()       # the OpenAPI 3 document (also served at /openapi.json)
    service.requests         # every request received: {"method", "path", "query", "headers", "body"}
    stop()

Operations: `GET /weather/{city}?units=`, `POST /orders` (JSON body), `GET /secure/profile` (needs
`Authorization: Bearer <BEARER_TOKEN>`), `GET /keyed` (needs `X-Api-Key: <API_KEY>`), `GET /basic`
(needs basic auth `BASIC_USER`/`BASIC_PASSWORD`), `GET /echo-headers`, `GET /big` (BIG_SIZE bytes),
`GET /slow?seconds=` and `GET /redirect?to=<url>` (302).
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

BEARER_TOKEN = "bearer-token-0123456789-secret"
API_KEY = "api-key-abcdef-secret"
BASIC_USER = "alice"
BASIC_PASSWORD = "basic-password-secret"
BIG_SIZE = 200_000
# Servers the network guard (shared by actions and MCP servers) refuses: (URL, `{port}` standing for
# a local service's port; hosts allow-listed; the host the refusal names).
REFUSED_URLS = [
    ("http://localhost:{port}", ("127.0.0.1",), "localhost"),
    ("http://127.0.0.1:{port}", (), "127.0.0.1"),
    ("http://[::ffff:127.0.0.1]:{port}", (), "::ffff:127.0.0.1"),
    ("http://169.254.169.254", ("127.0.0.1",), "169.254.169.254"),
    ("http://10.0.0.1", ("127.0.0.1",), "10.0.0.1"),
    ("http://2130706433:{port}", (), "2130706433"),  # 127.0.0.1 written as one number
]


class ActionService:
    def __init__(self) -> None:
        self.url = ""
        self.requests: list[dict] = []
        self._lock = threading.Lock()

    def record(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)

    def requests_to(self, path: str) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def document(self, server_url: str | None = None) -> dict:
        return {
            "openapi": "3.0.3",
            "info": {"title": "Test service", "description": "Weather and orders for tests.", "version": "1.0"},
            "servers": [{"url": server_url or self.url}],
            "paths": {
                "/weather/{city}": {
                    "get": {
                        "operationId": "getWeather",
                        "summary": "Current weather in a city",
                        "parameters": [
                            {"name": "city", "in": "path", "required": True, "schema": {"type": "string"}},
                            {"$ref": "#/components/parameters/Units"},
                        ],
                        "responses": {"200": {"description": "The weather"}},
                    }
                },
                "/orders": {
                    "post": {
                        "operationId": "createOrder",
                        "summary": "Place an order",
                        "requestBody": {
                            "required": True,
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}},
                        },
                        "responses": {"201": {"description": "Created"}},
                    }
                },
                "/secure/profile": {
                    "get": {"operationId": "getProfile", "summary": "The caller's profile", "responses": {}}
                },
                "/keyed": {"get": {"operationId": "keyed", "summary": "Needs an API key", "responses": {}}},
                "/basic": {"get": {"operationId": "basic", "summary": "Needs basic auth", "responses": {}}},
                "/echo-headers": {"get": {"summary": "Echoes the request headers", "responses": {}}},
                "/big": {"get": {"operationId": "big", "summary": "A large response", "responses": {}}},
                "/slow": {
                    "get": {
                        "operationId": "slow",
                        "parameters": [{"name": "seconds", "in": "query", "schema": {"type": "number"}}],
                        "responses": {},
                    }
                },
                "/redirect": {
                    "get": {
                        "operationId": "redirect",
                        "parameters": [{"name": "to", "in": "query", "required": True, "schema": {"type": "string"}}],
                        "responses": {},
                    }
                },
            },
            "components": {
                "parameters": {
                    "Units": {
                        "name": "units",
                        "in": "query",
                        "description": "metric or imperial",
                        "schema": {"type": "string", "enum": ["metric", "imperial"]},
                    }
                },
                "schemas": {
                    "Order": {
                        "type": "object",
                        "required": ["item", "quantity"],
                        "properties": {
                            "item": {"type": "string"},
                            "quantity": {"type": "integer", "minimum": 1},
                            "notes": {"type": "string", "nullable": True},
                        },
                    }
                },
            },
        }


def _handler(service: ActionService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes | dict | str, headers: dict | None = None) -> None:
            if isinstance(body, dict):
                data, kind = json.dumps(body).encode(), "application/json"
            elif isinstance(body, str):
                data, kind = body.encode(), "text/plain; charset=utf-8"
            else:
                data, kind = body, "application/octet-stream"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            service.record(
                {
                    "method": self.command,
                    "path": parts.path,
                    "query": query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": raw.decode("utf-8", errors="replace"),
                }
            )
            path = parts.path
            if path == "/openapi.json":
                return self._send(200, service.document())
            if path.startswith("/weather/"):
                city = path[len("/weather/") :]
                units = query.get("units", ["metric"])[0]
                return self._send(200, {"city": city, "units": units, "temperature": 21})
            if path == "/orders" and self.command == "POST":
                try:
                    order = json.loads(raw)
                except ValueError:
                    return self._send(400, {"error": "invalid JSON"})
                return self._send(201, {"id": "order-1", "order": order})
            if path == "/secure/profile":
                if self.headers.get("Authorization") != f"Bearer {BEARER_TOKEN}":
                    return self._send(401, {"error": "unauthorized"})
                return self._send(200, {"name": "Ada"})
            if path == "/keyed":
                if self.headers.get("X-Api-Key") != API_KEY:
                    return self._send(401, {"error": "missing or wrong API key"})
                return self._send(200, {"ok": True})
            if path == "/basic":
                expected = "Basic " + base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    return self._send(401, {"error": "unauthorized"})
                return self._send(200, {"user": BASIC_USER})
            if path == "/echo-headers":
                return self._send(200, {k: v for k, v in self.headers.items()})
            if path == "/big":
                return self._send(200, "x" * BIG_SIZE)
            if path == "/slow":
                time.sleep(float(query.get("seconds", ["3"])[0]))
                return self._send(200, {"slept": True})
            if path == "/redirect":
                return self._send(302, "", {"Location": query.get("to", ["/"])[0]})
            return self._send(404, {"error": "not found"})

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # Clients that give up (timeouts, size caps) hang up mid-response: expected, not noise.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def start_in_thread(host: str = "127.0.0.1", port: int = 0) -> tuple[ActionService, Callable[[], None]]:
    """Serve an ActionService from a daemon thread; return (service, stop)."""
    service = ActionService()
    httpd = _Server((host, port), _handler(service))
    service.url = f"http://{host}:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="action-service", daemon=True)
    thread.start()

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)

    return service, stop


if __name__ == "__main__":  # pragma: no cover - manual use
    svc, _ = start_in_thread()
    print(svc.url)
    threading.Event().wait()
