"""Prometheus metrics (prometheus-client), served at `GET /metrics`.

Two kinds:
- recorded in process: counters and histograms of what this process did (run transitions, model and
  tool calls, tokens, ingestion) and the streams it holds open. `serve --workers N` runs them in
  prometheus-client's multi-process mode (`PROMETHEUS_MULTIPROC_DIR`, set by the CLI), so the process
  that answers a scrape reports every process's counts;
- read from the database at scrape time: active runs by status, the job queue's depth and age, the
  ingestion backlog. They are true for the whole deployment whichever process answers, workers on
  other machines included.

No metric carries a tenant, run or model label: label values stay few whatever the traffic.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from api.settings import Settings

CONTENT_TYPE = CONTENT_TYPE_LATEST

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

RUN_TRANSITIONS = Counter(
    "assistgraph_run_transitions_total", "Runs that entered each status (queued counts creations and resumes).", ["status"]
)
RUN_DURATION = Histogram(
    "assistgraph_run_duration_seconds",
    "Time from a run's creation to its terminal status (created_at has second resolution).",
    ["status"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
RUN_EXECUTION = Histogram(
    "assistgraph_run_execution_seconds",
    "Time one execution of a run took, from in_progress to requires_action or a terminal status.",
    ["outcome"],
    buckets=_SECONDS,
)
MODEL_CALLS = Histogram(
    "assistgraph_model_call_seconds", "Latency of model calls, to the end of the streamed answer.", ["outcome"], buckets=_SECONDS
)
MODEL_TOKENS = Counter(
    "assistgraph_model_tokens_total", "Tokens sent to (input) and received from (output) the model.", ["direction"]
)
TOOL_CALLS = Histogram(
    "assistgraph_tool_call_seconds", "Latency of tools the server executes (file_search, plugins, actions).", ["outcome"], buckets=_SECONDS
)
ACTIVE_STREAMS = Gauge(
    "assistgraph_active_streams", "Server-sent event streams open right now.", multiprocess_mode="livesum"
)
INGESTED_FILES = Counter(
    "assistgraph_ingested_files_total", "Vector store files whose ingestion ended, by outcome.", ["outcome"]
)
INGESTION_SECONDS = Histogram(
    "assistgraph_ingestion_seconds", "Time to parse, chunk, embed and store one file.", ["outcome"], buckets=_SECONDS
)
INGESTION_LIMITS = Counter(
    "assistgraph_ingestion_limit_exceeded_total", "Files that failed because they crossed an ingestion limit.", ["limit"]
)
INGESTION_RUNNING = Gauge(
    "assistgraph_ingestion_running", "Files being ingested right now (one child process each).", multiprocess_mode="livesum"
)


def database_families(stats: dict) -> list[Metric]:
    """The metrics read from the database (see `api.storage.stats.collect`)."""
    runs = GaugeMetricFamily("assistgraph_runs", "Runs in each active status.", labels=["status"])
    for status, count in sorted(stats["runs"].items()):
        runs.add_metric([status], count)
    depth = GaugeMetricFamily("assistgraph_queue_depth", "Jobs waiting to start, per queue.", labels=["queue"])
    age = GaugeMetricFamily("assistgraph_queue_oldest_age_seconds", "Age of the oldest job waiting to start, per queue.", labels=["queue"])
    doing = GaugeMetricFamily("assistgraph_queue_running", "Jobs being executed, per queue.", labels=["queue"])
    for queue, row in sorted(stats["queues"].items()):
        depth.add_metric([queue], row["todo"])
        age.add_metric([queue], row["age"])
        doing.add_metric([queue], row["doing"])
    backlog = GaugeMetricFamily(
        "assistgraph_ingestion_backlog", "Vector store files waiting for (todo) or in (doing) ingestion.", labels=["state"]
    )
    for state in ("todo", "doing"):
        backlog.add_metric([state], stats["ingestion"].get(state, 0))
    workers = GaugeMetricFamily("assistgraph_executors", "Executor processes heart-beating to the job queue.")
    workers.add_metric([], stats["workers"])
    return [runs, depth, age, doing, backlog, workers]


class _Families:
    def __init__(self, families: Iterable[Metric]):
        self._families = list(families)

    def collect(self):
        return self._families


def render(settings: Settings, families: Iterable[Metric]) -> bytes:
    """The text exposition of every metric (blocking in multi-process mode: it reads the shared
    files; call it in a thread)."""
    if settings.prometheus_multiproc_dir is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(settings.prometheus_multiproc_dir))
    else:
        registry = REGISTRY
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(_Families(families))
    return generate_latest(registry) + generate_latest(scraped)


def process_exited(settings: Settings, pid: int) -> None:
    """Drop a stopped process's live gauges (open streams, running ingestions) from the shared files."""
    if settings.prometheus_multiproc_dir is not None:
        multiprocess.mark_process_dead(pid, str(settings.prometheus_multiproc_dir))
