"""Operating the server: quiet logs (nothing at idle, one JSON line per run transition, no traceback
for a cancel), `/healthz`, `/readyz`, Prometheus `/metrics`, OpenTelemetry traces exported over
OTLP to a local collector, LangSmith tracing to a local stand-in, and the request read timeout."""

from __future__ import annotations

import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse

from tests.conftest import _extra_server, _own_database, raw_post, sdk, stop_process, wait_for


class _Recorder(BaseHTTPRequestHandler):
    """Records what it is sent; answers OTLP exports (protobuf) and LangSmith calls (JSON)."""

    spans: list[dict] = []
    langsmith: list[tuple[str, str, bytes]] = []

    def _body(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        return gzip.decompress(body) if self.headers.get("content-encoding") == "gzip" else body

    def do_POST(self):  # noqa: N802
        body = self._body()
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        attributes = {a.key: a.value.string_value or a.value.int_value for a in span.attributes}
                        self.spans.append(
                            {
                                "name": span.name,
                                "trace": span.trace_id.hex(),
                                "id": span.span_id.hex(),
                                "parent": span.parent_span_id.hex(),
                                "attributes": attributes,
                            }
                        )
            self._answer(ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")
            return
        self.langsmith.append(("POST", self.path, body))
        self._answer(b"{}", "application/json")

    def do_GET(self):  # noqa: N802
        self.langsmith.append(("GET", self.path, b""))
        self._answer(b"{}", "application/json")

    def _answer(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def ops(scripted, workdir, database_url):
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_port}"
    url = _own_database(database_url, "ops")
    srv = _extra_server(
        scripted,
        workdir,
        "ops",
        url,
        ASSISTGRAPH_LOG_LEVEL="info",
        ASSISTGRAPH_LOG_FORMAT="json",
        ASSISTGRAPH_OTLP_ENDPOINT=endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",
        LANGSMITH_TRACING="true",
        LANGSMITH_ENDPOINT=endpoint,
        LANGSMITH_API_KEY="ls-test-key",
        LANGSMITH_PROJECT="assistgraph-tests",
        ASSISTGRAPH_REQUEST_READ_TIMEOUT="1",
        ASSISTGRAPH_TOOL_PLUGINS="tests.local_tools:nap",
    )
    yield srv, url
    stop_process(srv.proc)
    collector.shutdown()


def _root(srv) -> str:
    return srv.url.removesuffix("/v1")


def _lines(srv) -> list[dict]:
    return [json.loads(line) for line in srv.log().splitlines() if line.strip()]


# Every periodic job of an idle server: per second (run expiry), every 5 s (recovery sweeps), per
# minute (event pruning, vector store expiry).
PERIODIC = ("expiry", "run_recovery", "ingestion_recovery", "prune", "vector_store_expiry")
RAN_SINCE = """
SELECT count(DISTINCT d.periodic_id) FROM procrastinate_periodic_defers d
WHERE d.periodic_id = ANY(%s) AND d.defer_timestamp > %s
  AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.id = d.job_id AND j.status IN ('todo', 'doing'))
"""


def _periodic_jobs_ran_since(url: str, since: int, jobs: tuple[str, ...] = PERIODIC) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(RAN_SINCE, (list(jobs), since)).fetchone()[0] == len(jobs)


def test_an_idle_server_writes_no_log_line(ops):
    srv, url = ops
    # The start-up and the readiness probe's request are logged; once an expiry tick has run since,
    # the server is idle.
    started = int(time.time())
    wait_for(lambda: _periodic_jobs_ran_since(url, started, ("expiry",)), timeout=30, interval=0.2)
    before = srv.log()
    since = int(time.time())
    # Each periodic job deferred after `before` and done (a minute's tick at most; the jobs are
    # deleted once they succeeded), with the heartbeats in between.
    wait_for(lambda: _periodic_jobs_ran_since(url, since), timeout=75, interval=0.5)
    assert srv.log() == before, srv.log()[len(before) :]
    assert all(isinstance(line, dict) and {"time", "level", "logger", "message"} <= set(line) for line in _lines(srv))


def test_health_and_readiness(ops):
    srv, url = ops
    assert httpx.get(_root(srv) + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(_root(srv) + "/readyz")
    assert ready.status_code == 200
    body = ready.json()
    sandbox = body.pop("code_interpreter")  # what bounds a session here, and the figures in force
    assert sandbox["limits"] in ("cgroup v2", "cgroup v1", "rlimits")
    assert set(sandbox) == {"limits", "memory_mb", "max_processes", "cpu_quota", "cpus", "data_mb"}
    assert sandbox["limits"] != "rlimits" or sandbox["cpu_quota"] == 0  # a quota needs a cgroup
    assert body == {"status": "ready", "checks": {"database": "ok", "migrations": "ok", "executor": "ok"}}
    # A database whose schema is behind this code is not ready (as after a failed migration).
    with psycopg.connect(url, autocommit=True) as conn:
        version = conn.execute("SELECT max(v) FROM assistgraph_migrations").fetchone()[0]
        conn.execute("DELETE FROM assistgraph_migrations WHERE v = %s", (version,))
        try:
            not_ready = httpx.get(_root(srv) + "/readyz")
        finally:
            conn.execute("INSERT INTO assistgraph_migrations (v) VALUES (%s)", (version,))
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["migrations"] == f"pending: {version}"
    assert httpx.get(_root(srv) + "/readyz").status_code == 200


def _metric(text: str, name: str, labels: str = "") -> float:
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    values = [float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)]
    assert values, f"{prefix!r} not in metrics"
    return values[0]


def test_runs_are_logged_measured_and_traced(ops, scripted, model_name):
    srv, _ = ops
    client = sdk(srv.url)
    scripted.script(
        model_name,
        [{"tool_calls": [{"name": "nap", "arguments": {"seconds": 0.05}}]}, {"content": "rested", "chunk_delay": 0.2}],
    )
    assistant = client.beta.assistants.create(model=model_name, tools=[{"type": "nap"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "take a nap"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        events = iter(stream)
        next(events)
        open_streams = _metric(httpx.get(_root(srv) + "/metrics").text, "assistgraph_active_streams")
        for _ in events:
            pass
        run = stream.get_final_run()
    assert run.status == "completed" and open_streams == 1

    # A cancel: the expected end of a run's job, logged as transitions, without a traceback.
    scripted.script(model_name, [{"content": "too slow", "delay": 10}])
    slow = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    wait_for(lambda: client.beta.threads.runs.retrieve(slow.id, thread_id=thread.id).status == "in_progress")
    client.beta.threads.runs.cancel(slow.id, thread_id=thread.id)
    cancelled = wait_for(lambda: (r := client.beta.threads.runs.retrieve(slow.id, thread_id=thread.id)).status == "cancelled" and r)
    assert cancelled.status == "cancelled"

    # A client that walks away from a stream: the run goes on, and nothing is logged as an error.
    scripted.script(model_name, [{"content": "a long answer " * 10, "chunk_delay": 0.05}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        left = next(iter(stream)).data
    wait_for(lambda: client.beta.threads.runs.retrieve(left.id, thread_id=thread.id).status == "completed")

    def transitions(run_id):
        return [
            (line["status"], line["tenant"])
            for line in _lines(srv)
            if line.get("logger") == "assistgraph.runs" and line.get("run_id") == run_id
        ]

    assert transitions(run.id) == [(s, "default") for s in ("queued", "in_progress", "completed")]
    wait_for(lambda: transitions(slow.id)[-1:] == [("cancelled", "default")])
    assert transitions(slow.id) == [(s, "default") for s in ("queued", "in_progress", "cancelling", "cancelled")]
    assert "Traceback" not in srv.log() and "CancelledError" not in srv.log()

    text = httpx.get(_root(srv) + "/metrics").text
    assert _metric(text, "assistgraph_run_transitions_total", 'status="completed"') >= 1
    assert _metric(text, "assistgraph_run_transitions_total", 'status="cancelled"') >= 1
    assert _metric(text, "assistgraph_run_duration_seconds_count", 'status="completed"') >= 1
    assert _metric(text, "assistgraph_run_execution_seconds_count", 'outcome="completed"') >= 1
    assert _metric(text, "assistgraph_model_call_seconds_count", 'outcome="ok"') >= 2
    assert _metric(text, "assistgraph_model_tokens_total", 'direction="input"') > 0
    assert _metric(text, "assistgraph_model_tokens_total", 'direction="output"') > 0
    assert _metric(text, "assistgraph_tool_call_seconds_count", 'outcome="ok"') >= 1
    assert _metric(text, "assistgraph_active_streams") == 0
    assert _metric(text, "assistgraph_runs", 'status="in_progress"') == 0
    assert _metric(text, "assistgraph_queue_depth", 'queue="runs"') >= 0  # periodic jobs come and go
    assert _metric(text, "assistgraph_queue_depth", 'queue="ingestion"') == 0
    assert _metric(text, "assistgraph_queue_oldest_age_seconds", 'queue="runs"') < 60
    assert _metric(text, "assistgraph_executors") >= 1
    assert _metric(text, "assistgraph_ingestion_backlog", 'state="todo"') == 0

    # Traces: the request, the run's execution, its graph nodes, the model and tool calls, linked.
    def run_spans():
        roots = [s for s in _Recorder.spans if s["name"] == "assistgraph.run" and s["attributes"].get("assistgraph.run_id") == run.id]
        return roots and [s for s in _Recorder.spans if s["trace"] == roots[0]["trace"]]

    spans = wait_for(run_spans, timeout=20)
    by_id = {s["id"]: s for s in spans}
    names = [s["name"] for s in spans]
    assert {"graph.node model", "graph.node server_tools", "model.call", "tool.call nap"} <= set(names), names
    assert names.count("model.call") == 2
    root = next(s for s in spans if s["name"] == "assistgraph.run")
    assert root["attributes"]["assistgraph.tenant"] == "default"
    for span in spans:
        if span["name"] == "model.call":
            assert by_id[span["parent"]]["name"] == "graph.node model"
        if span["name"] == "tool.call nap":
            assert by_id[span["parent"]]["name"] == "graph.node server_tools"
        if span["name"].startswith("graph.node"):
            assert span["parent"] == root["id"]
    http_spans = wait_for(lambda: [s for s in _Recorder.spans if s["name"].startswith("POST /v1/threads/{thread_id}/runs")])
    assert http_spans

    # LangSmith got the graph's run, tagged with the API's run id.
    wait_for(lambda: any(run.id.encode() in body for _, _, body in _Recorder.langsmith), timeout=20)


def test_a_stalled_request_body_times_out(ops):
    srv, _ = ops
    # The body stops short of its length: the server closes the connection at its 1 s read timeout.
    reply = raw_post(srv.url, "/assistants", "Content-Type: application/json\r\nContent-Length: 100\r\n", b'{"model": ')
    assert reply.startswith("HTTP/1.1 408"), reply
    assert '"invalid_request_error"' in reply
