"""Ingest one file (parse, chunk, embed) in a child process under resource limits.

Parsers are large C and Python libraries fed untrusted files: a zip bomb, a pathological CSV or a
huge text can take gigabytes or minutes. Each file is therefore ingested in a process of its own,
and the process holding the caller (an API server, a worker) only ever reads the result:

- memory: ``RLIMIT_AS`` (the child's address space, which includes ~0.5 GB of loaded libraries); an
  allocation past it raises ``MemoryError`` in the child;
- CPU time: ``RLIMIT_CPU``; the kernel ends the child with ``SIGXCPU``;
- wall time: the caller's :meth:`Child.wait` timeout, after which it kills the child;
- tokens and unpacked size of Office packages: checked by the parser itself (``LimitExceeded``).

Children are forked from a multiprocessing fork server that has imported the parsers and loaded
the default embedding model (``ingestion._warm``), so a child starts in milliseconds with them in
memory; the server starts on first use. A child dies with its fork server (``PR_SET_PDEATHSIG``) and
with the process that started it (it watches that one's pid): a killed worker leaves nothing
running, and the fork server ends once its last child has.

The child writes one JSON line per chunk to ``Task.rows_path`` (``[index, text, token_count,
metadata JSON, vector in pgvector's text form]``) and reports a small summary through a pipe;
:meth:`Child.outcome` turns what happened into that summary or an :class:`IngestionError`
(``LimitExceeded`` naming the limit when one was crossed).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import resource
import select
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from ingestion.errors import EmptyFile, IngestionError, InvalidFile, LimitExceeded, UnsupportedFile

_PRELOAD = ["ingestion._warm"]
_MEMORY_EXIT = 86  # the child ran out of memory and could not even report it
_ORPHANED_EXIT = 87  # the process that started the child is gone: nobody will read its result
_CPU_GRACE = 5  # seconds between SIGXCPU (soft limit) and the kernel's SIGKILL (hard limit)


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 2048
    cpu_seconds: int = 300
    wall_seconds: float = 600
    max_tokens: int | None = 2_000_000
    max_unzipped_bytes: int | None = 512 * 1024 * 1024


@dataclass(frozen=True)
class Task:
    path: str
    filename: str
    rows_path: str
    chunking: dict | None = None  # the API's chunking_strategy (None: auto)
    embedding_kind: str = "default"  # embeddings_from_settings(kind, **embedding_options)
    embedding_options: dict[str, Any] = field(default_factory=dict)
    dimension: int | None = None  # every vector is checked against it
    pdf_engine: str = "pdfium"  # what reads a PDF's text (ingestion.parse.PdfEngine)


@dataclass(frozen=True)
class Outcome:
    chunks: int
    usage_bytes: int  # UTF-8 size of the chunks' text


_context = None
_context_lock = threading.Lock()


def _fork_context():
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(_PRELOAD + _host_main())
            _context = context
    return _context


def _host_main() -> list[str]:
    """multiprocessing makes each child import the host program's main module again (as
    `__mp_main__`); preloaded in the fork server, its imports are already done when a child does."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name:
        return [] if name == "__main__" or name.endswith(".__main__") else [name]
    return ["__main__"] if getattr(main, "__file__", None) else []


def start(task: Task, limits: Limits) -> "Child":
    """Start ingesting ``task`` in a child process. Blocking (the first call starts the fork
    server, which takes seconds): call it from a worker thread."""
    context = _fork_context()
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(
        target=_child_main, args=(task, limits, writer, os.getpid()), name="assistgraph-ingest", daemon=True
    )
    process.start()
    writer.close()
    return Child(process, reader, task, limits)


