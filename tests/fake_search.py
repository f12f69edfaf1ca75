"""Fake web search providers (SearxNG and Tavily) on one local HTTP server, for `web_search` tests.

The tool talks to it through the real provider clients (langchain-community's SearxSearchWrapper,
tavily-python's AsyncTavilyClient), so the tests cover the wire format without outside network.

Usage::

    fake = start_fake_search()            # 127.0.0.1, ephemeral port, background thread
    WebSearchTool(provider="searxng", searxng_url=fake.url)
    WebSearchTool(provider="tavily", tavily_api_url=fake.url, tavily_api_key=fake.tavily_api_key)
    ...
    fake.requests                         # what reached the server, oldest first
    fake.stop()

Endpoints
---------
``GET /search?q=...&format=json``  SearxNG's JSON API. Any other ``format`` gets 403, as from a
                                   SearxNG whose settings do not enable it.
``POST /search``                   Tavily's search API. The key is taken from ``Authorization: Bearer``
                                   (current clients) or the body's ``api_key`` (older ones); a missing
                                   or different key gets 401 with Tavily's error body.

Results are derived from the query so tests can tell it arrived: result ``i`` (1-based) has title
``"<query> result i"``, URL ``https://example.com/<slug>/i`` and a snippet quoting the query.
SearxNG answers ``RESULTS`` results whatever is asked (as the real one pages by 10); Tavily honours
``max_results``. Queries containing these whole words change the answer (checked in this order):

``boom``   HTTP 500.
``hang``   no answer for 30 s (cut short by ``stop()``).
``empty``  no results.

Each recorded request is ``{"method", "path", "query", "params", "headers", "body"}``: ``query`` is
the search text, ``params`` the URL query parameters (one value each), ``headers`` lower-cased names,
``body`` the parsed JSON body or None.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

RESULTS = 8
HANG_SECONDS = 30
DEFAULT_TAVILY_KEY = "tvly-test-0123456789abcdef"


@dataclass
class FakeSearch:
    url: str
    tavily_api_key: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)

    def stop(self) -> None:
        self._stopping.set()  # releases handlers sleeping on "hang"
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _words(query: str) -> set[str]:
    # Whole words, so that e.g. "change" does not trip "hang".
    return set(re.findall(r"[a-z0-9]+", query.lower()))


def _slug(query: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-") or "q"


def _hits(query: str, n: int) -> list[dict[str, str]]:
    return [
        {
            "title": f"{query} result {i}",
            "url": f"https://example.com/{_slug(query)}/{i}",
            "content": f"Snippet {i} about {query}.",
        }
        for i in range(1, n + 1)
    ]


def _searxng_body(query: str, n: int) -> dict[str, Any]:
    results = []
    for i, hit in enumerate(_hits(query, n), start=1):
        host_path = hit["url"].split("://", 1)[1].split("/", 1)
        results.append(
            {
                **hit,
                "engine": "duckduckgo",
                "parsed_url": ["https", host_path[0], "/" + host_path[1], "", "", ""],
                "template": "default.html",
                "engines": ["duckduckgo", "brave"],
                "positions": [i],
                "score": round(2.0 / i, 4),
                "category": "general",
                "publishedDate": None,
                "thumbnail": "",
                "priority": "",
            }
        )
    return {
        "query": query,
        "number_of_results": 0,
        "results": results,
        "answers": [],
        "corrections": [],
        "infoboxes": [],
        "suggestions": [f"{query} tutorial"],
        "unresponsive_engines": [],
    }


def _tavily_body(query: str, n: int) -> dict[str, Any]:
    return {
        "query": query,
        "follow_up_questions": None,
        "answer": None,
        "images": [],
        "results": [
            {**hit, "score": round(0.99 - i / 100, 4), "raw_content": None}
            for i, hit in enumerate(_hits(query, n))
        ],
        "response_time": 0.01,
        "request_id": "00000000-0000-0000-0000-000000000000",
    }


def start_fake_search(tavily_api_key: str = DEFAULT_TAVILY_KEY) -> FakeSearch:
    fake = FakeSearch(url="", tavily_api_key=tavily_api_key)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test output
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self, query: str, params: dict[str, str], body: Any) -> None:
            with lock:
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": urlsplit(self.path).path,
                        "query": query,
                        "params": params,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )

        def _trouble(self, query: str) -> bool:
            """Answer the failure a magic word asks for; True when the request is handled."""
            words = _words(query)
            if "boom" in words:
                self._send(500, {"error": "internal server error"})
                return True
            if "hang" in words:
                fake._stopping.wait(HANG_SECONDS)
                self.close_connection = True
                return True
            return False

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            parts = urlsplit(self.path)
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            query = params.get("q", "")
            self._record(query, params, None)
            if parts.path != "/search":
                self._send(404, {"error": "not found"})
            elif params.get("format") != "json":
                self._send(403, {"error": "format not allowed"})
            elif not self._trouble(query):
                self._send(200, _searxng_body(query, 0 if "empty" in _words(query) else RESULTS))

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            parts = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            query = body.get("query", "") if isinstance(body, dict) else ""
            self._record(query, dict(parse_qsl(parts.query)), body)
            if parts.path != "/search":
                self._send(404, {"detail": {"error": "Not Found"}})
                return
            if not isinstance(body, dict) or not query:
                self._send(400, {"detail": {"error": "Query is missing."}})
                return
            auth = self.headers.get("Authorization", "")
            key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else body.get("api_key")
            if key != fake.tavily_api_key:
                self._send(401, {"detail": {"error": "Unauthorized: missing or invalid API key."}})
                return
            if self._trouble(query):
                return
            n = 0 if "empty" in _words(query) else min(int(body.get("max_results") or 5), 20)
            self._send(200, _tavily_body(query, n))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    fake._server = server
    fake._thread = threading.Thread(target=server.serve_forever, name="fake-search", daemon=True)
    fake._thread.start()
    return fake
