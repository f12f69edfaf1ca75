"""Scripted OpenAI-compatible chat-completions server for tests and benchmarks.

Pointing ``langchain_openai.ChatOpenAI(base_url=...)`` at this server exercises
the real HTTP/SSE client path while keeping every answer deterministic.

Usage
-----
In-process (pytest)::

    model, base_url, stop = start_in_thread()
    model.script("m1", [{"content": "hello"}, {"tool_calls": [{"name": "f", "arguments": {}}]}])
    ...
    stop()

Standalone (benchmarks)::

    python -m tests.scripted_model --port 8765
    # then POST /_script, GET /_requests?model=..., POST /_reset over HTTP,
    # and GET /_gate?name=...&timeout=..., POST /_release?name=... for gates

Endpoints
---------
``POST /v1/chat/completions`` (``/chat/completions`` too), ``GET /v1/models``,
``POST /v1/embeddings`` (deterministic 8-dimensional vectors from a hash of each input),
``POST /api/chat`` (Ollama's chat API, streamed as NDJSON or not, from the same turns),
``POST /_script`` with ``{"model": str, "turns": [...]}``,
``GET /_requests[?model=...]`` returning ``{"requests": [...]}``, ``POST /_reset``,
``GET /_gate?name=...[&timeout=s]`` returning ``{"reached": bool}`` once a response is
held at that gate (or the timeout passes), ``POST /_release?name=...``: the gate
calls below, for a model in another process.
Each recorded request is ``{"model", "body", "headers", "path"}``.

Turns
-----
Every chat request pops the next scripted turn queued for its body ``model``
(FIFO; a retried request pops another turn). With nothing queued, or a turn
giving neither ``content`` nor ``tool_calls``, the answer is
``"echo: " + <last user message text>`` (``"ok"`` when there is no user message;
text parts of list contents are joined with newlines). A turn is a dict whose
keys are all optional:

``content``            assistant text; streamed in pieces of ``chunk_size``.
``tool_calls``         list of ``{"name", "arguments": str | dict, "id"?}``;
                       several entries are parallel calls. Default id is
                       ``call_<hex>``; finish_reason becomes ``tool_calls``.
``finish_reason``      override, e.g. ``"length"``.
``usage``              ``{"prompt_tokens", "completion_tokens"}`` override. The
                       default estimate is chars-of-message-contents // 4 for the
                       prompt and words + 10 per tool call for the completion
                       (each at least 1).
``delay``              seconds to wait before the response headers.
``chunk_delay``        seconds between stream chunks.
``chunk_size``         characters per streamed piece (default 4).
``error``              ``{"status", "message", "type"="server_error", "code"?}``:
                       answer with that status and an OpenAI error body.
``stream_error_after`` streaming only: drop the connection after that many
                       content chunks (or before completing, if there are fewer);
                       uvicorn logs "ASGI callable returned without completing
                       response." for each such abort.
``echo``               true: content is ``"echo: " + <last user message text>``.
``repeat``             true: the turn is not used up; every later request gets it
                       too (a model that calls a tool on every turn, forever).

A small model's misbehaviours are turns too: a tool call written as text is a
``content`` of JSON (or tags, or a fence), a model repeating a call is the same
``tool_calls`` scripted several times, an empty final answer is ``content: ""``.
``stall_after``        streaming only: after that many chunks, send nothing for
``stall``              seconds (a slow or stuck local model), then go on;
                       ``stall_after: 0`` sends the headers and then no token at
                       all for that long (``delay`` holds even the headers back).
``context_window``     tokens the model holds: a prompt estimated above it (the
                       ``usage`` estimate) is refused with a 400
                       ``context_length_exceeded`` error, as OpenAI-compatible
                       servers do.
``gate``               streaming only: after ``gate_after`` chunks (default 0),
                       wait until the test calls ``release(gate)`` (or the client
                       goes away); ``wait_for_gate(gate)`` returns once a request
                       is waiting there. Lets a test act at an exact point of a
                       response (kill a process mid-stream, say).

Like many local servers, the model never honours ``max_tokens``: it answers in
full whatever the request asks (script ``finish_reason: "length"`` to mimic one
that does).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import secrets
import socket
import struct
import threading
import time
from collections import deque
from typing import Any, Callable
from urllib.parse import parse_qs

import uvicorn

TURN_KEYS = frozenset(
    {
        "content",
        "tool_calls",
        "finish_reason",
        "usage",
        "delay",
        "chunk_delay",
        "chunk_size",
        "error",
        "stream_error_after",
        "echo",
        "repeat",
        "stall_after",
        "stall",
        "gate",
        "gate_after",
        "context_window",
    }
)
DEFAULT_MODELS = ("scripted-model", "scripted-model-mini")

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _validate_turn(turn: Any) -> dict:
    if not isinstance(turn, dict):
        raise ValueError(f"turn must be a dict, got {type(turn).__name__}")
    unknown = set(turn) - TURN_KEYS
    if unknown:
        # Typos in scripts would otherwise silently fall back to defaults.
        raise ValueError(f"unknown turn keys: {sorted(unknown)}")
    return dict(turn)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text") or ""
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _last_user_text(messages: list) -> str | None:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return None


def _chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class ScriptedModel:
    """Scripted-turn state plus the ASGI app serving it (the instance is the app)."""

    def __init__(self) -> None:
        # Touched from the uvicorn loop thread and from test threads.
        self._lock = threading.Lock()
        self._turns: dict[str, deque[dict]] = {}
        self._requests: list[dict] = []
        self._gates_reached: dict[str, threading.Event] = {}
        self._gates_open: dict[str, threading.Event] = {}

    # -- state ------------------------------------------------------------

    def script(self, model: str, turns: list[dict]) -> None:
        validated = [_validate_turn(turn) for turn in turns]
        with self._lock:
            self._turns.setdefault(model, deque()).extend(validated)

    def requests(self, model: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self._requests if model is None or r["model"] == model]

    def reset(self) -> None:
        with self._lock:
            self._turns.clear()
            self._requests.clear()

    def _gate(self, name: str) -> tuple[threading.Event, threading.Event]:
        with self._lock:
            return (
                self._gates_reached.setdefault(name, threading.Event()),
                self._gates_open.setdefault(name, threading.Event()),
            )

    def wait_for_gate(self, name: str, timeout: float = 30) -> None:
        """Block until a response is held at this gate."""
        if not self._gate(name)[0].wait(timeout):
            raise TimeoutError(f"no response reached gate {name!r} within {timeout} s")

    def release(self, name: str) -> None:
        """Let responses held at this gate (and later ones) go on."""
        self._gate(name)[1].set()

    def _record_and_pop(self, record: dict) -> dict:
        with self._lock:
            self._requests.append(record)
            queue = self._turns.get(record["model"])
            if not queue:
                return {}
            return dict(queue[0]) if queue[0].get("repeat") else queue.popleft()

    # -- ASGI -------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        route = path[3:] if path.startswith("/v1/") else path
        method = scope["method"]
        conn = _Connection(receive, send)
        try:
            if route == "/chat/completions" and method == "POST":
                await self._chat(scope, conn)
            elif route == "/embeddings" and method == "POST":
                await self._embeddings(scope, conn)
            elif route == "/api/chat" and method == "POST":
                await self._ollama_chat(scope, conn)
            elif route == "/models" and method == "GET":
                await self._models(conn)
            elif route == "/_script" and method == "POST":
                await self._control_script(conn)
            elif route == "/_requests" and method == "GET":
                query = parse_qs(scope.get("query_string", b"").decode())
                model = query.get("model", [None])[0]
                await conn.json(200, {"requests": self.requests(model)})
            elif route == "/_reset" and method == "POST":
                self.reset()
                await conn.json(200, {"ok": True})
            elif route == "/_gate" and method == "GET":
                query = parse_qs(scope.get("query_string", b"").decode())
                reached = self._gate(query["name"][0])[0]
                # In a thread: the held response itself is served by this loop.
                timeout = float(query.get("timeout", ["30"])[0])
                await conn.json(200, {"reached": await asyncio.to_thread(reached.wait, timeout)})
            elif route == "/_release" and method == "POST":
                self.release(parse_qs(scope.get("query_string", b"").decode())["name"][0])
                await conn.json(200, {"ok": True})
            else:
                await conn.error(404, f"no route for {method} {path}", "invalid_request_error")
        finally:
            conn.close()

    async def _embeddings(self, scope: dict, conn: _Connection) -> None:
        body = json.loads(await conn.body())
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self._record_and_pop({"model": str(body.get("model", "")), "body": body, "headers": headers, "path": scope["path"]})
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index, text in enumerate(inputs):
            digest = hashlib.sha256(json.dumps(text).encode()).digest()
            vector = [b / 255 for b in digest[:8]]
            if body.get("encoding_format") == "base64":
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        usage = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
        await conn.json(200, {"object": "list", "data": data, "model": body.get("model"), "usage": usage})

    async def _ollama_chat(self, scope: dict, conn: _Connection) -> None:
        """Ollama's /api/chat: the same turns (content, tool_calls, usage, delay, chunk_size, repeat)."""
        body = json.loads(await conn.body())
        model = str(body.get("model", ""))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        turn = self._record_and_pop({"model": model, "body": body, "headers": headers, "path": scope["path"]})
        if turn.get("delay") and not await conn.sleep(float(turn["delay"])):
            return
        messages = body.get("messages") or []
        if turn.get("echo") or ("content" not in turn and not turn.get("tool_calls")):
            content = f"echo: {_last_user_text(messages) or ''}"
        else:
            content = turn.get("content") or ""
        calls = [
            {"function": {"name": c["name"], "arguments": c.get("arguments") if isinstance(c.get("arguments"), dict) else json.loads(c.get("arguments") or "{}")}}
            for c in turn.get("tool_calls") or []
        ]
        usage = _usage(turn.get("usage"), messages, content, len(calls))
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
        done = {
            "model": model, "created_at": created, "message": {"role": "assistant", "content": ""}, "done": True,
            "done_reason": turn.get("finish_reason") or "stop", "total_duration": 1, "load_duration": 1,
            "prompt_eval_count": usage["prompt_tokens"], "prompt_eval_duration": 1,
            "eval_count": usage["completion_tokens"], "eval_duration": 1,
        }
        if body.get("stream") is False:
            done["message"] = {"role": "assistant", "content": content, **({"tool_calls": calls} if calls else {})}
            await conn.json(200, done)
            return
        size = max(1, int(turn.get("chunk_size") or 4))
        await conn.start(200, [(b"content-type", b"application/x-ndjson")])
        lines = [
            {"model": model, "created_at": created, "message": {"role": "assistant", "content": piece}, "done": False}
            for piece in _chunks(content, size)
        ]
        if calls:
            lines.append({"model": model, "created_at": created, "message": {"role": "assistant", "content": "", "tool_calls": calls}, "done": False})
        for line in [*lines, done]:
            if turn.get("chunk_delay") and not await conn.sleep(float(turn["chunk_delay"])):
                return
            await conn.body_part(_dumps(line) + b"\n")
        await conn.body_part(b"", more=False)

    async def _models(self, conn: _Connection) -> None:
        with self._lock:
            ids = list(dict.fromkeys([*DEFAULT_MODELS, *self._turns]))
        created = int(time.time())
        data = [{"id": i, "object": "model", "created": created, "owned_by": "scripted"} for i in ids]
        await conn.json(200, {"object": "list", "data": data})

    async def _control_script(self, conn: _Connection) -> None:
        try:
            body = json.loads(await conn.body())
            self.script(str(body["model"]), list(body.get("turns", [])))
        except (ValueError, KeyError, TypeError) as exc:
            await conn.error(400, f"bad script: {exc}", "invalid_request_error")
            return
        await conn.json(200, {"ok": True})

    async def _chat(self, scope: dict, conn: _Connection) -> None:
        try:
            body = json.loads(await conn.body())
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as exc:
            await conn.error(400, f"invalid JSON body: {exc}", "invalid_request_error")
            return
        model = str(body.get("model", ""))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        turn = self._record_and_pop({"model": model, "body": body, "headers": headers, "path": scope["path"]})

        if turn.get("delay") and not await conn.sleep(float(turn["delay"])):
            return

        error = turn.get("error")
        if error:
            await conn.error(
                int(error.get("status", 500)),
                error.get("message", "scripted error"),
                error.get("type", "server_error"),
                error.get("code"),
            )
            return

        messages = body.get("messages") or []
        window = turn.get("context_window")
        if window is not None:
            prompt_tokens = _usage(None, messages, None, 0)["prompt_tokens"]
            if prompt_tokens > window:
                await conn.error(
                    400,
                    f"This model's maximum context length is {window} tokens. However, your messages resulted "
                    f"in {prompt_tokens} tokens. Please reduce the length of the messages.",
                    "invalid_request_error",
                    "context_length_exceeded",
                )
                return
        if turn.get("echo") or ("content" not in turn and not turn.get("tool_calls")):
            user_text = _last_user_text(messages)
            content = "ok" if user_text is None and not turn.get("echo") else f"echo: {user_text or ''}"
        else:
            content = turn.get("content")

        tool_calls = []
        for call in turn.get("tool_calls") or []:
            arguments = call.get("arguments", "")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)
            tool_calls.append(
                {
                    "id": call.get("id") or f"call_{secrets.token_hex(12)}",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": arguments},
                }
            )
        finish_reason = turn.get("finish_reason") or ("tool_calls" if tool_calls else "stop")
        usage = _usage(turn.get("usage"), messages, content, len(tool_calls))

        reply = _Reply(model, content, tool_calls, finish_reason, usage)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            gate = self._gate(turn["gate"]) if turn.get("gate") else None
            await _stream(conn, reply, turn, include_usage, gate)
        else:
            await conn.json(200, reply.completion())