class Child:
    def __init__(self, process, reader, task: Task, limits: Limits):
        self.process = process
        self._reader = reader
        self._task = task
        self._limits = limits
        self._killed = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the child to end (blocking); False if it is still running after ``timeout``."""
        self.process.join(timeout)
        return self.process.exitcode is not None

    def kill(self) -> None:
        self._killed = True
        if self.process.exitcode is None:
            self.process.kill()

    def outcome(self) -> Outcome:
        """What the ended child did, or the :class:`IngestionError` of why it did not; a child still
        running (the wall time passed) is killed first."""
        name = self._task.filename
        if self.process.exitcode is None:
            self.kill()
            self.process.join()
            raise LimitExceeded(
                "wall_time", f"{name} could not be processed within the time limit ({self._limits.wall_seconds:g} seconds)."
            )
        message = None
        try:
            if self._reader.poll():
                message = self._reader.recv()
        except (EOFError, OSError):
            message = None
        finally:
            self._reader.close()
        if message is not None:
            return _decode(message, name, self._limits)
        code = self.process.exitcode
        if code == -signal.SIGXCPU:
            raise _cpu_limit(name, self._limits)
        if code == _MEMORY_EXIT or (code == -signal.SIGKILL and not self._killed):
            raise _memory_limit(name, self._limits)  # SIGKILL from outside: the system's OOM killer
        if self._killed:
            raise IngestionError(f"The ingestion of {name} was stopped.")
        detail = f"signal {-code}" if code < 0 else f"exit status {code}"
        raise InvalidFile(f"{name} could not be processed: the process reading it stopped unexpectedly ({detail}).")


def _cpu_limit(name: str, limits: Limits) -> LimitExceeded:
    return LimitExceeded("cpu_time", f"{name} needs more processing than the CPU time limit allows ({limits.cpu_seconds} seconds).")


def _memory_limit(name: str, limits: Limits) -> LimitExceeded:
    return LimitExceeded("memory", f"{name} needs more memory to process than the limit allows ({limits.memory_mb} MB).")


_ERRORS = {cls.__name__: cls for cls in (UnsupportedFile, InvalidFile, EmptyFile)}


def _decode(message: dict, name: str, limits: Limits) -> Outcome:
    if "ok" in message:
        return Outcome(chunks=message["chunks"], usage_bytes=message["usage_bytes"])
    if message.get("limit") == "memory" and "error" not in message:
        raise _memory_limit(name, limits)
    kind = message.get("error")
    if kind == "LimitExceeded":
        raise LimitExceeded(message.get("limit") or "limit", message["message"])
    if kind in _ERRORS:
        raise _ERRORS[kind](message["message"])
    raise RuntimeError(message.get("message") or "the ingestion failed")


# --- in the child ----------------------------------------------------------------------------


def _child_main(task: Task, limits: Limits, writer, caller: int) -> None:
    try:
        _confine(limits)
        _end_with(caller)
        try:
            result: dict = {"ok": True, **_ingest(task, limits)}
        except MemoryError:
            result = {"limit": "memory"}
        except IngestionError as exc:
            result = {"error": type(exc).__name__, "message": exc.message, "limit": getattr(exc, "limit", None)}
        except Exception as exc:  # a bug or the environment: the caller reports a server error
            result = {"error": "server", "message": f"{type(exc).__name__}: {exc}"}
        writer.send(result)
        writer.close()
    except MemoryError:
        os._exit(_MEMORY_EXIT)


def _confine(limits: Limits) -> None:
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + _CPU_GRACE))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        # prctl(PR_SET_PDEATHSIG, SIGKILL): the standard library has no wrapper for it.
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    # Parser warnings about odd files are not the server's business (the result says what failed).
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")


def _end_with(caller: int) -> None:
    """End this process when the one that asked for it does, however that one ends.

    PR_SET_PDEATHSIG ties a child to its fork server only, and the fork server lives on while any
    child holds the descriptor that tells it its clients are gone (every child gets one, so it can
    start processes of its own): a caller killed with SIGKILL left both running, the child ingesting
    a file nobody would read. So the child watches the caller itself, through a pidfd that becomes
    readable when it exits (kernel 5.3+), or by polling its pid where there is none."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(caller)
        except ProcessLookupError:
            os._exit(_ORPHANED_EXIT)
        except OSError:
            while True:
                time.sleep(1)
                try:
                    os.kill(caller, 0)
                except ProcessLookupError:
                    os._exit(_ORPHANED_EXIT)
                except PermissionError:
                    pass
        select.select([fd], [], [])
        os._exit(_ORPHANED_EXIT)

    threading.Thread(target=watch, name="end-with-caller", daemon=True).start()


def _ingest(task: Task, limits: Limits) -> dict:
    from ingestion import embed_chunks, embeddings_from_settings, ingest_file

    chunks = ingest_file(
        task.path,
        task.filename,
        task.chunking,
        max_tokens=limits.max_tokens,
        max_unzipped_bytes=limits.max_unzipped_bytes,
        pdf_engine=task.pdf_engine,
    )
    if not chunks:
        raise EmptyFile("The file contains no text to index.")
    model = embeddings_from_settings(task.embedding_kind, **task.embedding_options)
    vectors = embed_chunks(chunks, model.embeddings, dimension=task.dimension)
    usage = 0
    with open(task.rows_path, "w", encoding="utf-8") as out:
        for chunk, vector in zip(chunks, vectors):
            # Postgres text holds neither NUL nor lone surrogates (a broken UTF-16 source may leave one).
            encoded = chunk.text.encode("utf-8", "replace")
            usage += len(encoded)
            text = encoded.decode("utf-8").replace("\x00", "")
            row = [chunk.index, text, chunk.token_count, json.dumps(chunk.metadata()), _vector_text(vector)]
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"chunks": len(chunks), "usage_bytes": usage}


def _vector_text(values) -> str:
    """pgvector's text form."""
    return "[" + ",".join(repr(float(v)) for v in values) + "]"
