"""The playground (/playground) in a real browser: Debian's Chromium, driven by Playwright, against
`assistgraph serve` with the scripted model. Each test uses a fresh browser profile and ends with no
console errors or warnings, no uncaught exception and no request leaving the server.

Locally: `apt-get install -y chromium` (the system browser; never `playwright install`), then
`.venv/bin/python -m pytest -q tests/test_playground.py`. Without Chromium these tests skip, except
in CI (CI=true), where they fail."""

from __future__ import annotations

import json
import re
import struct
import zlib
from pathlib import Path

import httpx
import pytest

from tests.browser import open_tab, require_browser, wait_for_js
from tests.conftest import ADMIN_KEY, sdk, wait_for

STATIC = Path(__file__).resolve().parent.parent / "api" / "http" / "playground" / "static"
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
STREAMED = "Good morning! Here is an answer that arrives in many small pieces, one delta at a time."


@pytest.fixture(scope="module")
def playwright():
    require_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    with sync_playwright() as driver:
        yield driver


def origin_of(server) -> str:
    return server.url.removesuffix("/v1")


@pytest.fixture
def tab(playwright, server):
    with open_tab(playwright, origin_of(server)) as opened:
        yield opened


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def png(width: int, height: int) -> bytes:
    """A solid-colour RGB PNG."""
    rows = b"".join(b"\x00" + bytes((200, 80, 40)) * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def create_assistant_in_form(page, name: str, model: str) -> str:
    page.goto("/playground/#/assistants/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Model").fill(model)
    return name


def saved_assistant_id(page) -> str:
    page.wait_for_url(re.compile(r"#/assistants/asst_"))
    return page.url.rsplit("/", 1)[1]


# --- serving ------------------------------------------------------------------------------------


def test_root_redirects_and_assets_are_self_contained(server):
    origin = origin_of(server)
    for path in ("/", "/playground"):
        response = httpx.get(origin + path)
        assert response.status_code == 307 and response.headers["location"] == "/playground/"
    page = httpx.get(f"{origin}/playground/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert httpx.get(f"{origin}/playground/config.json").json() == {"auth": False, "models": False}
    # Every asset is shipped and served as it is in the package; none points at another host.
    for asset in sorted(p for p in STATIC.rglob("*") if p.is_file()):
        served = httpx.get(f"{origin}/playground/{asset.relative_to(STATIC).as_posix()}")
        assert served.status_code == 200 and served.content == asset.read_bytes(), asset
        own = served.content.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")
        assert not re.search(rb"(https?:)?//[a-z0-9]", own), asset
    # The playground stays out of the API's OpenAPI document.
    paths = httpx.get(f"{origin}/openapi.json").json()["paths"]
    assert "/" not in paths and not [p for p in paths if p.startswith("/playground")]


def test_config_says_whether_auth_is_on_and_models_can_be_listed():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from api.http import playground
    from api.settings import Settings

    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": []}

    playground.install(app, Settings(auth=True))
    response = TestClient(app).get("/playground/config.json")
    assert response.json() == {"auth": True, "models": True}
    assert response.headers["cache-control"] == "no-store"


def test_first_load_is_light_and_keyboard_navigable(tab, client):
    client.beta.assistants.create(model="any-model", name="Keyboard check")
    page = tab.page
    page.goto("/")
    expect(page.get_by_role("heading", name="Playground", exact=True)).to_be_visible()
    wait_for_js(page, "performance.getEntriesByName('playground:ready').length > 0")
    # The page painted (how soon is measured in bench/playground.py).
    assert page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime") > 0
    # Bytes of the page's own files on the wire (compressed): index, CSS and the modules of the first view.
    sizes = page.evaluate("""() => [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
        .filter((e) => new URL(e.name).pathname.startsWith('/playground/'))
        .map((e) => [new URL(e.name).pathname, e.encodedBodySize, e.decodedBodySize])""")
    paths = {path for path, _, _ in sizes}
    assert {"/playground/", "/playground/app.css", "/playground/js/main.js", "/playground/js/assistants.js"} <= paths
    assert 5_000 < sum(encoded for _, encoded, _ in sizes) < 40_000, sizes
    assert sum(decoded for _, _, decoded in sizes) < 120_000, sizes

    # Keyboard: skip link first, then the sections, then the page; focus is always drawn.
    order = []
    for _ in range(5):
        page.keyboard.press("Tab")
        order.append(page.evaluate("""() => {
            const el = document.activeElement;
            const style = getComputedStyle(el);
            return [el.textContent.trim().split('\\n')[0], style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2];
        }"""))
    names = [name for name, _ in order]
    assert names[:4] == ["Skip to content", "Assistants", "Files & vector stores", "New assistant"], names
    assert all(visible for _, visible in order), order
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # "New assistant" by keyboard
    expect(page.get_by_role("heading", name="New assistant")).to_be_visible()
    # Every control of the editor has an accessible name.
    unnamed = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter((el) => !el.labels?.length && !el.getAttribute('aria-label') && !el.textContent.trim())
        .map((el) => el.outerHTML)""")
    assert unnamed == []
    assert tab.problems() == []


# --- assistants, chat, function calls, inspector --------------------------------------------------


def test_editing_an_assistant_keeps_what_the_form_does_not_show(tab, client, model_name):
    vector_store = client.vector_stores.create(name="Kept store")
    assistant = client.beta.assistants.create(
        model=model_name,
        name="Before",
        instructions="Old instructions.",
        metadata={"team": "docs"},
        temperature=0.3,
        tools=[
            {"type": "file_search", "file_search": {"max_num_results": 7}},
            {"type": "web_search"},
            {"type": "function", "function": {"name": "lookup", "parameters": WEATHER_SCHEMA}},
        ],
        tool_resources={"file_search": {"vector_store_ids": [vector_store.id]}},
    )
    page = tab.page
    page.goto(f"/playground/#/assistants/{assistant.id}")
    expect(page.get_by_label("file_search", exact=True)).to_be_checked()
    expect(page.get_by_label("web_search", exact=True)).to_be_checked()
    expect(page.get_by_label("Vector store for file_search")).to_have_value(vector_store.id)
    expect(page.locator(".fn-name")).to_have_value("lookup")
    expect(page.get_by_label("Temperature")).to_have_value("0.3")
    page.get_by_label("Name", exact=True).fill("After")
    page.get_by_label("Instructions").fill("New instructions.")
    page.get_by_label("web_search", exact=True).uncheck()
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("heading", name="After")).to_be_visible()
    saved = client.beta.assistants.retrieve(assistant.id)
    assert (saved.name, saved.instructions, saved.temperature, saved.metadata) == ("After", "New instructions.", 0.3, {"team": "docs"})
    assert [t.type for t in saved.tools] == ["file_search", "function"]
    assert saved.tools[0].file_search.max_num_results == 7
    assert saved.tools[1].function.name == "lookup" and saved.tools[1].function.parameters == WEATHER_SCHEMA
    assert saved.tool_resources.file_search.vector_store_ids == [vector_store.id]

    # A bad schema is refused by the form, before any request.
    page.locator(".fn-parameters").fill("{not json")
    page.get_by_role("button", name="Save changes").click()
    assert "Not valid JSON" in page.locator(".fn-parameters").evaluate("el => el.validationMessage")
    assert client.beta.assistants.retrieve(assistant.id).tools[1].function.parameters == WEATHER_SCHEMA

    # Delete asks twice.
    delete = page.get_by_role("button", name="Delete assistant")
    delete.click()
    page.get_by_role("button", name="Confirm: delete assistant").click()
    page.wait_for_url(re.compile(r"#/assistants$"))
    assert assistant.id not in [a.id for a in client.beta.assistants.list(limit=100)]
    assert tab.problems() == []


def test_models_are_offered_when_the_server_lists_them(tab):
    """A server with `GET /v1/models` (this one has none yet): the form suggests its models, and
    still takes any name."""
    page = tab.page
    page.route("**/playground/config.json", lambda route: route.fulfill(json={"auth": False, "models": True}))
    page.route("**/v1/models", lambda route: route.fulfill(json={"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "x"},
        {"id": "llama3.1", "object": "model", "created": 0, "owned_by": "y"}]}))
    page.goto("/playground/#/assistants/new")
    options = page.locator("#model-options option")
    expect(options.first).to_be_attached()
    offered = options.evaluate_all("els => els.map((o) => o.value)")
    assert {"gpt-4o-mini", "llama3.1"} <= set(offered)  # with the models of existing assistants
    expect(page.get_by_label("Model")).to_have_attribute("list", "model-options")
    expect(page.locator("#assistant-model + .hint, .field:has(#assistant-model) .hint")).to_contain_text("GET /v1/models")
    assert tab.problems() == []


def test_create_assistant_chat_streams_answers_a_function_call_and_inspects_the_run(tab, client, scripted, model_name):
    page = tab.page
    create_assistant_in_form(page, "Weather helper", model_name)
    page.get_by_label("Instructions").fill("Answer questions about the weather.")
    expect(page.get_by_label("calculator", exact=True)).to_be_visible()  # installed tools come from GET /v1/tools
    page.get_by_label("calculator", exact=True).check()
    page.get_by_role("button", name="Add function").click()
    function = page.locator("fieldset.function").last
    function.get_by_label("Function name").fill("get_weather")
    function.get_by_label("Function description").fill("Current weather of a city")
    function.get_by_label("Parameters (JSON schema)").fill(json.dumps(WEATHER_SCHEMA))
    page.get_by_role("button", name="Create assistant").click()
    assistant_id = saved_assistant_id(page)

    stored = client.beta.assistants.retrieve(assistant_id)
    assert (stored.name, stored.model, stored.instructions) == ("Weather helper", model_name, "Answer questions about the weather.")
    tools = [t.model_dump() for t in stored.tools]
    assert any(t.get("builtin") == {"type": "calculator"} for t in tools)
    function_tool = next(t for t in tools if t["type"] == "function" and not t.get("builtin"))
    assert function_tool["function"]["name"] == "get_weather"
    assert function_tool["function"]["parameters"] == WEATHER_SCHEMA
    expect(page.locator("#assistant-list")).to_contain_text("Weather helper")

    # The answer streams in: the page shows partial text while the run goes on.
    scripted.script(model_name, [{"content": STREAMED, "chunk_size": 3, "chunk_delay": 0.03}])
    page.get_by_role("link", name="Open chat").click()
    composer = page.get_by_label("Message", exact=True)
    expect(composer).to_be_focused()
    page.evaluate("""() => {
        window.seen = [];
        new MutationObserver(() => {
            const live = document.querySelector('.message.assistant[aria-busy="true"] .parts');
            if (live) window.seen.push(live.textContent);
        }).observe(document.getElementById('messages'), { subtree: true, childList: true, characterData: true });
    }""")
    composer.fill("Good morning?")
    composer.press("Enter")
    answer = page.locator(".message.assistant").last
    expect(answer).to_contain_text(STREAMED)
    expect(answer).not_to_have_attribute("aria-busy", "true")
    seen = page.evaluate("window.seen")
    partial = {text for text in seen if text and len(text) < len(STREAMED)}
    assert len(partial) >= 10, seen  # many intermediate renders, each a prefix of the answer
    assert all(STREAMED.startswith(text) for text in partial)
    expect(page.locator("#run-bar")).to_contain_text("completed")
    thread_id = page.locator("#thread-id").inner_text()
    assert page.url.endswith(f"#/chat/{assistant_id}/{thread_id}")
    assert page.evaluate("localStorage.getItem('assistgraph.playground.threads')").count(thread_id) == 1

    # A function call: the page asks for the output, then streams the rest of the run.
    scripted.script(model_name, [
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Lisbon"}}]},
        {"content": "It is 24 °C and sunny in Lisbon."},
    ])
    composer.fill("And the weather in Lisbon?")
    composer.press("Enter")
    output = page.get_by_label("Output of get_weather")
    expect(output).to_be_focused()
    expect(page.locator("#tool-outputs pre")).to_contain_text('"city": "Lisbon"')
    expect(page.locator("#run-bar")).to_contain_text("requires action")
    output.fill('{"temperature_c": 24, "sky": "sunny"}')
    output.press("Control+Enter")
    expect(page.locator(".message.assistant").last).to_contain_text("It is 24 °C and sunny in Lisbon.")
    expect(page.locator("#run-bar")).to_contain_text("completed")
    step = page.locator(".activity").last  # one line per call; the details open on demand
    expect(step.locator("summary")).to_contain_text('get_weather({"city":"Lisbon"}) → {"temperature_c":24,"sky":"sunny"}')
    step.locator("summary").click()
    expect(step.locator(".calls pre").last).to_be_visible()
    expect(step.locator(".calls pre").last).to_contain_text('"temperature_c": 24')
    tool_messages = [m for m in scripted.requests(model_name)[-1]["body"]["messages"] if m["role"] == "tool"]
    assert json.loads(tool_messages[-1]["content"]) == {"temperature_c": 24, "sky": "sunny"}

    # The inspector: the run, its usage and its steps; a step opens by keyboard.
    page.locator("#inspect-run").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Run run_"))).to_be_visible()
    expect(page.locator("dl.facts").first).to_contain_text("completion")
    steps = page.locator("#steps > li")
    expect(steps).to_have_count(2)
    summary = steps.first.locator("summary")
    expect(summary).to_contain_text("get_weather")
    summary.focus()
    page.keyboard.press("Enter")
    opened = steps.first.locator(".step-body")
    expect(opened).to_contain_text('"city": "Lisbon"')
    expect(opened).to_contain_text('"sky": "sunny"')
    expect(opened).to_contain_text("tokens")
    steps.nth(1).locator("summary").click()
    expect(steps.nth(1).locator(".step-body")).to_contain_text("It is 24 °C and sunny in Lisbon.")
    expect(page.locator("#run-list li")).to_have_count(2)

    # Back in the thread (from the browser's memory of it), the conversation is read from the API.
    page.get_by_role("link", name="Back to chat").click()
    expect(page.locator("#thread-list")).to_contain_text("Good morning?")
    expect(page.locator(".message")).to_have_count(4)
    assert tab.problems() == []


def test_cancel_a_streaming_run(tab, client, scripted, model_name):
    assistant = client.beta.assistants.create(model=model_name, name="Slow talker")
    scripted.script(model_name, [{"content": "word " * 400, "chunk_size": 5, "chunk_delay": 0.05}])
    page = tab.page
    page.goto(f"/playground/#/chat/{assistant.id}")
    page.get_by_label("Message", exact=True).fill("Tell me everything.")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message.assistant[aria-busy='true']")).to_contain_text("word word")
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-bar")).to_contain_text("cancelled")
    expect(page.locator(".message.assistant").last).to_contain_text("incomplete")
    run_id = page.locator("#run-bar code").inner_text()
    thread_id = page.locator("#thread-id").inner_text()
    assert client.beta.threads.runs.retrieve(run_id, thread_id=thread_id).status == "cancelled"
    assert tab.problems() == []


# --- files, vector stores, citations, images -------------------------------------------------------


def test_upload_into_a_vector_store_then_cite_it_and_send_an_image(tab, client, scripted, model_name, tmp_path):
    handbook = tmp_path / "handbook.txt"
    handbook.write_text("The Zephyr office opens at 8 am.\n\nVisitors park for free on level -2 of the garage.\n")
    picture = tmp_path / "swatch.png"
    picture.write_bytes(png(64, 40))
    page = tab.page
    page.goto("/playground/#/files")
    page.get_by_label("Name", exact=True).fill("Office handbook")
    page.get_by_role("button", name="Create vector store").click()
    page.wait_for_url(re.compile(r"#/files/vs_"))
    store_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#store-title")).to_contain_text("Office handbook")
    page.get_by_label("Files to upload").set_input_files(str(handbook))
    expect(page.get_by_label("Add to vector store")).to_have_value(store_id)
    page.get_by_role("button", name="Upload", exact=True).click()
    row = page.locator("#store-files tr", has_text="handbook.txt")
    expect(row.locator(".badge")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#store-counts")).to_contain_text("1 completed, 0 in progress")
    file_id = row.get_attribute("data-file-id")
    assert client.vector_stores.files.retrieve(file_id, vector_store_id=store_id).status == "completed"
    expect(page.locator("#file-table")).to_contain_text("handbook.txt")

    # An assistant searching that store; its answer cites the file.
    create_assistant_in_form(page, "Handbook helper", model_name)
    page.get_by_label("file_search", exact=True).check()
    page.get_by_label("Vector store for file_search").select_option(store_id)
    page.get_by_role("button", name="Create assistant").click()
    assistant_id = saved_assistant_id(page)
    assert client.beta.assistants.retrieve(assistant_id).tool_resources.file_search.vector_store_ids == [store_id]
    scripted.script(model_name, [
        {"tool_calls": [{"name": "file_search", "arguments": {"query": "visitor parking"}}]},
        {"content": "Visitors park for free on level -2【0:0†handbook.txt】."},
    ])
    page.get_by_role("link", name="Open chat").click()
    composer = page.get_by_label("Message", exact=True)
    composer.fill("Where do visitors park?")
    composer.press("Enter")
    answer = page.locator(".message.assistant", has_text="Visitors park")
    expect(answer.locator(".citations li")).to_contain_text("handbook.txt")
    expect(answer.locator("a.cite")).to_have_text("[1]")
    expect(answer.locator(".text").first).to_have_text("Visitors park for free on level -2[1].")
    search = page.locator(".activity").last
    expect(search.locator("summary")).to_contain_text("file_search → 1 result")
    search.locator("summary").click()
    expect(search.locator(".chunk")).to_contain_text("level -2 of the garage")  # the results' text, live

    # An attached image goes as an image_file part and is shown from the Files API.
    scripted.script(model_name, [{"content": "A nice orange swatch."}])
    page.locator("#attach").set_input_files(str(picture))
    expect(page.locator(".attachments")).to_contain_text("swatch.png")
    composer.fill("What colour is this?")
    composer.press("Enter")
    image = page.locator(".message.user img").last
    expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    wait_for(lambda: image.evaluate("img => img.complete && img.naturalWidth") == 64)
    expect(page.locator(".message.assistant").last).to_contain_text("A nice orange swatch.")
    thread_id = page.locator("#thread-id").inner_text()
    sent = client.beta.threads.messages.list(thread_id, order="desc", limit=2).data[1]
    assert [part.type for part in sent.content] == ["text", "image_file"]

    # The inspector shows the search results with their text.
    answer.locator(".inspect").click()
    page.locator("#steps > li summary").first.click()
    results = page.locator("#steps > li .results").first
    expect(results).to_contain_text("handbook.txt")
    expect(results).to_contain_text("Visitors park for free on level -2 of the garage.")
    assert tab.problems() == []


def test_tool_calls_and_annotations_render_as_the_contract_shapes_them(tab, client):
    """code_interpreter steps and file_path annotations, which this server does not produce yet,
    rendered by the page's own modules from contract-shaped objects."""
    image = client.files.create(file=("plot.png", png(30, 20)), purpose="assistants")
    data = client.files.create(file=("table.csv", b"a,b\n1,2\n"), purpose="assistants")
    page = tab.page
    page.goto("/playground/#/assistants")
    expect(page.get_by_role("heading", name="Playground", exact=True)).to_be_visible()
    page.evaluate(
        """async ([imageId, dataId]) => {
            const render = await import('./js/render.js');
            const main = document.getElementById('main');
            main.replaceChildren(
                render.toolCall({ id: 'call_ci', type: 'code_interpreter', code_interpreter: {
                    input: 'print(6 * 7)',
                    outputs: [{ type: 'logs', logs: '42' }, { type: 'image', image: { file_id: imageId } }] } }),
                render.textPart({ value: 'Download sandbox:/mnt/data/table.csv now.', annotations: [{
                    type: 'file_path', text: 'sandbox:/mnt/data/table.csv', start_index: 9, end_index: 36,
                    file_path: { file_id: dataId } }] }),
            );
        }""",
        [image.id, data.id],
    )
    call = page.locator(".tool-call")
    expect(call).to_contain_text("code_interpreter")
    expect(call.locator("pre").first).to_have_text("print(6 * 7)")
    expect(call.locator("pre.logs")).to_have_text("42")
    wait_for(lambda: call.locator("img").evaluate("img => img.complete && img.naturalWidth") == 30)
    link = page.locator("button.file-path")
    expect(link).to_have_text("Download table.csv")
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "table.csv"
    assert Path(download.value.path()).read_bytes() == b"a,b\n1,2\n"
    assert tab.problems() == []


# --- auth ------------------------------------------------------------------------------------------


def test_with_auth_on_the_page_asks_for_a_key_and_keeps_it_in_the_session_only(playwright, auth_server):
    created = httpx.post(
        f"{auth_server.url}/admin/keys", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, json={"name": "playground"}
    )
    key = created.json()["value"]
    sdk(auth_server.url).with_options(api_key=key).beta.assistants.create(model="m", name="Tenant's assistant")
    with open_tab(playwright, origin_of(auth_server)) as tab:
        page = tab.page
        page.goto("/playground/")
        field = page.get_by_role("textbox", name="API key")
        expect(field).to_be_focused()
        field.fill("sk-not-a-key")
        field.press("Enter")
        expect(page.get_by_role("alert")).to_contain_text("refused")
        page.get_by_role("textbox", name="API key").fill(key)
        page.get_by_role("button", name="Use this key").click()
        expect(page.locator("#assistant-list")).to_contain_text("Tenant's assistant")
        stored = page.evaluate("[sessionStorage.getItem('assistgraph.playground.apiKey'), JSON.stringify(localStorage)]")
        assert stored[0] == key and key not in stored[1]
        page.reload()  # same tab, same session: still signed in
        expect(page.locator("#assistant-list")).to_contain_text("Tenant's assistant")
        page.get_by_role("button", name="Forget API key").click()
        expect(page.get_by_role("textbox", name="API key")).to_be_visible()
        assert page.evaluate("sessionStorage.length") == 0
        # The one expected console line: the browser's own report of the refused key's 401.
        assert tab.problems(allow=(r"status of 401",)) == []