def _usage(override: dict | None, messages: list, content: str | None, n_calls: int) -> dict:
    override = override or {}
    prompt = override.get("prompt_tokens")
    if prompt is None:
        chars = sum(len(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        prompt = max(1, chars // 4)
    completion = override.get("completion_tokens")
    if completion is None:
        completion = max(1, len((content or "").split()) + 10 * n_calls)
    total = override.get("total_tokens", prompt + completion)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


class _Reply:
    __slots__ = ("id", "created", "model", "content", "tool_calls", "finish_reason", "usage")

    def __init__(self, model: str, content: str | None, tool_calls: list, finish_reason: str, usage: dict):
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.model = model
        self.content = content
        self.tool_calls = tool_calls
        self.finish_reason = finish_reason
        self.usage = usage

    def completion(self) -> dict:
        message: dict[str, Any] = {"role": "assistant", "content": self.content, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = self.tool_calls
        elif message["content"] is None:
            message["content"] = ""
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}],
            "usage": self.usage,
        }

    def chunk(self, delta: dict, finish_reason: str | None = None, include_usage: bool = False) -> bytes:
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            # OpenAI sends usage: null on every chunk but the trailing usage chunk.
            payload["usage"] = None
        return b"data: " + _dumps(payload) + b"\n\n"

    def usage_chunk(self) -> bytes:
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": self.usage,
        }
        return b"data: " + _dumps(payload) + b"\n\n"


