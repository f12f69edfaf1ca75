"""`assistgraph serve` (API + executor) and `assistgraph worker` (executor only)."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile

import uvicorn

from api.observability.logs import configure_logging
from api.settings import get_settings
from api.storage.database import embedded_postgres


def _exit_on_sigterm() -> None:
    # uvicorn re-raises the signal it shut down on; ending by an exception instead lets the
    # embedded Postgres context manager stop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def _serve(args: argparse.Namespace) -> None:
    from api.http.app import create_app

    settings = get_settings()
    workers = args.workers or settings.workers
    _exit_on_sigterm()
    with embedded_postgres(settings) as url:
        common = dict(
            host=args.host,
            port=args.port,
            log_level=settings.log_level,
            log_config=configure_logging(settings),
            timeout_graceful_shutdown=5,
        )
        if workers == 1:
            uvicorn.run(create_app(url, settings), **common)
            return
        # Worker processes import the app themselves; they find the database (embedded or not)
        # through the settings' DATABASE_URL, which this process owns for them.
        os.environ["ASSISTGRAPH_DATABASE_URL"] = url
        # Their metrics meet in a fresh directory (prometheus-client's multi-process mode), so a
        # scrape answered by any one of them counts every process's runs, calls and streams.
        metrics_dir = None
        if settings.prometheus_multiproc_dir is None:
            metrics_dir = tempfile.mkdtemp(prefix="assistgraph-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            uvicorn.run("api.http.app:app_from_settings", factory=True, workers=workers, **common)
        finally:
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)


async def _work(url: str) -> None:
    from api.observability import tracing
    from api.runs.runtime import runtime

    settings = get_settings()
    tracing.configure(settings)
    try:
        async with runtime(settings, url, with_executor=True) as (_, workers):
            worker = asyncio.create_task(workers.run())
            # SIGTERM (or Ctrl-C) stops the workers gracefully: runs get ASSISTGRAPH_SHUTDOWN_GRACE to
            # finish, then go back to the queue for another executor.
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, worker.cancel)
            try:
                await worker
            except asyncio.CancelledError:
                pass
    finally:
        tracing.shutdown()


def _worker(args: argparse.Namespace) -> None:
    settings = get_settings()
    _exit_on_sigterm()
    with embedded_postgres(settings) as url:
        asyncio.run(_work(url))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="assistgraph", description="Self-hosted OpenAI Assistants API.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="Start the API server (and, by default, the run executor).")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8086)
    serve.add_argument(
        "--workers", type=int, default=None, help="Server processes, each with API and executor (default: ASSISTGRAPH_WORKERS, 1)."
    )
    serve.set_defaults(func=_serve)
    worker = sub.add_parser("worker", help="Execute queued runs only (scale-out worker).")
    worker.set_defaults(func=_worker)
    args = parser.parse_args(argv)
    configure_logging(get_settings())
    args.func(args)


if __name__ == "__main__":
    main()
