"""Benchmark: how `assistgraph serve` rides out a database outage of minutes, and how soon after the
database's return it answers again.

    .venv/bin/python bench/outage.py --out bench/results/outage.json   # about 5 minutes

A server on a database it reaches through a proxy that can cut it (tests/db_proxy.py: every connection
closed at once, new ones refused, as a restart, a failover or a network cut does). The database is the
embedded Postgres of a second `serve` started by the harness with its executor off, which only holds the
cluster: the server measured has a database of its own on it and is the only one working on it.

Before the cut, one run is held in flight at the scripted model's gate, and `--clients` SDK clients
(no retries, `--client-timeout` each) loop: retrieve an assistant, create a short run
(`create_and_run`), pause `--pause` seconds. Then the proxy cuts the database for `--outage-seconds`
(default 180, the figure of the README), the held run's model call is let go meanwhile, and the
database comes back. Measured:

- from the database's return, the seconds to the first successful request, and to each client's
  requests succeeding again (the end of its first success after its last failure; median and max over
  the clients);
- the statuses answered while the database was away (503s only: never a 500, nor a client timeout;
  a request in flight at the cut or the return may also have been answered);
- the held run's final status, and every run the clients had been answered for: how each ended;
- from the measured server's log, over the whole scenario: tracebacks, ERROR and WARNING lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import openai
import psycopg

from bench._harness import (
    assistgraph_env,
    environment,
    free_port,
    print_table,
    release_gate,
    script_model,
    sdk_kwargs,
    stack,
    start_child,
    stop_child,
    verdict,
    wait_for_gate,
    wait_http_ok,
    write_json,
)
from tests.db_proxy import DatabaseProxy

HELD_MODEL = "bench-outage-held"
CLIENT_MODEL = "bench-outage-clients"  # nothing scripted: every call answered at once
GATE = "bench-outage"
DATABASE = "outage"
RECOVERY_TARGET_S = 5.0  # the figure
TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete", "requires_action"}


@dataclass
class Request:
    kind: str
    start: float
    end: float
    outcome: str  # "ok", an HTTP status, "timeout" or "connection error"


@dataclass
class Client:
    requests: list[Request] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)  # (thread id, run id) answered 200


def _call(client: Client, kind: str, fn):
    start = time.monotonic()
    try:
        result, outcome = fn(), "ok"
    except openai.APITimeoutError:
        result, outcome = None, "timeout"
    except openai.APIStatusError as exc:
        result, outcome = None, str(exc.status_code)
    except openai.APIConnectionError:
        result, outcome = None, "connection error"
    client.requests.append(Request(kind, start, time.monotonic(), outcome))
    return result


def client_loop(url: str, assistant_id: str, timeout: float, pause: float, stop: threading.Event, into: Client) -> None:
    sdk = openai.OpenAI(**{**sdk_kwargs(url), "timeout": timeout})
    while not stop.is_set():
        _call(into, "retrieve", lambda: sdk.beta.assistants.retrieve(assistant_id))
        run = _call(into, "create_and_run", lambda: sdk.beta.threads.create_and_run(
            assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": "still there?"}]}))
        if run is not None:
            into.runs.append((run.thread_id, run.id))
        stop.wait(pause)


def recovered_after(requests: list[Request], back: float) -> float | None:
    """Seconds from `back` to the end of this client's first success after its last failure."""
    ordered = sorted(requests, key=lambda r: r.start)
    failures = [i for i, r in enumerate(ordered) if r.outcome != "ok"]
    if not failures:
        return None  # never failed: the outage went unseen (too short, or no traffic)
    later = [r for r in ordered[failures[-1] + 1 :] if r.outcome == "ok"]
    return max(0.0, later[0].end - back) if later else None


def all_recovered(clients: list[Client], back: float) -> bool:
    return all(
        any(r.start >= back for r in c.requests) and recovered_after(list(c.requests), back) is not None
        for c in clients
    )


def final_statuses(sdk: openai.OpenAI, runs: list[tuple[str, str]], timeout: float) -> Counter:
    deadline, statuses = time.monotonic() + timeout, Counter()
    for thread_id, run_id in runs:
        status = "unknown"
        while True:
            try:
                status = sdk.beta.threads.runs.retrieve(run_id, thread_id=thread_id).status
            except openai.APIError as exc:
                status = f"error {getattr(exc, 'status_code', type(exc).__name__)}"
            if status in TERMINAL or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        statuses[status] += 1
    return statuses


