"""Fixtures: a scripted model server, real `assistgraph serve` processes on ephemeral ports backed by
embedded Postgres, and official `openai` SDK clients in strict mode."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from tests.fake_search import start_fake_search
from tests.scripted_model import ScriptedModel, start_in_thread

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str  # base URL including /v1
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_process(args: list[str], env: dict, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text(errors='replace')}")
        try:
            # 401 is "up" too: a server with auth on refuses the anonymous probe.
            if httpx.get(f"{url}/assistants", timeout=2).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready:\n{log_path.read_text(errors='replace')}")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def server_env(model_url: str, data_dir: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSISTGRAPH_", "OPENAI_", "DATABASE_URL"))}
    env.update(
        ASSISTGRAPH_DATA_DIR=str(data_dir),
        OPENAI_BASE_URL=model_url,
        OPENAI_API_KEY="sk-test-model-key",
        ASSISTGRAPH_MODEL_MAX_RETRIES="0",
        ASSISTGRAPH_LOG_LEVEL="warning",
        ASSISTGRAPH_STREAM_KEEPALIVE="1",
        # Actions and MCP servers in tests are local services; every process sharing a database needs one secret key.
        ASSISTGRAPH_ACTIONS_ALLOWED_HOSTS="127.0.0.1",
        ASSISTGRAPH_MCP_ALLOWED_HOSTS="127.0.0.1",
        ASSISTGRAPH_SECRET_KEY=SECRET_KEY,
        # The code tests' own code is quick; a runaway loop is interrupted after 3 s.
        ASSISTGRAPH_CODE_INTERPRETER_EXECUTION_TIMEOUT="3",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def scripted():
    model, url, stop = start_in_thread()
    model.base_url = url
    yield model
    stop()


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="assistgraph-tests-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def fake_search():
    search = start_fake_search()
    yield search
    search.stop()


@pytest.fixture(scope="session")
def plugin_dir(workdir: Path) -> Path:
    """The example plugin package, installed with pip (into a directory the main server imports from)."""
    target = workdir / "plugins"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(ROOT / "examples" / "assistgraph-calculator")],
        check=True, capture_output=True, timeout=300,
    )
    return target


@pytest.fixture(scope="session")
def tool_env(fake_search, plugin_dir: Path) -> dict[str, str]:
    """The tools of every process executing the main database's runs: the example plugin (installed
    with pip), a local tool by import path, web_search on a fake SearxNG."""
    return dict(
        PYTHONPATH=str(plugin_dir),
        ASSISTGRAPH_TOOL_PLUGINS="tests.local_tools:nap",
        ASSISTGRAPH_TOOL_TIMEOUT="5",
        ASSISTGRAPH_WEB_SEARCH_PROVIDER="searxng",
        ASSISTGRAPH_SEARXNG_URL=fake_search.url,
    )


@pytest.fixture(scope="session")
def server(scripted: ScriptedModel, workdir: Path, tool_env: dict[str, str]):
    """The main server: no DATABASE_URL, so it starts (and stops) its own embedded Postgres."""
    port = free_port()
    log_path = workdir / "server.log"
    env = server_env(scripted.base_url, workdir / "data", **tool_env)
    proc = start_process(["serve", "--port", str(port)], env, log_path)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_ready(url, proc, log_path)
        yield Server(url, proc, log_path)
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def database_url(server: Server, workdir: Path) -> str:
    """The main server's embedded cluster, for extra servers and workers sharing its database."""
    return f"postgresql://postgres:@/postgres?host={workdir / 'data' / 'pgdata'}"


@pytest.fixture(scope="session")
def debian_postgres():
    """A cluster of the system's own PostgreSQL server (Debian's package, with pgvector), started for the
    session: the external database of a deployment (see tests/debian_postgres.py)."""
    from tests.debian_postgres import require_server, start

    cluster, stop = start(require_server())
    yield cluster
    stop()


@pytest.fixture(scope="session")
def moto_s3(workdir: Path):
    """moto's S3 server with the file store's bucket (tests/shared_services.py): a boto3 client of it."""
    from tests.shared_services import start_moto

    proc, s3 = start_moto(workdir, "moto")
    yield s3
    stop_process(proc)


@pytest.fixture(scope="session")
def kernel_gateway(workdir: Path):
    """A Jupyter Kernel Gateway on loopback, as a deployment with several workers would share: the
    settings of a process using it."""
    from tests.shared_services import gateway_env, start_kernel_gateway

    home = workdir / "gateway"
    proc, url = start_kernel_gateway(home)
    yield gateway_env(url, home)
    proc.terminate()
    proc.wait(10)


