"""What every backend's sessions and stores share: one execution at a time per session, the /mnt/data
scan around it, restarting what broke, the notices for a replaced session, idle reaping and shutdown.

A backend (local.py, gateway.py) says how to reach its kernel (channels, interrupt, liveness,
restart, a listing of /mnt/data) and how a session starts and stops; the rest is here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Generic, TypeVar

from . import files
from .config import CodeInterpreterConfig
from .errors import CodeInterpreterError
from .execution import Execution, KernelChannels, run_code

log = logging.getLogger(__name__)

# Keys whose session ended, remembered so their next session can say so (bounded).
ENDED_MEMORY = 10_000
SESSION_ENDED = "The Python session ended; call the tool again to start a new one."
SHUTTING_DOWN = "The code interpreter is shutting down."


def new_session_notice(reason: str, idle_timeout: float) -> str:
    why = {
        "idle": f"it was unused for more than {idle_timeout:g} s",
        "evicted": "the server needed room for other sessions",
        "gone": "its kernel was gone",
    }.get(reason, "its kernel could not be recovered")
    return (
        f"This is a new Python session: the previous one was stopped because {why}, so its variables, "
        "imports and files are gone (files attached to the conversation are placed in /mnt/data again)."
    )


class KernelSession:
    """A stateful kernel and its /mnt/data; subclasses say how to reach the kernel."""

    def __init__(self, config: CodeInterpreterConfig, key: str, session_id: str, notice: str | None) -> None:
        self.key = key
        self.id = session_id
        self.last_used = time.monotonic()
        self.busy = False
        # A session whose kernel cannot come back; its store starts a new one on next use.
        self.dead = False
        self._config = config
        self._notice = notice
        self._lock = asyncio.Lock()

    # --- what a backend provides --------------------------------------------------------------------

    def _channels(self) -> KernelChannels:
        raise NotImplementedError

    async def _ready(self) -> bool:
        """Make the kernel ready for code; True if it had to be restarted (its state is gone)."""
        raise NotImplementedError

    async def _interrupt(self) -> None:
        raise NotImplementedError

    async def _is_alive(self) -> bool:
        raise NotImplementedError

    async def _restart(self) -> bool:
        """Restart the kernel (files stay); False if it cannot come back."""
        raise NotImplementedError

    async def _snapshot(self) -> files.Snapshot:
        raise NotImplementedError

    @property
    def _files_reachable(self) -> bool:
        return True

    # --- shared ---------------------------------------------------------------------------------------

    async def execute(self, code: str) -> Execution:
        async with self._lock:
            if self.dead:
                raise CodeInterpreterError(SESSION_ENDED)
            self.busy = True
            self.last_used = time.monotonic()
            try:
                return await self._execute(code)
            except (CodeInterpreterError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - whatever broke is restarted, never repeated
                return await self._recover(exc)
            finally:
                self.busy = False
                self.last_used = time.monotonic()

    async def _execute(self, code: str) -> Execution:
        config = self._config
        restarted = await self._ready()
        if self.dead:
            raise CodeInterpreterError(SESSION_ENDED)
        before = await self._snapshot()
        try:
            output = await run_code(
                self._channels(),
                code,
                timeout=config.execution_timeout,
                max_chars=config.max_output_chars,
                max_images=config.max_output_files,
                interrupt=self._interrupt,
                is_alive=self._is_alive,
            )
        except asyncio.CancelledError:
            # The caller gave up (run cancelled, tool timeout): stop the code instead of letting it run on.
            await self._interrupt()
            raise
        if output.ending in ("stuck", "died"):
            restarted = await self._restart() or restarted
        after = await self._snapshot() if self._files_reachable else before
        changed = files.changed_files(before, after)
        return Execution(
            logs=output.text,
            images=output.images,
            files=changed[: config.max_output_files],
            error=output.error,
            timed_out=output.ending in ("timed_out", "stuck"),
            kernel_restarted=restarted or output.ending == "died",
            kernel_died=output.ending == "died",
            omitted_chars=output.omitted_chars,
            images_omitted=output.images_omitted,
            files_omitted=max(len(changed) - config.max_output_files, 0),
            session_notice=self._take_notice(),
            timeout_seconds=config.execution_timeout,
        )

    async def _recover(self, exc: Exception) -> Execution:
        """An error in the tool itself (a message the client cannot read after a flood of output, a
        broken connection): the kernel is restarted, as after a crash, so the next call works."""
        log.error("code_interpreter: session %s failed (%s: %s); restarting its kernel", self.id, type(exc).__name__, exc)
        if not await self._restart():
            self.dead = True
            raise CodeInterpreterError(SESSION_ENDED) from exc
        return Execution(
            logs="",
            kernel_restarted=True,
            tool_failure=type(exc).__name__,
            session_notice=self._take_notice(),
            timeout_seconds=self._config.execution_timeout,
        )

    def _take_notice(self) -> str | None:
        notice, self._notice = self._notice, None
        return notice


S = TypeVar("S", bound=KernelSession)


class KernelStore(Generic[S]):
    """Sessions by key: one start at a time per key, remembered endings, idle reaping, shutdown."""

    reaper_name = "code_interpreter reaper"

    def __init__(self, config: CodeInterpreterConfig) -> None:
        self.config = config
        self._sessions: dict[str, S] = {}
        self._starting: dict[str, asyncio.Task[S]] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._closed = False
        self._reaper: asyncio.Task[None] | None = None

    # --- what a backend provides --------------------------------------------------------------------

    async def _open(self, key: str, replacing: S | None) -> S:
        """Start (or find) the session of `key`; `replacing` is its dead predecessor, if any."""
        raise NotImplementedError

    async def _disconnect(self, session: S) -> None:
        """What shutdown does to one session of this process."""
        raise NotImplementedError

    async def _release_resources(self) -> None:
        """What shutdown does after every session is disconnected."""

    async def reap_idle(self) -> list[str]:
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------------

    def start_reaper(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever(), name=self.reaper_name)

    async def session(self, key: str) -> S:
        if self._closed:
            raise CodeInterpreterError(SHUTTING_DOWN)
        session = self._sessions.get(key)
        if session is not None and not session.dead:
            session.last_used = time.monotonic()
            return session
        task = self._starting.get(key)
        if task is None:
            task = asyncio.create_task(self._open(key, session))
            self._starting[key] = task
            task.add_done_callback(lambda _: self._starting.pop(key, None))
        return await asyncio.shield(task)

    def _remember_end(self, key: str, reason: str) -> None:
        self._ended[key] = reason
        self._ended.move_to_end(key)
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    def _notice_for(self, key: str) -> str | None:
        """The notice of a session replacing one that ended (None for a first session)."""
        reason = self._ended.pop(key, None)
        return None if reason is None else new_session_notice(reason, self.config.idle_timeout)

    async def _reap_forever(self) -> None:
        interval = min(max(self.config.idle_timeout / 4, 0.5), 60.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap_idle()
            except Exception:  # the reaper must outlive one failed stop
                log.exception("code_interpreter: reaping idle sessions failed")

    async def aclose(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for task in list(self._starting.values()):
            task.cancel()
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(self._disconnect(s) for s in sessions), return_exceptions=True)
        await self._release_resources()
        if sessions:
            log.info("code_interpreter: %d sessions closed at shutdown", len(sessions))