def log_counts(text: str) -> dict:
    lines = text.splitlines()
    problems = [line for line in lines if any(w in line for w in ("Traceback", "ERROR", "WARNING", "CRITICAL"))]
    return {
        "tracebacks": sum("Traceback" in line for line in lines),
        "error_lines": sum(("ERROR" in line or "CRITICAL" in line) for line in lines),
        "warning_lines": sum("WARNING" in line for line in lines),
        "lines": problems[:40],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outage-seconds", type=float, default=180.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--pause", type=float, default=0.1, help="seconds between a client's iterations")
    ap.add_argument("--client-timeout", type=float, default=30.0, help="an SDK request's timeout")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds of traffic before the cut")
    ap.add_argument("--after", type=float, default=10.0,
                    help="seconds of traffic after every client is answered again")
    ap.add_argument("--recovery-timeout", type=float, default=120.0,
                    help="stop waiting for the clients to be answered again after this long")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep-logs", type=Path, default=None)
    args = ap.parse_args(argv)

    results: dict = {"environment": environment(), "config": {k: v for k, v in vars(args).items() if k != "out"}}
    # The harness's server only holds the embedded cluster: with its executor off it takes no run of
    # the measured server's (which has a database of its own anyway).
    with stack(server_env={"ASSISTGRAPH_EXECUTOR": "false"}, keep_logs=args.keep_logs) as s:
        pgdata = s.workdir / "data" / "pgdata"
        with psycopg.connect(f"postgresql://postgres:@/postgres?host={pgdata}", autocommit=True) as db:
            db.execute(f"CREATE DATABASE {DATABASE}")
        proxy = DatabaseProxy(next(pgdata.glob(".s.PGSQL.*")))
        port = free_port()
        log_path = s.workdir / "outage-server.log"
        server = start_child(
            "assistgraph serve (behind the proxy)",
            ["-m", "api.cli", "serve", "--port", str(port)],
            assistgraph_env(s.model_url, s.workdir / "outage-data", ASSISTGRAPH_DATABASE_URL=proxy.url(DATABASE)),
            log_path,
        )
        url = f"http://127.0.0.1:{port}/v1"
        try:
            wait_http_ok(f"{url}/assistants", server, timeout=180)
            results["results"] = scenario(s.model_url, url, proxy, args)
        finally:
            proxy.up()
            stop_child(server)
            proxy.close()
            log_text = log_path.read_text(errors="replace")
            if args.keep_logs is not None:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                (args.keep_logs / "outage-server.log").write_text(log_text)
        results["results"]["server_log"] = log_counts(log_text)

    report(results["results"], args)
    write_json(args.out, results)
    r = results["results"]
    ok = (
        r["recovery"]["all_clients_s_max"] is not None
        and r["recovery"]["all_clients_s_max"] <= RECOVERY_TARGET_S
        and r["server_log"]["tracebacks"] == 0
        and set(r["during_outage"]["by_outcome"]) <= {"503"}
        and set(r["at_the_cut"]["by_outcome"]) <= {"ok", "503"}
        and set(r["at_the_return"]["by_outcome"]) <= {"ok", "503"}
        and r["held_run"]["status"] == "completed"
    )
    return 0 if ok else 1


