"""OpenTelemetry traces, exported over OTLP/HTTP when `ASSISTGRAPH_OTLP_ENDPOINT` (or OpenTelemetry's
own `OTEL_EXPORTER_OTLP_ENDPOINT`) is set, and LangSmith tracing when LangChain's own variables
(`LANGSMITH_TRACING`, `LANGSMITH_API_KEY`, ...) say so — both read through the settings.

Off (the default), nothing is installed: no request middleware, no tracer, no exporter thread; the
run callbacks (`api.observability.callbacks`) then only record metrics.

Spans: one per HTTP request (opentelemetry-instrumentation-fastapi), one per execution of a run
with a child per graph node, model call and tool call (the run callbacks).
"""

from __future__ import annotations

import logging
import threading

from api.settings import Settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
_provider = None  # opentelemetry.sdk.trace.TracerProvider once configured
_langsmith = None  # (langsmith.Client, project name) once configured
_configured = False

# Probes and scrapes are not requests worth a trace.
EXCLUDED_URLS = "healthz,readyz,metrics"


def traces_url(endpoint: str) -> str:
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def configure(settings: Settings) -> None:
    """Set up what the settings ask for, once per process."""
    global _provider, _langsmith, _configured
    with _lock:
        if _configured:
            return
        _configured = True
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            headers = dict(pair.split("=", 1) for pair in settings.otlp_headers if "=" in pair)
            provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(settings.otlp_endpoint), headers=headers))
            )
            _provider = provider
        if settings.langsmith_tracing:
            from langsmith import Client

            client = Client(
                api_url=settings.langsmith_endpoint,
                api_key=settings.langsmith_api_key.get_secret_value() if settings.langsmith_api_key else None,
            )
            _langsmith = (client, settings.langsmith_project)


def tracer():
    """The tracer of run spans, or None when tracing is off."""
    return _provider.get_tracer("assistgraph") if _provider is not None else None


def langsmith_tracer(run_id: str, tenant: str):
    """A LangChain tracer sending one run's graph to LangSmith, or None when that is off."""
    if _langsmith is None:
        return None
    from langchain_core.tracers.langchain import LangChainTracer

    client, project = _langsmith
    return LangChainTracer(
        project_name=project, client=client, tags=["assistgraph"], metadata={"run_id": run_id, "tenant": tenant}
    )


def instrument_app(app) -> None:
    """A span per HTTP request, when tracing is on."""
    if _provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=_provider, excluded_urls=EXCLUDED_URLS)


def shutdown() -> None:
    """Send what is still buffered (at process exit)."""
    if _provider is not None:
        _provider.shutdown()
    if _langsmith is not None:
        try:
            _langsmith[0].flush()
        except Exception as exc:  # the process is stopping: say so, do not fail
            log.warning("could not flush LangSmith traces: %s", exc)
