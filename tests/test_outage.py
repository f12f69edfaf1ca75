"""A database that goes away for a while and comes back: the server answers 503s (which the SDKs
retry) while it is away, answers again within seconds of its return, finishes the run that was in
flight, and says so in a few log lines, with no traceback.

The outage is a proxy in front of the shared cluster (tests/db_proxy.py) that closes every connection
and refuses new ones, as a restart, a failover or a network cut does.
"""

from __future__ import annotations

import re
import time

import openai
import pytest

from tests.conftest import _extra_server, _own_database, sdk, stop_process, wait_for
from tests.db_proxy import DatabaseProxy

OUTAGE_SECONDS = 12.0  # several of the pools' backed-off reconnection attempts (each gives up after 2 s); bench/outage.py measures 3 minutes


@pytest.fixture
def proxied_server(scripted, workdir, database_url):
    _own_database(database_url, "outage")
    proxy = DatabaseProxy(workdir / "data" / "pgdata" / ".s.PGSQL.5432")
    srv = _extra_server(scripted, workdir, "outage", proxy.url("outage"))
    yield srv, proxy
    proxy.up()
    stop_process(srv.proc)
    proxy.close()


def test_a_database_outage_is_ridden_out_and_answered_again_at_once(proxied_server, scripted, model_name):
    srv, proxy = proxied_server
    client = sdk(srv.url)
    gate = f"{model_name}-outage"
    # The answer in flight when the database went away is asked again by the execution that continues the run.
    answer = {"content": "Through the outage."}
    scripted.script(model_name, [{**answer, "gate": gate}, answer])
    assistant = client.beta.assistants.create(model=model_name)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "still there?"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    scripted.wait_for_gate(gate)

    proxy.down()
    went_away = time.monotonic()
    scripted.release(gate)
    # Requests while it is away: a 503 each (what the SDKs retry), never a 500 or a hang.
    while time.monotonic() - went_away < OUTAGE_SECONDS:
        with pytest.raises(openai.InternalServerError) as away:
            client.beta.assistants.retrieve(assistant.id)
        assert away.value.status_code == 503, away.value
        time.sleep(2)  # the outage's length is the scenario, not a wait for a state
    proxy.up()

    # Answered again within seconds of its return (not after the pools' backed-off reconnection).
    wait_for(lambda: _answers(client, assistant.id), timeout=8, interval=0.1)
    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=200)
    assert done.status == "completed", done.last_error
    messages = client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id)
    assert messages.data[0].content[0].text.value == "Through the outage."

    log = srv.log()
    assert "Traceback" not in log, log
    warnings = [line for line in log.splitlines() if re.search(r"WARNING|ERROR", line)]
    # One line for the outage; the others are about the run it interrupted (lost, taken over).
    assert len([w for w in warnings if "the database is unavailable" in w]) == 1, "\n".join(warnings)
    assert all("the database" in w or "run_" in w for w in warnings), "\n".join(warnings)


def _answers(client, assistant_id: str) -> bool:
    try:
        client.beta.assistants.retrieve(assistant_id)
        return True
    except openai.InternalServerError:
        return False