def scenario(model_url: str, url: str, proxy: DatabaseProxy, args) -> dict:
    sdk = openai.OpenAI(**sdk_kwargs(url))
    # The answer in flight when the database goes away is asked again by the execution that continues the run.
    answer = {"content": "Through the outage."}
    script_model(model_url, HELD_MODEL, [{**answer, "gate": GATE}, answer])
    held_assistant = sdk.beta.assistants.create(model=HELD_MODEL)
    held = sdk.beta.threads.create_and_run(
        assistant_id=held_assistant.id, thread={"messages": [{"role": "user", "content": "still there?"}]})
    wait_for_gate(model_url, GATE)
    assistant = sdk.beta.assistants.create(model=CLIENT_MODEL)

    stop = threading.Event()
    clients = [Client() for _ in range(args.clients)]
    threads = [
        threading.Thread(target=client_loop, args=(url, assistant.id, args.client_timeout, args.pause, stop, c), daemon=True)
        for c in clients
    ]
    for t in threads:
        t.start()
    time.sleep(args.warmup)  # steady traffic before the cut: a duration, not a wait for a state

    print(f"# cutting the database for {args.outage_seconds:g} s", flush=True)
    proxy.down()
    down = time.monotonic()
    release_gate(model_url, GATE)  # the held run's answer arrives while the database is away
    while (left := down + args.outage_seconds - time.monotonic()) > 0:
        time.sleep(min(left, 30))
        if left > 30:
            print(f"# {time.monotonic() - down:.0f} s into the outage", flush=True)
    proxy.up()
    back = time.monotonic()
    print("# the database is back", flush=True)

    deadline = back + args.recovery_timeout
    while time.monotonic() < deadline and not all_recovered(clients, back):
        time.sleep(0.1)
    recovered_wait = time.monotonic() - back
    time.sleep(args.after)
    stop.set()
    for t in threads:
        t.join(args.client_timeout + 10)

    held_done = final_statuses(sdk, [(held.thread_id, held.id)], timeout=120)
    held_status = next(iter(held_done))
    held_text = None
    if held_status == "completed":
        messages = sdk.beta.threads.messages.list(thread_id=held.thread_id, run_id=held.id)
        held_text = messages.data[0].content[0].text.value

    requests = [r for c in clients for r in c.requests]
    before = [r for r in requests if r.end < down]
    # Answered or not, a request in flight at the cut may have had its answer before it.
    at_cut = [r for r in requests if r.start < down <= r.end]
    during = [r for r in requests if down <= r.start and r.end < back]
    # Made in the outage, answered after it (a connection came back while the request waited for one).
    at_return = [r for r in requests if down <= r.start < back <= r.end]
    after = [r for r in requests if r.start >= back]
    successes = sorted(r.end - back for r in requests if r.outcome == "ok" and r.end >= back)
    per_client = [recovered_after(c.requests, back) for c in clients]
    recovered = [v for v in per_client if v is not None]
    every = None if len(recovered) < len(per_client) else recovered
    client_runs = final_statuses(sdk, [run for c in clients for run in c.runs], timeout=120)

    def outcomes(rs: list[Request]) -> dict:
        return dict(Counter(r.outcome for r in rs).most_common())

    return {
        "outage_s": round(back - down, 2),
        "recovery": {
            "first_success_s": round(successes[0], 3) if successes else None,
            "all_clients_s_median": round(statistics.median(every), 3) if every else None,
            "all_clients_s_max": round(max(every), 3) if every else None,
            "per_client_s": [None if v is None else round(v, 3) for v in per_client],
            "waited_s": round(recovered_wait, 2),
            "target_s": RECOVERY_TARGET_S,
        },
        "before_outage": {"requests": len(before), "by_outcome": outcomes(before)},
        "at_the_cut": {"requests": len(at_cut), "by_outcome": outcomes(at_cut)},
        "during_outage": {
            "requests": len(during),
            "by_outcome": outcomes(during),
            "slowest_s": round(max((r.end - r.start for r in at_cut + during + at_return), default=0.0), 3),
        },
        "at_the_return": {"requests": len(at_return), "by_outcome": outcomes(at_return)},
        "after_return": {"requests": len(after), "by_outcome": outcomes(after)},
        "held_run": {"status": held_status, "answer": held_text},
        "client_runs": {"answered": sum(client_runs.values()), "final_status": dict(client_runs.most_common())},
    }


def report(r: dict, args) -> None:
    rec, log = r["recovery"], r["server_log"]
    print_table(
        f"Database outage of {r['outage_s']:g} s, {args.clients} clients",
        [
            ("first successful request after the return (s)", rec["first_success_s"], "-"),
            ("every client answered again, median (s)", rec["all_clients_s_median"],
             verdict(rec["all_clients_s_median"], RECOVERY_TARGET_S, at_most=True)),
            ("every client answered again, slowest (s)", rec["all_clients_s_max"],
             verdict(rec["all_clients_s_max"], RECOVERY_TARGET_S, at_most=True)),
            ("responses to requests made during the outage", str(r["during_outage"]["by_outcome"]),
             "PASS" if set(r["during_outage"]["by_outcome"]) <= {"503"} else "FAIL"),
            ("responses to requests in flight at the cut", str(r["at_the_cut"]["by_outcome"]),
             "PASS" if set(r["at_the_cut"]["by_outcome"]) <= {"ok", "503"} else "FAIL"),
            ("responses to requests in flight at the return", str(r["at_the_return"]["by_outcome"]),
             "PASS" if set(r["at_the_return"]["by_outcome"]) <= {"ok", "503"} else "FAIL"),
            ("slowest response in the outage (s)", r["during_outage"]["slowest_s"], "-"),
            ("held run", r["held_run"]["status"], "PASS" if r["held_run"]["status"] == "completed" else "FAIL"),
            ("client runs answered 200: final status", str(r["client_runs"]["final_status"]), "-"),
            ("tracebacks in the server log", log["tracebacks"], "PASS" if log["tracebacks"] == 0 else "FAIL"),
            ("ERROR / WARNING lines", f"{log['error_lines']} / {log['warning_lines']}", "-"),
        ],
        ("measure", "result", "verdict"),
    )
    for line in log["lines"]:
        print(f"  log: {line}")


if __name__ == "__main__":
    sys.exit(main())
