"""Playground: page weight, first render time, and the screenshots the README shows.

    .venv/bin/python bench/playground.py --out bench/results/playground.json --screenshots docs/playground

Starts its own scripted model and `assistgraph serve` (embedded Postgres, temp data dir; the example
calculator plugin loaded), gives it a few assistants, files and a vector store, then, in Debian's
Chromium (`apt-get install -y chromium`) at 1366x768:

- page weight: every file the playground ships (raw, and gzip as served), and what the first view
  loads (Resource Timing: compressed bytes on the wire, and their decoded size);
- first render: first contentful paint (target: within 3 s on every cold load), and the time until
  the assistants list is on screen (the page's `playground:ready` mark), over cold loads each in a
  fresh browser profile;
- one screenshot per main view: assistants, chat (taken while an answer streams), run inspector,
  files and vector stores, and a cited answer.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import openai

from bench._harness import ROOT, environment, print_table, script_model, sdk_kwargs, stack, verdict, write_json
from tests.browser import missing, open_tab, wait_for_js

STATIC = ROOT / "api" / "http" / "playground" / "static"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}
HANDBOOK = """# Office handbook

## Opening hours
The Zephyr office opens at 8 am and closes at 7 pm, Monday to Friday.

## Visitors
Visitors park for free on level -2 of the garage; the front desk hands out badges.
"""
FAQ = """Frequently asked questions

