"""Sessions in a Jupyter Kernel Gateway, so workers on several machines share one kernel per key.

The gateway owns the kernels (REST: `/api/kernels`) and relays their messages over a WebSocket
(`/api/kernels/{id}/channels`, JSON messages tagged with their channel). Which kernel serves a key
lives in a `KernelIdMapping` the host provides (e.g. a Postgres table); the in-memory one only
serves one process. A worker that finds the mapped kernel gone (culled, restarted gateway) starts a
new one and tells the model, as the local store does after an idle stop.

Hand-written client, because jupyter_server's GatewayKernelClient connects with a blocking socket
and waits for messages by spinning on `asyncio.sleep(0)`: neither is acceptable on the event loop
all runs share. Messages are still built by jupyter_client's `Session`, and executions go through
the same `run_code` as local kernels.

The gateway offers no file API, so files move through the kernel itself: small helper functions,
defined in the kernel when the session connects, list /mnt/data and read or write base64 chunks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from queue import Empty
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session as MessageFactory
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from . import files
from .config import CodeInterpreterConfig
from .errors import (
    CodeInterpreterError,
    FileNotInSession,
    FileTooLarge,
    SandboxUnavailable,
    SessionStartFailed,
)
from .execution import FileInfo, run_code
from .figures import SHOW_OPEN_FIGURES
from .kernel import KernelSession, KernelStore, new_session_notice

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024


class KernelIdMapping(Protocol):
    """Where key → kernel id is kept; shared by every worker using the same gateway."""

    async def get(self, key: str) -> str | None: ...

    async def claim(self, key: str, kernel_id: str) -> str:
        """Store kernel_id for key unless one is stored already; return the stored one."""
        ...

    async def release(self, key: str, kernel_id: str) -> None:
        """Forget key, if it still maps to kernel_id."""
        ...


class InMemoryKernelIdMapping:
    def __init__(self) -> None:
        self._ids: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self._ids.get(key)

    async def claim(self, key: str, kernel_id: str) -> str:
        return self._ids.setdefault(key, kernel_id)

    async def release(self, key: str, kernel_id: str) -> None:
        if self._ids.get(key) == kernel_id:
            del self._ids[key]


def _prelude(data_dir: str) -> str:
    # Runs in the kernel on connect and after every restart. Names start with `__ag_` to stay out of
    # the way of the model's code; they are looked up again if the code deletes them.
    return SHOW_OPEN_FIGURES + f"""
import os as __ag_os, stat as __ag_stat, json as __ag_json, base64 as __ag_b64, sys as __ag_sys
__ag_os.makedirs({data_dir!r}, exist_ok=True)
__ag_os.chdir({data_dir!r})
def __ag_list(limit={files.MAX_WALK_ENTRIES}):
    found, root = {{}}, {data_dir!r}
    for top, dirs, names in __ag_os.walk(root):
        for name in names:
            path = __ag_os.path.join(top, name)
            try:
                info = __ag_os.lstat(path)
            except OSError:
                continue
            if __ag_stat.S_ISREG(info.st_mode):
                found[__ag_os.path.relpath(path, root)] = [info.st_size, info.st_mtime_ns]
            if len(found) >= limit:
                break
    __ag_sys.stdout.write(__ag_json.dumps(found))
def __ag_read(name, offset, size):
    with open(__ag_os.path.join({data_dir!r}, name), 'rb') as f:
        f.seek(offset)
        __ag_sys.stdout.write(__ag_b64.b64encode(f.read(size)).decode())
def __ag_write(name, chunk, append):
    path = __ag_os.path.join({data_dir!r}, name)
    __ag_os.makedirs(__ag_os.path.dirname(path), exist_ok=True)
    if not append and __ag_os.path.lexists(path) and not __ag_os.path.isdir(path):
        __ag_os.unlink(path)
    with open(path, 'ab' if append else 'wb') as f:
        f.write(__ag_b64.b64decode(chunk))
