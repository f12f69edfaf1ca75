"""An outage is said once: whatever else meets it, and whatever fails in the moment after the database's
return (a checkout that waited for a pool still reconnecting, a queue worker being restarted), adds no
line; a database that goes away again later is said again."""

from __future__ import annotations

import logging

import psycopg
from psycopg_pool import PoolTimeout

from api.storage.database import OUTAGE_CHECKOUT_SECONDS, DatabaseOutage


def _outage_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "the database is unavailable" in r.getMessage()]


def test_an_outage_is_said_once_and_its_aftermath_adds_nothing(caplog):
    caplog.set_level(logging.WARNING, logger="api.storage.database")
    outage = DatabaseOutage()
    outage.seen(psycopg.OperationalError("server closed the connection unexpectedly"))
    outage.seen(PoolTimeout("couldn't get a connection after 2.00 sec"))
    assert outage.since is not None
    assert len(_outage_lines(caplog)) == 1

    outage.over()
    assert outage.since is None
    outage.seen(PoolTimeout("couldn't get a connection after 2.00 sec"))  # a checkout begun in the outage
    outage.seen(psycopg.OperationalError("Database error."))  # a queue worker restarted just before the return
    assert outage.since is None
    assert len(_outage_lines(caplog)) == 1

    outage._ended -= OUTAGE_CHECKOUT_SECONDS + 1  # past the aftermath: the database went away again
    outage.seen(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert outage.since is not None
    assert len(_outage_lines(caplog)) == 2
