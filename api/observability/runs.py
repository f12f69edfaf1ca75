"""Run transitions as they are stored: one log line each (run id, tenant, status) and the run
metrics. Called where a run is inserted (`api.storage.store`) and where its status is conditionally
updated (`api.runs.sink`, the one place every status change goes through)."""

from __future__ import annotations

import logging
import time

from api.observability import metrics

log = logging.getLogger("assistgraph.runs")

# Executions started in this process: run id -> monotonic start. An execution ends in the process
# that started it (the executor finishes its own run, cancels and expiries included); entries that
# never end here are dropped once there are too many.
_started: dict[str, float] = {}
_MAX_STARTED = 10_000


def transition(run: dict, tenant: str, *, settled: bool = False, terminal: bool = False) -> None:
    """`settled`: the run's execution ends here (it is over or waits for the client); `terminal`:
    the run is over (the callers know the lifecycle, which sits above this module)."""
    status = run.get("status")
    run_id = run.get("id")
    error = run.get("last_error") or {}
    # A run that failed, or expired before its model's limits, says why.
    detail = f": {error.get('code')}: {error.get('message')}" if error else ""
    log.info(
        "run %s %s (tenant %s)%s",
        run_id,
        status,
        tenant,
        detail,
        extra={"run_id": run_id, "tenant": tenant, "status": status, "thread_id": run.get("thread_id")},
    )
    metrics.RUN_TRANSITIONS.labels(status).inc()
    if status == "in_progress":
        if len(_started) >= _MAX_STARTED:
            _started.pop(next(iter(_started)))
        _started[run_id] = time.monotonic()
    elif settled:
        started = _started.pop(run_id, None)
        if started is not None:
            metrics.RUN_EXECUTION.labels(status).observe(time.monotonic() - started)
    if terminal and isinstance(run.get("created_at"), (int, float)):
        metrics.RUN_DURATION.labels(status).observe(max(0.0, time.time() - run["created_at"]))
