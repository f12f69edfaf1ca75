"""Debian's Chromium driven by Playwright, for the playground's tests and bench/playground.py.

Never `playwright install`: the browser is the system's `chromium` package. The flags keep a headless
Chromium from opening background connections (updates, sync, QUIC probes) that fail without a network.
"""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1366, "height": 768}


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.exists():
        return f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)"
    return None


def require_browser() -> None:
    """Skip outside CI when the browser is missing; in CI (CI=true) fail loudly instead."""
    import pytest

    problem = missing()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{problem}: CI must provide it (.ci/run installs it)", pytrace=False)
    pytest.skip(problem)


def wait_for_js(page, expression: str, timeout: float = 20.0):
    """Poll a JavaScript expression until it is truthy; return its value.

    `page.wait_for_function` evaluates its predicate with eval() inside the page, which the
    playground's Content-Security-Policy forbids; `page.evaluate` is not subject to it."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {expression}")
        page.wait_for_timeout(25)


@dataclass
class Tab:
    """A page of a fresh browser profile, recording what would show in its console."""

    page: object
    origin: str
    console: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def problems(self, allow: tuple[str, ...] = ()) -> list[str]:
        """Console errors and warnings, uncaught exceptions and requests that left the origin."""
        found = [line for line in self.console if not any(re.search(p, line) for p in allow)]
        return found + [f"request outside the server: {url}" for url in self.foreign]


@contextmanager
def open_tab(playwright, origin: str, **context_options) -> Iterator[Tab]:
    """Chromium with a new --user-data-dir; every request leaving `origin` is recorded and refused."""
    with tempfile.TemporaryDirectory(prefix="assistgraph-chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport=LAPTOP,
            base_url=origin,
            **context_options,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            tab = Tab(page, origin)

            def guard(route):
                url = route.request.url
                if url.startswith(origin + "/") or url.startswith(("blob:", "data:")):
                    route.continue_()
                else:
                    tab.foreign.append(url)
                    route.abort()

            context.route("**/*", guard)
            page.on("console", lambda m: m.type in ("error", "warning") and tab.console.append(f"console.{m.type}: {m.text}"))
            page.on("pageerror", lambda e: tab.console.append(f"uncaught: {e}"))
            yield tab
        finally:
            context.close()
