"""jupyter_client's kernel lifecycle, with the kernel process started inside the session's jail.

A `KernelProvisioner` is jupyter_client's extension point for "launch the kernel somewhere else":
the manager still writes the connection file, restarts, interrupts and kills through its usual
code, and only the launch differs. Two things make a jailed launch different from a local one:

* the jail sees its socket directory at a fixed path (`/run/kernel`), so it reads a copy of the
  connection file whose `ip` (the socket path prefix of the `ipc` transport) is that path;
* the launcher is nsjail, started so that it dies with the server: PR_SET_PDEATHSIG, which nsjail
  itself sets again on the jailed process, so a SIGKILLed server leaves no kernel behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner

from .figures import SHOW_OPEN_FIGURES
from .jail import wait_until_uid_free

PR_SET_PDEATHSIG = 1
# Seconds a launch waits for a previous jail of the same uid to be gone before starting anyway.
PREVIOUS_JAIL_WAIT = 10.0

# The kernel's own options: no history database to write at start, no colour codes in tracebacks,
# figures of every matplotlib backend shown.
KERNEL_ARGS = [
    "--HistoryManager.enabled=False",
    "--InteractiveShell.colors=nocolor",
    f"--IPKernelApp.exec_lines={SHOW_OPEN_FIGURES}",
]

_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl


def _die_with_parent() -> None:  # runs in the forked child, before exec
    # The "parent" of PR_SET_PDEATHSIG is the forking thread: kernels are launched from the event
    # loop's thread, which lives as long as the server.
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def kernel_spec(python: str) -> KernelSpec:
    return KernelSpec(
        argv=[python, "-m", "ipykernel_launcher", "-f", "{connection_file}", *KERNEL_ARGS],
        display_name="Python 3",
        language="python",
        # Interrupts travel as control messages: a signal sent to nsjail would not reach the kernel.
        interrupt_mode="message",
    )


class JailProvisioner(LocalProvisioner):
    """Launches the kernel command through `wrap` (nsjail …), with a clean environment."""

    wrap: Callable[[list[str]], list[str]] = staticmethod(lambda argv: argv)
    # Where the jail finds its connection file and sockets; None when the kernel shares our view.
    jail_connection_file: Path | None = None  # the host path of the jail's copy
    jail_connection_path: str | None = None  # the same file as the jail sees it
    jail_socket_prefix: str | None = None
    jail_owner: tuple[int, int] | None = None
    environment: dict[str, str] | None = None  # None would inherit ours: always set per launch
    working_dir: str | None = None
    log_path: Path | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = await super().pre_launch(**kwargs)
        if self.jail_owner is not None:
            # A restart keeps the session's uid, and the previous jail's processes (a fork bomb's
            # leftovers) die asynchronously after it is killed: until they are gone they count against
            # the per-uid process limit, and a kernel started meanwhile dies before it answers.
            await asyncio.to_thread(wait_until_uid_free, self.jail_owner[0], PREVIOUS_JAIL_WAIT)
        cmd: list[str] = kwargs["cmd"]
        km = self.parent
        if self.jail_connection_file is not None and km is not None:
            host_file = os.path.realpath(km.connection_file)
            info = json.loads(Path(host_file).read_text())
            info["ip"] = self.jail_socket_prefix
            self.jail_connection_file.write_text(json.dumps(info))
            os.chmod(self.jail_connection_file, 0o600)
            if self.jail_owner is not None:
                os.chown(self.jail_connection_file, *self.jail_owner)
            cmd = [self.jail_connection_path if arg == host_file else arg for arg in cmd]
        kwargs["cmd"] = self.wrap(cmd)
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict[str, Any]:
        # Popen on the loop's thread, on purpose: PR_SET_PDEATHSIG ties the child to the forking thread.
        if self.environment is None:
            raise RuntimeError("the kernel environment must be set explicitly")
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.environment,
                cwd=self.working_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - async-signal-safe enough: one prctl call
                close_fds=True,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        self.pid = self.process.pid
        self.pgid = self.process.pid
        self.cwd = self.working_dir
        return self.connection_info


class SandboxedKernelManager(AsyncKernelManager):
    """An AsyncKernelManager whose kernel spec and provisioner are given, not looked up on disk."""

    def use(self, spec: KernelSpec, provisioner: JailProvisioner) -> None:
        self._kernel_spec = spec
        provisioner.kernel_spec = spec
        self.provisioner = provisioner