Q: Can I bring a dog? A: Yes, on Fridays, in the east wing only.
Q: Where is the quiet room? A: Third floor, next to the library.
"""
ROOMS = "room,floor,seats\nAtlas,1,12\nBorealis,2,6\nCirrus,3,4\n"


def shipped_assets() -> dict[str, dict[str, int]]:
    return {
        p.relative_to(STATIC).as_posix(): {"bytes": p.stat().st_size, "gzip": len(gzip.compress(p.read_bytes(), 9))}
        for p in sorted(STATIC.rglob("*"))
        if p.is_file()
    }


TARGET_FCP_MS = 3000.0


def cold_loads(playwright, origin: str, n: int) -> dict:
    fcp, ready, first_view = [], [], None
    for _ in range(n):
        with open_tab(playwright, origin) as tab:
            page = tab.page
            page.goto("/playground/")
            wait_for_js(page, "performance.getEntriesByName('playground:ready').length > 0")
            fcp.append(page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime"))
            ready.append(page.evaluate("performance.getEntriesByName('playground:ready')[0].startTime"))
            first_view = page.evaluate(
                """() => [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
                    .filter((e) => new URL(e.name).pathname.startsWith('/playground/'))
                    .map((e) => ({path: new URL(e.name).pathname, encoded: e.encodedBodySize, decoded: e.decodedBodySize}))"""
            )
            if tab.problems():
                raise SystemExit(f"console problems: {tab.problems()}")
    return {
        "runs": n,
        "first_contentful_paint_ms": {"median": round(statistics.median(fcp), 1), "max": round(max(fcp), 1)},
        "assistants_listed_ms": {"median": round(statistics.median(ready), 1), "max": round(max(ready), 1)},
        "first_view_files": first_view,
        "first_view_encoded_bytes": sum(f["encoded"] for f in first_view),
        "first_view_decoded_bytes": sum(f["decoded"] for f in first_view),
    }


def populate(client: openai.OpenAI, model: str) -> dict:
    store = client.vector_stores.create(name="Office handbook")
    client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id,
        files=[("handbook.md", HANDBOOK.encode()), ("faq.txt", FAQ.encode()), ("rooms.csv", ROOMS.encode())],
    )
    client.files.create(file=("quarterly-figures.csv", b"quarter,revenue\nQ1,120\nQ2,135\n"), purpose="assistants")
    client.beta.assistants.create(
        model=model, name="Math tutor", tools=[{"type": "code_interpreter"}],
        instructions="You are a personal math tutor. Write and run code to answer math questions.",
    )
    handbook = client.beta.assistants.create(
        model=model, name="Handbook helper", tools=[{"type": "file_search"}],
        instructions="Answer questions about the office from the handbook; cite it.",
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )
    weather = client.beta.assistants.create(
        model=model, name="Weather helper", description="Knows the weather, and can do sums.",
        instructions="Answer questions about the weather. Call get_weather for current conditions.",
        tools=[
            {"type": "calculator"},
            {"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city", "parameters": WEATHER_SCHEMA}},
        ],
        temperature=0.7,
    )
    return {"store": store.id, "handbook": handbook.id, "weather": weather.id}


def screenshots(playwright, origin: str, model_url: str, model: str, ids: dict, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    taken = []
    with open_tab(playwright, origin) as tab:
        page = tab.page

        def shoot(name: str) -> None:
            page.wait_for_timeout(300)  # let polling settle and the cursor blink on
            page.screenshot(path=str(out / f"{name}.png"))
            taken.append(f"{name}.png")

        page.goto(f"/playground/#/assistants/{ids['weather']}")
        page.get_by_label("calculator", exact=True).wait_for()
        page.locator("#view-title").focus()
        shoot("assistants")

        script_model(model_url, model, [
            {"content": "Good morning! Ask me about the weather anywhere; I can also do the arithmetic."},
            {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Lisbon"}}]},
            {"content": "It is 24 °C and sunny in Lisbon right now, with a light breeze from the north-west. "
                        "A good day for a walk along the river; take sunglasses and some water.",
             "chunk_size": 3, "chunk_delay": 0.06},
        ])
        page.goto(f"/playground/#/chat/{ids['weather']}")
        composer = page.get_by_label("Message", exact=True)
        composer.fill("Good morning!")
        composer.press("Enter")
        page.locator(".message.assistant:not([aria-busy])").first.wait_for()
        composer.fill("What is the weather like in Lisbon?")
        composer.press("Enter")
        output = page.get_by_label("Output of get_weather")
        output.fill('{"temperature_c": 24, "sky": "sunny", "wind": "NW 12 km/h"}')
        output.press("Control+Enter")
        wait_for_js(page, "(document.querySelector('.message.assistant[aria-busy=\"true\"]')?.textContent || '').includes('along the')")
        composer.fill("And tomorrow?")
        page.screenshot(path=str(out / "chat.png"))
        taken.append("chat.png")
        page.locator("#run-bar .status-completed").wait_for()

        page.locator("#inspect-run").click()
        page.locator("#steps > li summary").first.click()
        page.locator("#steps .step-body").first.wait_for()
        shoot("inspector")

        page.goto(f"/playground/#/files/{ids['store']}")
        page.locator("#store-files").wait_for()
        shoot("files")

        script_model(model_url, model, [
            {"tool_calls": [{"name": "file_search", "arguments": {"query": "visitor parking"}}]},
            {"content": "Visitors park for free on level -2 of the garage, and the front desk hands out "
                        "their badges【0:0†handbook.md】."},
        ])
        # The handbook assistant uses the same scripted model name; its turns are queued above.
        page.goto(f"/playground/#/chat/{ids['handbook']}")
        composer = page.get_by_label("Message", exact=True)
        composer.fill("Where do visitors park?")
        composer.press("Enter")
        page.locator(".message.assistant .citations").wait_for()
        shoot("chat-citations")
        if tab.problems():
            raise SystemExit(f"console problems: {tab.problems()}")
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="cold loads to time")
    parser.add_argument("--out", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--screenshots", type=Path, default=None, help="write the PNG screenshots into this folder")
    args = parser.parse_args()
    problem = missing()
    if problem:
        raise SystemExit(problem)
    from playwright.sync_api import sync_playwright

    calculator = {
        "PYTHONPATH": str(ROOT / "examples" / "assistgraph-calculator"),
        "ASSISTGRAPH_TOOL_PLUGINS": "assistgraph_calculator:calculator",
    }
    results = {"environment": environment(), "assets": shipped_assets()}
    results["shipped_bytes"] = sum(a["bytes"] for a in results["assets"].values())
    results["shipped_gzip_bytes"] = sum(a["gzip"] for a in results["assets"].values())
    model = f"bench-{uuid.uuid4().hex[:8]}"
    with stack(server_env=calculator) as running, sync_playwright() as playwright:
        origin = running.server_url.removesuffix("/v1")
        client = openai.OpenAI(**sdk_kwargs(running.server_url))
        ids = populate(client, model)
        httpx.get(f"{origin}/playground/", timeout=10).raise_for_status()
        started = time.perf_counter()
        results["cold_loads"] = cold_loads(playwright, origin, args.runs)
        results["cold_loads"]["wall_s"] = round(time.perf_counter() - started, 1)
        if args.screenshots:
            results["screenshots"] = screenshots(playwright, origin, running.model_url, model, ids, args.screenshots)
    loads = results["cold_loads"]
    print_table(
        "playground",
        [
            ("files shipped (raw / gzip)", f"{results['shipped_bytes']:,} B / {results['shipped_gzip_bytes']:,} B"),
            ("first view on the wire (decoded)", f"{loads['first_view_encoded_bytes']:,} B ({loads['first_view_decoded_bytes']:,} B), {len(loads['first_view_files'])} files"),
            ("first contentful paint, median (max)", f"{loads['first_contentful_paint_ms']['median']} ms ({loads['first_contentful_paint_ms']['max']} ms)"),
            ("assistants listed, median (max)", f"{loads['assistants_listed_ms']['median']} ms ({loads['assistants_listed_ms']['max']} ms)"),
            ("first contentful paint <= 3 s on every load", verdict(loads["first_contentful_paint_ms"]["max"], TARGET_FCP_MS, at_most=True)),
        ],
        ("measure", f"{loads['runs']} cold loads"),
    )
    write_json(args.out, json.loads(json.dumps(results)))


if __name__ == "__main__":
    main()