def _extra_server(scripted, workdir: Path, name: str, database_url: str, args=("serve",), **env: str):
    port = free_port()
    log_path = workdir / f"{name}.log"
    proc = start_process(
        [*args, "--port", str(port)],
        server_env(scripted.base_url, workdir / name, DATABASE_URL=database_url, **env),
        log_path,
    )
    url = f"http://127.0.0.1:{port}/v1"
    wait_ready(url, proc, log_path)
    return Server(url, proc, log_path)


@pytest.fixture(scope="session")
def short_expiry_server(scripted, workdir: Path, database_url: str, tool_env: dict[str, str]):
    """Runs created here expire 3 s after creation (same database, data directory and tools as the
    main server, as every process serving one database must share uploaded files and installed tools)."""
    srv = _extra_server(
        scripted,
        workdir,
        "short-expiry",
        database_url,
        ASSISTGRAPH_RUN_EXPIRES_AFTER="3",
        ASSISTGRAPH_DATA_DIR=str(workdir / "data"),
        **tool_env,
    )
    yield srv
    stop_process(srv.proc)


def _own_database(database_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return database_url.replace("/postgres?", f"/{name}?")


ADMIN_KEY = "admin-key-for-tests-0123456789"
SECRET_KEY = "secret-key-for-tests-0123456789"


@pytest.fixture(scope="session")
def auth_server(scripted, workdir: Path, database_url: str):
    """A server with ASSISTGRAPH_AUTH on, in a database of its own (its executor needs its secret key)."""
    srv = _extra_server(
        scripted,
        workdir,
        "auth",
        _own_database(database_url, "auth"),
        ASSISTGRAPH_AUTH="true",
        ASSISTGRAPH_ADMIN_KEY=ADMIN_KEY,
        ASSISTGRAPH_SECRET_KEY=SECRET_KEY,
        ASSISTGRAPH_LOG_LEVEL="debug",
    )
    yield srv
    stop_process(srv.proc)


@pytest.fixture(scope="session")
def scale_out(scripted, workdir: Path, database_url: str):
    """An API process that executes nothing, and a separate `assistgraph worker` process.

    Uses a database of its own on the shared cluster, so only this worker can pick up its runs. The API
    loads a local tool the worker lacks (a deployment mistake the run must report)."""
    url = _own_database(database_url, "scale_out")
    api_srv = _extra_server(
        scripted, workdir, "api-only", url, ASSISTGRAPH_EXECUTOR="false", ASSISTGRAPH_TOOL_PLUGINS="tests.local_tools:nap"
    )
    worker_log = workdir / "worker.log"
    worker = start_process(["worker"], server_env(scripted.base_url, workdir / "worker", DATABASE_URL=url), worker_log)
    yield api_srv, worker, worker_log
    stop_process(worker)
    stop_process(api_srv.proc)


@pytest.fixture
def model_name() -> str:
    """A fresh model name: the scripted model keys its scripts by it, so tests never collide."""
    return f"m-{uuid.uuid4().hex[:12]}"


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="sk-client", _strict_response_validation=True, max_retries=0)


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return sdk(server.url)


@pytest.fixture
def aclient(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=server.url, api_key="sk-client", _strict_response_validation=True, max_retries=0
    )


def assert_error(
    resp: httpx.Response,
    status: int,
    *,
    param: str | None = None,
    message: str | None = None,
    type_: str = "invalid_request_error",
) -> dict:
    """The response is an OpenAI error body with that status, type and param (and message, if given)."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["type"] == type_, error
    assert error["param"] == param, error
    if message is not None:
        assert error["message"] == message, error
    return error


def wait_for(predicate, timeout: float = 20, interval: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def enabling_assistant(client: openai.OpenAI, model: str, kind: str, source_id: str):
    """An assistant enabling one tool source (`kind` "action" or "mcp"), checked to be stored as a
    `function` entry named by the source's id with a `builtin` marker."""
    assistant = client.beta.assistants.create(model=model, tools=[{"type": kind, "id": source_id}])
    (entry,) = assistant.tools
    assert entry.type == "function" and entry.function.name == source_id
    assert entry.model_extra == {"builtin": {"type": kind, "id": source_id}}
    return assistant


def offered_tools(scripted: ScriptedModel, model: str, request: int = 0) -> dict[str, dict]:
    """The functions the server offered the model in its `request`-th call, by name."""
    return {t["function"]["name"]: t["function"] for t in scripted.requests(model)[request]["body"]["tools"]}


def raw_post(url: str, path: str, head: str, body: bytes = b"") -> str:
    """POST `head` (headers, each ending in CRLF) and `body` to the server at `url` (its /v1 base)
    over a plain socket, and read the answer until the server closes the connection: for requests
    no HTTP client would send (a body announced but never sent)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"POST {parts.path}{path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply.decode()