"""


class GatewayChannels:
    """The `KernelChannels` of execution.py over the gateway's WebSocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        # The gateway signs what it forwards to the kernel; a key here only keeps traitlets from warning.
        self._factory = MessageFactory(key=secrets.token_hex(16).encode())
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {"iopub": asyncio.Queue(), "shell": asyncio.Queue()}
        self._outgoing: asyncio.Queue[str] = asyncio.Queue()
        self.kernel_restarted = False
        self._reader = asyncio.create_task(self._read())
        self._writer = asyncio.create_task(self._write())

    @property
    def closed(self) -> bool:
        return self._reader.done()

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                channel = message.get("channel")
                if channel == "iopub" and message.get("msg_type") == "status":
                    if message["content"].get("execution_state") in ("restarting", "dead"):
                        self.kernel_restarted = True
                queue = self._queues.get(channel)
                if queue is not None:
                    queue.put_nowait(message)
        except ConnectionClosed:
            pass

    async def _write(self) -> None:
        while True:
            await self._ws.send(await self._outgoing.get())

    def send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        message = self._factory.msg(msg_type, content)
        message["channel"] = channel
        self._outgoing.put_nowait(json.dumps(message, default=json_default))
        return message["msg_id"]

    def execute(self, code: str, silent: bool = False, store_history: bool = True, allow_stdin: bool | None = False) -> str:
        content = {
            "code": code,
            "silent": silent,
            "store_history": store_history,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        return self.send("shell", "execute_request", content)

    async def _get(self, channel: str, timeout: float | None) -> dict[str, Any]:
        queue = self._queues[channel]
        if self.closed and queue.empty():
            raise Empty
        try:
            return await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            raise Empty from None

    async def get_iopub_msg(self, timeout: float | None = None) -> dict[str, Any]:
        return await self._get("iopub", timeout)

    async def get_shell_msg(self, timeout: float | None = None) -> dict[str, Any]:
        return await self._get("shell", timeout)

    async def aclose(self) -> None:
        self._writer.cancel()
        await self._ws.close()
        self._reader.cancel()


class GatewaySession(KernelSession):
    def __init__(self, store: GatewaySessionStore, key: str, kernel_id: str, notice: str | None) -> None:
        super().__init__(store.config, key, kernel_id, notice)
        self._store = store
        self._gateway_channels: GatewayChannels | None = None

    @property
    def connected(self) -> bool:
        return self._gateway_channels is not None and not self._gateway_channels.closed

    @property
    def _files_reachable(self) -> bool:
        return self.connected

    async def connect(self) -> None:
        if self._gateway_channels is not None:
            await self._gateway_channels.aclose()
        ws = await connect(
            self._store.ws_url(self.id),
            additional_headers=self._store.headers,
            max_size=None,
            open_timeout=self._config.gateway_request_timeout,
        )
        self._gateway_channels = GatewayChannels(ws)
        await self._helper(_prelude(self._config.gateway_data_dir), define=True)

    def _channels(self) -> GatewayChannels:
        assert self._gateway_channels is not None
        return self._gateway_channels

    async def _ready(self) -> bool:
        if not self.connected:
            await self.connect()
        return False

    async def _helper(self, code: str, *, define: bool = False, max_chars: int = 1 << 20) -> str:
        """Run bookkeeping code silently (no history, no execution count); its stdout is the answer."""
        output = await run_code(
            self._channels(),
            code,
            timeout=self._config.gateway_request_timeout,
            max_chars=max_chars,
            max_images=0,
            interrupt=self._interrupt,
            is_alive=self._is_alive,
            silent=True,
        )
        if output.error and output.error.startswith("NameError") and not define:
            await self._helper(_prelude(self._config.gateway_data_dir), define=True)
            return await self._helper(code, define=True, max_chars=max_chars)
        if output.error or output.ending != "completed":
            raise CodeInterpreterError(f"The session's file helper failed ({output.error or output.ending}).")
        return output.text

    async def _interrupt(self) -> None:
        await self._store.request("POST", f"/api/kernels/{quote(self.id)}/interrupt")

    async def _is_alive(self) -> bool:
        channels = self._gateway_channels
        if channels is None or channels.closed or channels.kernel_restarted:
            return False
        return True

    async def _restart(self) -> bool:
        try:
            await self._store.request("POST", f"/api/kernels/{quote(self.id)}/restart")
            await self.connect()
        except Exception:
            log.exception("code_interpreter: gateway kernel %s could not restart", self.id)
            return False
        return True

    async def _snapshot(self) -> files.Snapshot:
        listing = json.loads(await self._helper("__ag_list()", max_chars=1 << 24) or "{}")
        return {name: (size, mtime) for name, (size, mtime) in listing.items()}

    async def put_file(self, name: str, data: bytes) -> str:
        normalised = files.check_name(name)
        if len(data) > self._config.max_file_bytes:
            raise FileTooLarge(f"{name} is {len(data)} bytes, over the {self._config.max_file_bytes}-byte limit")
        async with self._lock:
            if not self.connected:
                await self.connect()
            self.last_used = time.monotonic()
            for offset in range(0, max(len(data), 1), CHUNK_BYTES):
                chunk = base64.b64encode(data[offset : offset + CHUNK_BYTES]).decode()
                await self._helper(f"__ag_write({normalised!r}, {chunk!r}, {offset > 0})")
        return f"/mnt/data/{normalised}"

    async def read_file(self, name: str) -> bytes:
        normalised = files.check_name(name)
        async with self._lock:
            if not self.connected:
                await self.connect()
            listing = await self._snapshot()
            if normalised not in listing:
                raise FileNotInSession(f"/mnt/data/{normalised} does not exist or is not a regular file")
            size = listing[normalised][0]
            if size > self._config.max_file_bytes:
                raise FileTooLarge(
                    f"/mnt/data/{normalised} is {size} bytes, over the {self._config.max_file_bytes}-byte limit"
                )
            parts = []
            for offset in range(0, size, CHUNK_BYTES):
                text = await self._helper(f"__ag_read({normalised!r}, {offset}, {CHUNK_BYTES})", max_chars=2 * CHUNK_BYTES)
                parts.append(base64.b64decode(text))
        return b"".join(parts)

    async def list_files(self) -> list[FileInfo]:
        async with self._lock:
            if not self.connected:
                await self.connect()
            listing = await self._snapshot()
        return [FileInfo(name, size) for name, (size, _) in sorted(listing.items())]

    async def disconnect(self) -> None:
        if self._gateway_channels is not None:
            await self._gateway_channels.aclose()
            self._gateway_channels = None


class GatewaySessionStore(KernelStore[GatewaySession]):
    """Kernels in a Jupyter Kernel Gateway; this process keeps connections, the mapping keeps ids."""

    reaper_name = "code_interpreter gateway reaper"
    limits = "gateway"
    budgets: Mapping[str, float] = MappingProxyType({})  # the gateway's operator sets them

    def __init__(self, config: CodeInterpreterConfig, mapping: KernelIdMapping) -> None:
        if not config.gateway_url:
            raise ValueError("the gateway backend needs gateway_url")
        super().__init__(config)
        self.mapping = mapping
        self.base_url = config.gateway_url.rstrip("/")
        self.headers = {"Authorization": f"token {config.gateway_token}"} if config.gateway_token else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=config.gateway_request_timeout
        )

    @classmethod
    async def open(cls, config: CodeInterpreterConfig, mapping: KernelIdMapping | None = None) -> GatewaySessionStore:
        store = cls(config, mapping or InMemoryKernelIdMapping())
        try:
            response = await store._http.get("/api/kernelspecs")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            # Not fatal: the gateway may come up later; every call tries again and reports failure.
            log.error("code_interpreter: kernel gateway %s is not reachable (%s)", store.base_url, exc)
        store.start_reaper()
        return store

    def ws_url(self, kernel_id: str) -> str:
        scheme, rest = self.base_url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/kernels/{quote(kernel_id)}/channels"

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SandboxUnavailable(f"The kernel gateway is unreachable ({type(exc).__name__}).") from exc
        if response.status_code >= 500:
            raise SandboxUnavailable(f"The kernel gateway failed ({response.status_code}).")
        return response

    async def _open(self, key: str, replacing: GatewaySession | None) -> GatewaySession:
        if replacing is not None:
            # Its kernel would not restart: forget it, here and in the mapping, and start another.
            await self.stop(key)
            self._remember_end(key, "ended")
        notice = self._notice_for(key)
        kernel_id = await self.mapping.get(key)
        if kernel_id is not None:
            if (await self.request("GET", f"/api/kernels/{quote(kernel_id)}")).status_code == 404:
                await self.mapping.release(key, kernel_id)
                notice = notice or new_session_notice("gone", self.config.idle_timeout)
                kernel_id = None
        if kernel_id is None:
            response = await self.request("POST", "/api/kernels", json={"name": self.config.gateway_kernel_name})
            if response.status_code >= 400:
                raise SessionStartFailed(f"The kernel gateway refused to start a kernel ({response.status_code}).")
            started = response.json()["id"]
            kernel_id = await self.mapping.claim(key, started)
            if kernel_id != started:  # another worker won the race: use its kernel
                await self.request("DELETE", f"/api/kernels/{quote(started)}")
            else:
                log.info("code_interpreter: gateway session %s started", kernel_id)
        session = GatewaySession(self, key, kernel_id, notice)
        try:
            await session.connect()
        except CodeInterpreterError:
            raise
        except Exception as exc:
            raise SessionStartFailed(f"Could not connect to the kernel ({type(exc).__name__}).") from exc
        self._sessions[key] = session
        return session

    async def stop(self, key: str) -> None:
        session = self._sessions.pop(key, None)
        kernel_id = session.id if session else await self.mapping.get(key)
        if session is not None:
            await session.disconnect()
        if kernel_id is not None:
            await self.request("DELETE", f"/api/kernels/{quote(kernel_id)}")
            await self.mapping.release(key, kernel_id)
            log.info("code_interpreter: gateway session %s stopped", kernel_id)

    async def reap_idle(self) -> list[str]:
        """Stop kernels idle on the gateway (for every worker) past the timeout; drop our idle connections."""
        now = time.monotonic()
        reaped = []
        for key, session in list(self._sessions.items()):
            if session.busy or now - session.last_used < self.config.idle_timeout:
                continue
            response = await self.request("GET", f"/api/kernels/{quote(session.id)}")
            if response.status_code == 200 and not self._idle_remotely(response.json()):
                # Another worker is using it: only this worker's connection goes.
                self._sessions.pop(key, None)
                await session.disconnect()
                continue
            await self.stop(key)
            self._remember_end(key, "idle")
            reaped.append(key)
        return reaped

    def _idle_remotely(self, model: dict[str, Any]) -> bool:
        try:
            last = datetime.fromisoformat(model["last_activity"])
        except (KeyError, ValueError):
            return True
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        return (datetime.now(UTC) - last).total_seconds() >= self.config.idle_timeout

    async def _disconnect(self, session: GatewaySession) -> None:
        """This worker's connection goes; the kernel stays for other workers (reaped when idle)."""
        await session.disconnect()

    async def _release_resources(self) -> None:
        await self._http.aclose()
