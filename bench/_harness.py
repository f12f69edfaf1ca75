"""Shared plumbing of the benchmark scripts: the scripted model and `assistgraph serve` as child
processes on free ports with a throw-away data dir, readiness waits, clean shutdown (even on
error), and small statistics / reporting helpers.

Not a test module: the scripts under bench/ import it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

# The Assistants API is deprecated in the SDK; the warnings would drown the tables.
warnings.filterwarnings("ignore", category=DeprecationWarning)


# --- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def start_child(name: str, args: list[str], env: dict, log_path: Path, *, cwd: Path = ROOT) -> Child:
    log = open(log_path, "wb")
    try:
        # Own session: a Ctrl-C in the terminal reaches only this script, which then stops the
        # children in order (the server first, so it can stop its embedded Postgres).
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    finally:
        log.close()
    return Child(name, proc, log_path)


def stop_child(child: Child, timeout: float = 30) -> None:
    proc = child.proc
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
            proc.wait(5)


def wait_http_ok(url: str, child: Child, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited early (rc={child.proc.returncode}):\n{child.log_tail()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} not ready after {timeout}s:\n{child.log_tail()}")


def _stop_orphan_postgres(pgdata: Path) -> None:
    """If the server died without stopping its embedded Postgres, stop that postmaster (by pid)."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGQUIT, 5), (signal.SIGKILL, 5)):  # fast, immediate, kill
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def _proc_cpu(pid: int, *, with_reaped_children: bool = False) -> float:
    f = _stat_fields(pid)
    if f is None:
        return 0.0
    ticks = int(f[11]) + int(f[12])  # utime, stime
    if with_reaped_children:
        ticks += int(f[13]) + int(f[14])  # cutime, cstime
    return ticks / _TICK