async def _hold(conn: _Connection, gate: tuple[threading.Event, threading.Event]) -> bool:
    """Wait at a gate until it opens; False if the client went away meanwhile."""
    reached, opened = gate
    reached.set()
    while not opened.is_set():
        if not await conn.sleep(0.02):
            return False
    return True


async def _stream(
    conn: _Connection, reply: _Reply, turn: dict, include_usage: bool, gate: tuple | None = None
) -> None:
    size = max(1, int(turn.get("chunk_size") or 4))
    chunk_delay = float(turn.get("chunk_delay") or 0)
    error_after = turn.get("stream_error_after")
    stall_after, stall = turn.get("stall_after"), float(turn.get("stall") or 0)
    gate_after = int(turn.get("gate_after") or 0)

    deltas: list[tuple[dict, bool]] = []  # (delta, is_content)
    if reply.content or not reply.tool_calls:
        deltas.extend(({"content": piece}, True) for piece in _chunks(reply.content or "", size) or [""])
    for index, call in enumerate(reply.tool_calls):
        fn = call["function"]
        head = {"index": index, "id": call["id"], "type": "function", "function": {"name": fn["name"], "arguments": ""}}
        deltas.append(({"tool_calls": [head]}, False))
        deltas.extend(
            ({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, False)
            for piece in _chunks(fn["arguments"], size)
        )
    first = deltas[0][0]
    first["role"] = "assistant"
    first.setdefault("content", None)

    await conn.start(200, _SSE_HEADERS)
    sent_content = 0
    for i, (delta, is_content) in enumerate(deltas):
        if error_after is not None and sent_content >= error_after:
            return  # Returning mid-body makes uvicorn drop the connection.
        if i and chunk_delay and not await conn.sleep(chunk_delay):
            return
        if i == stall_after and stall and not await conn.sleep(stall):
            return
        if gate is not None and i == gate_after and not await _hold(conn, gate):
            return
        await conn.body_part(reply.chunk(delta, include_usage=include_usage))
        sent_content += is_content
    if error_after is not None:
        return
    if gate is not None and gate_after >= len(deltas) and not await _hold(conn, gate):
        return
    if chunk_delay and not await conn.sleep(chunk_delay):
        return
    tail = reply.chunk({}, reply.finish_reason, include_usage)
    if include_usage:
        tail += reply.usage_chunk()
    await conn.body_part(tail + b"data: [DONE]\n\n", more=False)


class _Connection:
    """Thin ASGI send/receive wrapper that can notice client disconnects."""

    __slots__ = ("_receive", "_send", "_watcher")

    def __init__(self, receive: Callable, send: Callable) -> None:
        self._receive = receive
        self._send = send
        self._watcher: asyncio.Task | None = None

    async def body(self) -> bytes:
        parts = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        return b"".join(parts)

    async def _wait_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    async def sleep(self, seconds: float) -> bool:
        """Sleep; return False early if the client went away meanwhile."""
        if seconds <= 0:
            return True
        # Only requests that actually wait pay for a watcher task; uvicorn
        # silently drops sends after a disconnect, so fast paths need none.
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._wait_disconnect())
        done, _ = await asyncio.wait({self._watcher}, timeout=seconds)
        return not done

    async def start(self, status: int, headers: list) -> None:
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def body_part(self, data: bytes, more: bool = True) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(self, status: int, obj: Any) -> None:
        await self.start(status, _JSON_HEADERS)
        await self.body_part(_dumps(obj), more=False)

    async def error(self, status: int, message: str, type_: str, code: Any = None) -> None:
        await self.json(status, {"error": {"message": message, "type": type_, "param": None, "code": code}})

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()


async def _lifespan(receive: Callable, send: Callable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def start_in_thread(
    host: str = "127.0.0.1", port: int = 0, model: ScriptedModel | None = None
) -> tuple[ScriptedModel, str, Callable[[], None]]:
    """Serve a ScriptedModel from a daemon thread; return (model, base_url, stop)."""
    model = model or ScriptedModel()
    # Binding here (not in uvicorn) lets us learn the ephemeral port up front.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        model,
        lifespan="off",
        log_level="warning",
        access_log=False,
        # Bounded so stop() does not hang on a request sleeping in a long delay.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"scripted-model-{bound_port}", daemon=True
    )
    thread.start()

    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("scripted model server failed to start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)

    return model, f"http://{host}:{bound_port}/v1", stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    uvicorn.run(
        ScriptedModel(),
        host=args.host,
        port=args.port,
        lifespan="off",
        log_level=args.log_level,
        access_log=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
