"""One execution over the Jupyter messaging protocol, whatever carries the messages (ZMQ or a gateway).

`run_code` sends an `execute_request` and reads the kernel's IOPub messages for it until the kernel
reports `idle`: streams, results and tracebacks become text, `image/png` and `image/jpeg` payloads
(matplotlib's inline backend, `display(Image(...))`) become images. Past the time limit it asks for
an interrupt and gives the kernel a few seconds to come back; the caller restarts one that does not.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from queue import Empty
from typing import Any, Literal, Protocol

from .output import CappedText, clean

# How long an interrupted kernel may take to report idle before it counts as stuck.
INTERRUPT_GRACE = 5.0
# How often a silent wait checks that the kernel process is still there.
LIVENESS_INTERVAL = 1.0
IMAGE_TYPES = ("image/png", "image/jpeg")


class KernelChannels(Protocol):
    """The part of jupyter_client's AsyncKernelClient an execution needs (the gateway client has it too)."""

    def execute(self, code: str, silent: bool = ..., store_history: bool = ..., allow_stdin: bool | None = ...) -> str: ...

    async def get_iopub_msg(self, timeout: float | None = ...) -> dict[str, Any]: ...

    async def get_shell_msg(self, timeout: float | None = ...) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Image:
    data: bytes
    mime: str

    @property
    def extension(self) -> str:
        return "png" if self.mime == "image/png" else "jpg"


@dataclass(frozen=True)
class FileInfo:
    """A file under /mnt/data; `name` is relative to it."""

    name: str
    size: int

    @property
    def path(self) -> str:
        return f"/mnt/data/{self.name}"


Ending = Literal["completed", "timed_out", "stuck", "died"]


@dataclass
class KernelOutput:
    """What the kernel sent back for one request."""

    text: str
    omitted_chars: int
    images: list[Image]
    images_omitted: int
    error: str | None
    ending: Ending


@dataclass
class Execution:
    """The result of `Session.execute`, for the tool (and any other caller) to present."""

    logs: str
    images: list[Image] = field(default_factory=list)
    files: list[FileInfo] = field(default_factory=list)
    error: str | None = None
    timed_out: bool = False
    # The kernel lost its state during this call (a stuck interrupt, a crash, a memory kill).
    kernel_restarted: bool = False
    kernel_died: bool = False
    # The tool itself failed during this call (its output is lost); the kernel was restarted.
    tool_failure: str | None = None
    omitted_chars: int = 0
    images_omitted: int = 0
    files_omitted: int = 0
    # Set on the first execution of a session that replaced an expired or evicted one.
    session_notice: str | None = None
    timeout_seconds: float = 0.0

    @property
    def notes(self) -> list[str]:
        """What the model should be told besides the output itself."""
        notes = []
        if self.session_notice:
            notes.append(self.session_notice)
        if self.timed_out:
            notes.append(
                f"Execution stopped: it exceeded the {self.timeout_seconds:g} s time limit and was interrupted."
            )
        if self.kernel_died:
            notes.append("The Python process died (out of memory, a crash, or a resource limit).")
        if self.tool_failure:
            notes.append(
                f"The sandbox failed while running this code ({self.tool_failure}; flooding the output can "
                "cause it), so its output is lost."
            )
        if self.kernel_restarted:
            notes.append(
                "The kernel was restarted: variables and imports are gone (files in /mnt/data are kept)."
            )
        if self.omitted_chars:
            notes.append(
                f"The output was too long: {self.omitted_chars} characters in the middle were cut. "
                "Print less (e.g. df.head(), summaries) to see all of it."
            )
        if self.images_omitted:
            notes.append(f"{self.images_omitted} more images were displayed but not kept.")
        if self.files_omitted:
            notes.append(f"{self.files_omitted} more files were written but not returned.")
        return notes


async def run_code(
    channels: KernelChannels,
    code: str,
    *,
    timeout: float,
    max_chars: int,
    max_images: int,
    interrupt: Callable[[], Awaitable[None]],
    is_alive: Callable[[], Awaitable[bool]],
    silent: bool = False,
) -> KernelOutput:
    msg_id = channels.execute(code, silent=silent, store_history=not silent, allow_stdin=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    text = CappedText(max_chars)
    images: list[Image] = []
    images_omitted = 0
    error: str | None = None
    ending: Ending = "completed"
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            if ending == "timed_out":
                ending = "stuck"
                break
            ending = "timed_out"
            await interrupt()
            deadline = loop.time() + INTERRUPT_GRACE
            continue
        try:
            msg = await channels.get_iopub_msg(timeout=min(remaining, LIVENESS_INTERVAL))
        except Empty:
            if not await is_alive():
                ending = "died"
                break
            continue
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            text.append(clean(content.get("text", "")))
        elif kind in ("execute_result", "display_data"):
            data = content.get("data", {})
            image_type = next((t for t in IMAGE_TYPES if t in data), None)
            if image_type is not None:
                if len(images) < max_images:
                    images.append(Image(base64.b64decode(data[image_type]), image_type))
                else:
                    images_omitted += 1
            elif "text/plain" in data:
                text.append(clean(data["text/plain"]) + "\n")
        elif kind == "error":
            if ending == "timed_out" and content.get("ename") == "KeyboardInterrupt":
                continue  # our own interrupt; the note says so
            error = clean(f"{content.get('ename', 'Error')}: {content.get('evalue', '')}")
            text.append(clean("\n".join(content.get("traceback", []))) + "\n")
        elif kind == "status" and content.get("execution_state") == "idle":
            break
    if ending in ("completed", "timed_out"):
        await _drain_reply(channels, msg_id)
    return KernelOutput(
        text=text.render().rstrip("\n"),
        omitted_chars=text.omitted,
        images=images,
        images_omitted=images_omitted,
        error=error,
        ending=ending,
    )


async def _drain_reply(channels: KernelChannels, msg_id: str) -> None:
    """Read the execute_reply so replies never pile up unread on the shell channel."""
    while True:
        try:
            reply = await channels.get_shell_msg(timeout=2.0)
        except Empty:
            return
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return