def _machine_cpu() -> float:
    """Busy CPU seconds of the whole machine (all processes, all cores)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def cores_busy(before: dict, after: dict, wall: float) -> dict:
    """Cores kept busy per component between two `Stack.cpu_seconds()` snapshots; "other" is the rest
    of the machine (other processes: a benchmark on a shared box is only as good as this is small)."""
    busy = {k: (after[k] - before[k]) / wall for k in after}
    machine = busy.pop("machine")
    busy["other processes"] = max(0.0, machine - sum(busy.values()))
    return {k: round(v, 3) for k, v in busy.items()}


def tree_pids(pid: int, *, skip: Collection[int] = ()) -> list[int]:
    """A process and its live descendants (the worker processes of `serve --workers N`), leaving out
    the subtrees of the pids in `skip`."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = _stat_fields(int(entry.name))
            if f is not None:
                children.setdefault(int(f[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current in skip:
            continue
        found.append(current)
        todo += children.get(current, [])
    return found


def tree_cpu(pid: int, *, skip: Collection[int] = ()) -> float:
    return sum(_proc_cpu(p) for p in tree_pids(pid, skip=skip))


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def tree_rss_bytes(pid: int, *, skip: Collection[int] = ()) -> int:
    """Resident memory of a process tree, summed (pages shared between the processes count once per
    process, so this overstates a forked tree a little)."""
    total = 0
    for p in tree_pids(pid, skip=skip):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            pass
    return total


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _postgres_cpu(pgdata: Path) -> float:
    """The postmaster (with its exited backends) plus its live backends."""
    try:
        postmaster = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = _proc_cpu(postmaster, with_reaped_children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = _stat_fields(int(entry.name))
            if f is not None and int(f[1]) == postmaster:
                total += _proc_cpu(int(entry.name))
    return total


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class Stack:
    """The running scripted model and assistgraph server."""

    model_url: str  # OpenAI base URL of the scripted model, with /v1
    server_url: str  # assistgraph base URL, with /v1
    workdir: Path
    model: Child
    server: Child
    notes: list[str] = field(default_factory=list)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user+sys) used so far by each component of the benchmark."""
        own = os.times()
        return {
            "server": tree_cpu(self.server.proc.pid, skip={postmaster_pid(self.workdir / "data" / "pgdata") or -1}),
            "postgres": _postgres_cpu(self.workdir / "data" / "pgdata"),
            "scripted model": _proc_cpu(self.model.proc.pid),
            "bench client": own.user + own.system,
            "machine": _machine_cpu(),
        }

    @contextlib.contextmanager
    def cpu_usage(self, into: dict) -> Iterator[None]:
        """Fill `into` with the cores each component kept busy (CPU seconds / wall seconds) meanwhile."""
        before, t0 = self.cpu_seconds(), time.perf_counter()
        try:
            yield
        finally:
            after, wall = self.cpu_seconds(), time.perf_counter() - t0
            into.update(cores_busy(before, after, wall))
            into["wall_s"] = round(wall, 3)

    def server_log_problems(self) -> list[str]:
        try:
            text = self.server.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if any(w in line for w in ("WARNING", "ERROR", "Traceback", "CRITICAL"))]


def assistgraph_env(model_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of an assistgraph process (`serve` or `worker`) of a benchmark: none of the
    caller's own settings, the scripted model, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSISTGRAPH_", "OPENAI_", "DATABASE_URL"))}
    env.update(
        ASSISTGRAPH_DATA_DIR=str(data_dir),
        OPENAI_BASE_URL=model_url,
        OPENAI_API_KEY="sk-bench-model-key",
        # The server's default: one retry, as deployed. Model servers on uvicorn (the scripted
        # one, vLLM) close a keep-alive connection after 5 s idle, the moment the client's pool
        # may reuse it; without a retry that race fails a run now and then under 1,000 streams.
        ASSISTGRAPH_MODEL_MAX_RETRIES="1",
        ASSISTGRAPH_LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def stack(
    *, server_env: dict[str, str] | None = None, keep_logs: Path | None = None, profile: Path | None = None
) -> Iterator[Stack]:
    """Start the scripted model and `assistgraph serve` (embedded Postgres in a fresh temp dir);
    always stop both and delete the dir on the way out. `profile`: run the server under cProfile
    and write its stats there when it stops (inflates the figures; for finding hot spots only)."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="assistgraph-bench-"))
    model = server = None
    try:
        model_port = free_port()
        model = start_child(
            "scripted model",
            ["-m", "tests.scripted_model", "--port", str(model_port)],
            dict(os.environ),
            workdir / "model.log",
        )
        model_url = f"http://127.0.0.1:{model_port}/v1"
        wait_http_ok(f"{model_url}/models", model, timeout=30)

        env = assistgraph_env(model_url, workdir / "data", **(server_env or {}))
        server_port = free_port()
        prefix = ["-m", "cProfile", "-o", str(profile.resolve())] if profile else []
        server = start_child(
            "assistgraph serve", [*prefix, "-m", "api.cli", "serve", "--port", str(server_port)], env,
            workdir / "server.log",
        )
        server_url = f"http://127.0.0.1:{server_port}/v1"
        started = time.monotonic()
        wait_http_ok(f"{server_url}/assistants", server, timeout=180)
        print(f"# server ready in {time.monotonic() - started:.1f}s at {server_url}; model at {model_url}", flush=True)
        yield Stack(model_url, server_url, workdir, model, server)
    except BaseException:
        for child in (server, model):
            if child is not None:
                tail = child.log_tail()
                if tail:
                    print(f"--- last lines of the {child.name} log ---\n{tail}", file=sys.stderr)
        raise
    finally:
        try:
            if server is not None:
                stop_child(server)
            _stop_orphan_postgres(workdir / "data" / "pgdata")
            if model is not None:
                stop_child(model, timeout=10)
        finally:
            if keep_logs is not None:
                keep_logs.mkdir(parents=True, exist_ok=True)
                for name in ("server.log", "model.log"):
                    with contextlib.suppress(OSError):
                        shutil.copy(workdir / name, keep_logs / name)
            shutil.rmtree(workdir, ignore_errors=True)


# --- scripted model control ---------------------------------------------------------------------


def script_model(model_url: str, model: str, turns: list[dict]) -> None:
    base = model_url.removesuffix("/v1")
    r = httpx.post(f"{base}/_script", json={"model": model, "turns": turns}, timeout=10)
    r.raise_for_status()


def wait_for_gate(model_url: str, gate: str, timeout: float = 60) -> None:
    """Return once a response of the scripted model is held at `gate` (a turn's "gate")."""
    base = model_url.removesuffix("/v1")
    r = httpx.get(f"{base}/_gate", params={"name": gate, "timeout": timeout}, timeout=timeout + 10)
    r.raise_for_status()
    if not r.json()["reached"]:
        raise TimeoutError(f"no response reached gate {gate!r} within {timeout} s")


def release_gate(model_url: str, gate: str) -> None:
    base = model_url.removesuffix("/v1")
    httpx.post(f"{base}/_release", params={"name": gate}, timeout=10).raise_for_status()


# --- clients ------------------------------------------------------------------------------------


class SSEDecoder:
    """Server-sent events from lines, fed one at a time, so sync and async readers share the parsing.
    `feed` returns (event, data) when a line completes an event; comments are skipped."""

    def __init__(self) -> None:
        self.event: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str | None, str] | None:
        if line == "":
            done = (self.event, "\n".join(self.data)) if self.event is not None or self.data else None
            self.event, self.data = None, []
            return done
        if line.startswith("event:"):
            self.event = line[6:].strip()
        elif line.startswith("data:"):
            self.data.append(line[5:].lstrip(" "))
        return None


def sdk_kwargs(url: str) -> dict:
    return dict(base_url=url, api_key="sk-bench-client", max_retries=0, timeout=120)


# --- statistics / reporting ---------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile, p in [0, 100]."""
    if not values:
        return math.nan
    data = sorted(values)
    k = (len(data) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def summary_ms(values_s: Sequence[float]) -> dict:
    """p50/p90/p99/mean/min/max in milliseconds of durations given in seconds."""
    ms = [v * 1000 for v in values_s]
    if not ms:
        return {"n": 0}
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 3),
        "p90": round(percentile(ms, 90), 3),
        "p99": round(percentile(ms, 99), 3),
        "mean": round(statistics.fmean(ms), 3),
        "min": round(min(ms), 3),
        "max": round(max(ms), 3),
    }


def print_table(title: str, rows: list[tuple], headers: tuple) -> None:
    cells = [[str(c) for c in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    line = "  ".join("-" * w for w in widths)
    print(line)
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print(line)
    print(line)


def _fmt(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if value is None:
        return "-"
    return str(value)


def verdict(value: float, target: float, *, at_most: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    ok = value <= target if at_most else value >= target
    return "PASS" if ok else "FAIL"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def environment() -> dict:
    """What the figures were measured on, including the exact code (the tree may be dirty)."""
    import hashlib

    import openai

    dirty = [line[3:] for line in _git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {
        "git_head": _git("rev-parse", "--short", "HEAD").strip(),
        "git_dirty_files": dirty,
        "git_diff_sha1": hashlib.sha1(_git("diff", "HEAD").encode()).hexdigest()[:12] if dirty else None,
        "cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "openai_sdk": openai.__version__,
        "loadavg_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def write_json(path: Path | None, results: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\n# results written to {path}")
