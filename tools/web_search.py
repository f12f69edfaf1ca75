"""`web_search`: the model searches the public web through the configured provider.

Three providers, because deployments differ: DuckDuckGo needs no key or server (but scrapes, so it
can be rate-limited), SearxNG is the self-hosted choice, Tavily the paid API with stable results.

Every failure the model can act on (provider down, HTTP error, missing configuration, timeout) comes
back as the tool's output, starting with "Error:", instead of raising: a raised exception would end
the run, while a message lets the model answer from what it knows or tell the user search is down.
Those messages never carry the Tavily key, since tool output is stored in the thread and shown to users.

Nothing here may block the event loop the runs share: SearxNG and Tavily are called through their
async clients, and the synchronous `ddgs` search runs in a worker thread. Every call is bounded by
`timeout` on our side too, because neither `ddgs` nor the SearxNG wrapper bounds a whole search.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

import aiohttp
import httpx
from langchain_core.tools import BaseTool
from pydantic import BaseModel, Field, SecretStr

log = logging.getLogger(__name__)

# Snippets are for judging relevance, not for reading whole pages; long ones (Tavily's can run to
# kilobytes) would crowd the model's context.
SNIPPET_CHARS = 600


class WebSearchInput(BaseModel):
    query: str = Field(
        description=(
            "What to search the web for: keywords or a short question, as you would type it into a search "
            "engine. Add names, versions or dates when they matter."
        )
    )


class WebSearchTool(BaseTool):
    name: str = "web_search"
    description: str = (
        "Search the public web. Use it for current events, recent releases, prices, facts you are unsure "
        "of, or anything after your training data; not for the user's uploaded files. Returns a numbered "
        "list of results, each with its title, URL and a short snippet; cite the URLs you rely on. The "
        "snippets are excerpts, not whole pages. An output starting with 'Error:' means the search failed: "
        "say so instead of guessing, or answer from your own knowledge and mark it as such."
    )
    args_schema: type[BaseModel] = WebSearchInput

    provider: Literal["duckduckgo", "searxng", "tavily"] = "duckduckgo"
    max_results: int = Field(default=5, ge=1, le=20)
    searxng_url: str | None = None
    tavily_api_key: SecretStr | None = Field(default=None, repr=False)
    tavily_api_url: str = "https://api.tavily.com"
    timeout: float = Field(default=15, gt=0)
    # False: the request allows no live web access (OpenAI's `external_web_access`); with no cached
    # index to search instead, the tool says so rather than searching.
    external_web_access: bool = True

    def _run(self, query: str) -> str:
        # For scripts and sync callers only; the graph awaits `_arun`. asyncio.run refuses to run
        # inside a running loop, which is the point: sync calls there would block it.
        return asyncio.run(self._arun(query))

    async def _arun(self, query: str) -> str:
        if not self.external_web_access:
            return (
                f"No search was made for {query!r}: live web access is turned off for this request "
                "(external_web_access: false) and there is no cached index to search instead. Answer from "
                "what you know and say that the web was not searched."
            )
        search = {"duckduckgo": self._duckduckgo, "searxng": self._searxng, "tavily": self._tavily}[self.provider]
        try:
            results = await search(query)
        except _SearchError as exc:
            message = self._scrub(str(exc))
            log.warning("web_search via %s failed: %s", self.provider, message)
            return f"Error: {message}"
        except Exception as exc:  # noqa: BLE001 - anything a provider library raises is a failed search
            message = self._scrub(f"{type(exc).__name__}: {exc}")
            log.warning("web_search via %s failed unexpectedly: %s", self.provider, message)
            return f"Error: web search via {self.provider} failed ({message})."
        return _format(query, results[: self.max_results])

    # Providers return [{"title", "url", "snippet"}] or raise _SearchError with a message for the model.

    async def _duckduckgo(self, query: str) -> list[dict[str, str]]:
        # `ddgs` directly rather than langchain-community's DuckDuckGoSearchAPIWrapper: the wrapper
        # neither passes a timeout to DDGS (fixed 5 s per engine) nor lets us tell "no results" from
        # "every engine failed", and it limits results to the past year by default.
        from ddgs import DDGS
        from ddgs.exceptions import DDGSException

        def search() -> list[dict[str, Any]]:
            return DDGS(timeout=max(1, int(self.timeout))).text(query, max_results=self.max_results)

        try:
            # The worker thread cannot be cancelled; on timeout it finishes on its own in the background.
            raw = await asyncio.wait_for(asyncio.to_thread(search), self.timeout)
        except asyncio.TimeoutError:
            raise _SearchError(f"DuckDuckGo did not answer within {self.timeout:g} s.") from None
        except DDGSException as exc:
            if str(exc) == "No results found.":  # what ddgs raises when engines answered with nothing
                return []
            raise _SearchError(f"DuckDuckGo search failed ({_short(exc)}).") from None
        return [
            {"title": r.get("title", ""), "url": r.get("href", ""), "snippet": r.get("body", "")}
            for r in raw
        ]

    async def _searxng(self, query: str) -> list[dict[str, str]]:
        from langchain_community.utilities import SearxSearchWrapper

        if not self.searxng_url:
            raise _SearchError("web search is not configured: the SearxNG provider needs searxng_url.")
        # The wrapper GETs the URL it is given; SearxNG's JSON API lives at /search under the base URL.
        url = self.searxng_url.rstrip("/")
        if not url.endswith("/search"):
            url += "/search"
        wrapper = SearxSearchWrapper(searx_host=url, k=self.max_results)
        try:
            raw = await asyncio.wait_for(wrapper.aresults(query, num_results=self.max_results), self.timeout)
        except asyncio.TimeoutError:
            raise _SearchError(f"SearxNG at {url} did not answer within {self.timeout:g} s.") from None
        except aiohttp.ClientError as exc:
            raise _SearchError(f"SearxNG at {url} is unreachable ({_short(exc)}).") from None
        except json.JSONDecodeError:
            raise _SearchError(
                f"SearxNG at {url} did not answer in JSON; enable the json format in its settings.yml "
                "(search.formats)."
            ) from None
        except ValueError as exc:
            raise _SearchError(f"SearxNG at {url} answered with {_searx_status(exc)}.") from None
        except KeyError as exc:
            raise _SearchError(f"SearxNG at {url} sent results without {exc}; is it really SearxNG?") from None
        # On no results the wrapper returns a single {"Result": "No good Search Result was found"}.
        return [
            {"title": r.get("title") or "", "url": r["link"], "snippet": r.get("snippet") or ""}
            for r in raw
            if "link" in r
        ]

    async def _tavily(self, query: str) -> list[dict[str, str]]:
        # tavily-python's AsyncTavilyClient rather than langchain-community's TavilySearchAPIWrapper:
        # the wrapper hardcodes https://api.tavily.com (no proxy, gateway or test server possible)
        # and only calls it synchronously.
        from tavily import AsyncTavilyClient
        from tavily import errors as tavily_errors

        key = self.tavily_api_key.get_secret_value() if self.tavily_api_key else ""
        if not key:
            # Without a key the client would fall back to TAVILY_API_KEY or Tavily's keyless mode;
            # the configured key is the only one this deployment means to use.
            raise _SearchError("web search is not configured: the Tavily provider needs an API key.")
        api = self.tavily_api_url.rstrip("/")
        try:
            async with AsyncTavilyClient(api_key=key, api_base_url=api) as client:
                response = await asyncio.wait_for(
                    client.search(query, max_results=self.max_results, timeout=self.timeout), self.timeout
                )
        except (asyncio.TimeoutError, tavily_errors.TimeoutError):
            raise _SearchError(f"Tavily did not answer within {self.timeout:g} s.") from None
        except tavily_errors.InvalidAPIKeyError:
            raise _SearchError("Tavily rejected the API key (HTTP 401); check the configured key.") from None
        except tavily_errors.UsageLimitExceededError:
            raise _SearchError("Tavily's rate or usage limit is exceeded (HTTP 429); try again later.") from None
        except tavily_errors.ForbiddenError as exc:
            raise _SearchError(f"Tavily refused the request ({_short(exc) or 'forbidden'}).") from None
        except tavily_errors.BadRequestError as exc:
            raise _SearchError(f"Tavily rejected the query ({_short(exc) or 'bad request'}).") from None
        except httpx.HTTPStatusError as exc:
            raise _SearchError(f"Tavily at {api} answered with HTTP {exc.response.status_code}.") from None
        except httpx.HTTPError as exc:
            raise _SearchError(f"Tavily at {api} is unreachable ({_short(exc)}).") from None
        return [
            {"title": r.get("title") or "", "url": r.get("url") or "", "snippet": r.get("content") or ""}
            for r in response.get("results") or []
        ]

    def _scrub(self, text: str) -> str:
        # Belt and braces: messages are built without the key, but library and server texts are not ours.
        key = self.tavily_api_key.get_secret_value() if self.tavily_api_key else ""
        return text.replace(key, "***") if key else text


class _SearchError(Exception):
    """A failure worded for the model."""


def _format(query: str, results: list[dict[str, str]]) -> str:
    if not results:
        return f"No results for {query!r}."
    lines = []
    for i, r in enumerate(results, start=1):
        snippet = " ".join(r["snippet"].split())
        if len(snippet) > SNIPPET_CHARS:
            snippet = snippet[: SNIPPET_CHARS - 1].rstrip() + "…"
        title = " ".join(r["title"].split()) or r["url"]
        lines.append(f"{i}. {title}\n   URL: {r['url']}\n   {snippet}".rstrip())
    return "\n\n".join(lines)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _searx_status(exc: ValueError) -> str:
    # The wrapper raises ValueError("Searx API returned an error: ", response.text) with the unawaited
    # bound method, whose owner is the aiohttp response: the only place the status survives.
    for arg in exc.args[1:]:
        response = getattr(arg, "__self__", None)
        status = getattr(response, "status", None)
        if isinstance(status, int):
            return f"HTTP {status}"
    return "an error"
