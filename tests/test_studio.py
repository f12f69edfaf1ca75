"""LangGraph Studio support: `langgraph dev` serves the assistant graph from langgraph.json, offline,
and a run started the way Studio starts one (input + context) reaches the model the context names."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port

langgraph_sdk = pytest.importorskip("langgraph_sdk", reason="needs the test extra (langgraph-cli[inmem])")
pytest.importorskip("langgraph_api", reason="needs the test extra (langgraph-cli[inmem])")

# Variables that would point the dev server at someone's LangSmith, OpenAI account or deployment.
_INHERITED_PREFIXES = ("OPENAI_", "LANGSMITH_", "LANGCHAIN_", "LANGGRAPH_", "ASSISTGRAPH_", "DATABASE_URL")


def _langgraph_command() -> list[str]:
    # The console script installed next to this interpreter, so the test never picks up another
    # environment's `langgraph` from PATH.
    script = Path(sys.executable).with_name("langgraph")
    return [str(script)] if script.exists() else [sys.executable, "-m", "langgraph_cli"]


def _dev_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
    env.update(
        # Nothing at start-up may need the network: the CLI's usage analytics, the PyPI version
        # check, and LangSmith (tracing, Studio's organisation lookup) are all off.
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        # Unreachable on purpose: the run must reach the model through the base_url in its context,
        # as it does for a Studio user, not through the environment.
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        OPENAI_API_KEY="sk-unused",
        PYTHONUNBUFFERED="1",
    )
    return env


def _stop(proc: subprocess.Popen) -> None:
    # Signal the whole session: with reload on (a developer's default) uvicorn serves from a child
    # process, and the server may start workers of its own; the last SIGKILL catches any that
    # outlive the CLI.
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass


class DevServer:
    def __init__(self, url: str, proc: subprocess.Popen, log_path: Path):
        self.url, self.proc, self.log_path = url, proc, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory) -> Iterator[DevServer]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("studio") / "langgraph-dev.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            # --no-reload: other edits to the repo while the test runs must not restart the server.
            [*_langgraph_command(), "dev", "--port", str(port), "--no-browser", "--no-reload"],
            cwd=ROOT,
            env=_dev_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = DevServer(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        deadline = time.monotonic() + 45
        while True:
            if proc.poll() is not None:
                pytest.fail(f"langgraph dev exited with {proc.returncode}:\n{server.log()}")
            try:
                if httpx.get(f"{server.url}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"langgraph dev not ready in 45 s:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        _stop(proc)


@pytest.fixture
def studio(dev_server: DevServer):
    # api_key=None: never send a LangSmith key from the developer's environment to the local server.
    with langgraph_sdk.get_sync_client(url=dev_server.url, api_key=None, timeout=30) as client:
        yield client


def _assistant_id(studio) -> str:
    found = studio.assistants.search(graph_id="assistant")
    assert found, "no assistant registered for the `assistant` graph"
    return found[0]["assistant_id"]


def test_context_schema_is_served_with_descriptions(studio, dev_server: DevServer):
    schemas = studio.assistants.get_schemas(_assistant_id(studio))
    assert schemas["graph_id"] == "assistant"
    properties = schemas["context_schema"]["properties"]
    for name in ("model", "instructions", "builtin_tools", "base_url"):
        assert properties.get(name, {}).get("description"), (name, properties.get(name), dev_server.log())


def test_run_with_context_answers_from_the_model(studio, dev_server: DevServer, scripted):
    model = f"studio-{uuid.uuid4().hex[:12]}"
    scripted.script(model, [{"content": "Hello from the scripted model."}])
    thread = studio.threads.create()
    try:
        final = studio.runs.wait(
            thread["thread_id"],
            _assistant_id(studio),
            input={"history": [{"role": "user", "content": "Say hello."}]},
            context={"model": model, "base_url": scripted.base_url, "instructions": "Be brief."},
            raise_error=False,
        )
        assert isinstance(final, dict) and "__error__" not in final, (final, dev_server.log())
        answer = final["messages"][-1]
        assert answer["type"] == "ai", final
        assert answer["content"] == "Hello from the scripted model."
        assert final["usage"]["completion_tokens"] > 0

        [request] = scripted.requests(model)
        sent = request["body"]["messages"]
        assert sent[0] == {"role": "system", "content": "Be brief."}
        assert sent[-1] == {"role": "user", "content": "Say hello."}

        state = studio.threads.get_state(thread["thread_id"])
        assert state["next"] == []
        assert state["values"]["messages"][-1]["content"] == "Hello from the scripted model."
    finally:
        # The dev server persists threads in .langgraph_api/; leave a developer's Studio list as it was.
        studio.threads.delete(thread["thread_id"])


async def _checkpointed_values(database_url: str, run_id: str) -> dict:
    # What the README shows: the API checkpoints each run under thread_id = its run id.
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    from graph.graph import builder

    async with AsyncPostgresSaver.from_conn_string(database_url) as saver:
        graph = builder.compile(checkpointer=saver)
        snapshot = await graph.aget_state({"configurable": {"thread_id": run_id}})
    return snapshot.values


def test_api_run_state_can_be_copied_into_studio(studio, client, scripted, model_name, database_url):
    scripted.script(model_name, [{"content": "Stored in Postgres."}])
    assistant = client.beta.assistants.create(model=model_name, instructions="Be brief.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Remember this."}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "completed", run.last_error

    values = asyncio.run(_checkpointed_values(database_url, run.id))
    assert values["messages"][-1].content == "Stored in Postgres."

    copy = studio.threads.create(
        graph_id="assistant",
        metadata={"api_run_id": run.id},
        supersteps=[
            # Written as `client_tools`: a write as `model` would evaluate route_after_model, which
            # update_state calls without a Runtime (langchain-ai/langgraph#6340) and so fails.
            {"updates": [{"values": values, "as_node": "client_tools"}]},
            # ...then clear the `model` step that write scheduled: the copy is a finished run.
            {"updates": [{"values": None, "as_node": "__end__"}]},
        ],
    )
    try:
        state = studio.threads.get_state(copy["thread_id"])
        assert state["next"] == []
        assert state["values"]["messages"][-1]["content"] == "Stored in Postgres."
        assert state["values"]["history"][-1]["content"] == "Remember this."
        assert state["values"]["usage"] == values["usage"]
    finally:
        studio.threads.delete(copy["thread_id"])
