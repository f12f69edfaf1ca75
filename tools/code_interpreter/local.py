"""Sessions on this machine: one jailed ipykernel per key, spoken to over ZMQ `ipc` sockets.

Every kernel (and its nsjail) is a child of the server process: `aclose` stops them all, and a
server killed outright takes them along (PR_SET_PDEATHSIG, see provisioner.py). A session's host
directory holds its /mnt/data and sockets and goes when the session stops; directories left by a
server that died are removed by the next one that starts on the machine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import zmq.asyncio
from jupyter_client.asynchronous import AsyncKernelClient

from . import files
from .budget import RLIMITS_ONLY, Budget
from .budget import detect as detect_budget
from .config import CodeInterpreterConfig
from .errors import CodeInterpreterError, SessionStartFailed
from .execution import FileInfo
from .jail import (
    SOCKET_DIR,
    Identity,
    Jail,
    SessionPaths,
    UidLeases,
    data_limited,
    data_mount_problem,
    identity_for_slot,
    unmount_under,
)
from .kernel import SESSION_ENDED, SHUTTING_DOWN, KernelSession, KernelStore
from .provisioner import JailProvisioner, SandboxedKernelManager, kernel_spec
from .store import UnavailableStore

log = logging.getLogger(__name__)

BASE_PREFIX = "assistgraph-code-"
OWNER_FILE = "owner.pid"
SESSION_ID_CHARS = 12
SOCKET_NAME = "k"
# sun_path holds 108 bytes with its terminating NUL.
MAX_SOCKET_PATH = 107


class LocalSession(KernelSession):
    def __init__(self, store: LocalSessionStore, key: str, slot: int, notice: str | None) -> None:
        super().__init__(store.config, key, secrets.token_hex(SESSION_ID_CHARS // 2), notice)
        self.slot = slot
        self.paths = SessionPaths(store.base / self.id)
        # Set by start(): a server running as root leases a host uid of its own for the jail.
        self.identity: Identity | None = None
        self._uid_lease: int | None = None
        self._store = store
        self._km: SandboxedKernelManager | None = None
        self._client: AsyncKernelClient | None = None

    @property
    def _owner(self) -> tuple[int, int] | None:
        if self.identity is None or self.identity.user_namespace:
            return None
        return self.identity.uid, self.identity.gid

    async def start(self) -> None:
        store = self._store
        if store.jail is not None:
            if os.geteuid() == 0:
                index, self._uid_lease = await asyncio.to_thread(store.uid_leases.acquire, store.config.host_uid_base)
                self.identity = identity_for_slot(store.config, index)
            else:
                self.identity = identity_for_slot(store.config, self.slot)
        await asyncio.to_thread(self.paths.create, self.identity, self._config.data_mb)
        store, paths = self._store, self.paths
        km = SandboxedKernelManager(
            transport="ipc",
            ip=str(paths.sockets / SOCKET_NAME),
            connection_file=str(paths.connection_file),
            context=store.zmq_context,
            kernel_id=self.id,
            shutdown_wait_time=1.0,
        )
        spec = kernel_spec(store.python)
        provisioner = JailProvisioner(kernel_id=self.id, kernel_spec=spec, parent=km)
        provisioner.log_path = paths.log_file
        if store.jail is not None and self.identity is not None:
            jail, identity = store.jail, self.identity
            provisioner.wrap = lambda argv: jail.command(paths, identity, argv)
            provisioner.jail_connection_file = paths.jail_connection_file
            provisioner.jail_connection_path = f"{SOCKET_DIR}/{paths.jail_connection_file.name}"
            provisioner.jail_socket_prefix = f"{SOCKET_DIR}/{SOCKET_NAME}"
            provisioner.jail_owner = self._owner
            provisioner.environment = {}
        else:
            provisioner.environment = store.unsandboxed_environment
            provisioner.working_dir = str(paths.data)
        km.use(spec, provisioner)
        self._km = km
        try:
            await km.start_kernel()
            await self._connect()
        except Exception as exc:
            # The reason names host paths: it goes to the log, the model gets the gist.
            reason = await asyncio.to_thread(_last_line, paths.log_file)
            log.error("code_interpreter: session %s did not start (%s; %s)", self.id, type(exc).__name__, reason)
            await self.stop()
            raise SessionStartFailed("The Python sandbox did not start. Try again in a moment.") from exc

    async def _connect(self) -> None:
        assert self._km is not None
        if self._client is not None:
            self._client.stop_channels()
        client = self._km.client(context=self._store.zmq_context)
        client.start_channels(hb=False)
        self._client = client
        await client.wait_for_ready(timeout=self._config.startup_timeout)

    def _channels(self) -> AsyncKernelClient:
        assert self._client is not None
        return self._client

    async def _ready(self) -> bool:
        if self._client is None:
            raise CodeInterpreterError(SESSION_ENDED)
        # A kernel that died between calls (CPU-time limit, a crash) is replaced before the code runs.
        return not await self._is_alive() and await self._restart()

    async def _interrupt(self) -> None:
        if self._km is not None and self._km.has_kernel:
            await self._km.interrupt_kernel()

    async def _is_alive(self) -> bool:
        return self._km is not None and await self._km.is_alive()

    async def _restart(self) -> bool:
        if self._km is None:
            return False
        try:
            await self._km.restart_kernel(now=True)
            await self._connect()
        except Exception:  # a kernel that cannot come back ends its session
            log.exception("code_interpreter: session %s could not restart its kernel", self.id)
            self.dead = True
            return False
        return True

    async def _snapshot(self) -> files.Snapshot:
        return await asyncio.to_thread(files.snapshot, str(self.paths.data))

    async def put_file(self, name: str, data: bytes) -> str:
        if len(data) > self._config.max_file_bytes:
            raise files.FileTooLarge(
                f"{name} is {len(data)} bytes, over the {self._config.max_file_bytes}-byte limit of the sandbox"
            )
        self.last_used = time.monotonic()
        return await asyncio.to_thread(files.write_file, str(self.paths.data), name, data, self._owner)

    async def read_file(self, name: str) -> bytes:
        return await asyncio.to_thread(files.read_file, str(self.paths.data), name, self._config.max_file_bytes)

    async def list_files(self) -> list[FileInfo]:
        snapshot = await self._snapshot()
        return [FileInfo(name, size) for name, (size, _) in sorted(snapshot.items())]

    async def stop(self) -> None:
        self.dead = True
        if self._client is not None:
            self._client.stop_channels()
            self._client = None
        if self._km is not None:
            try:
                if self._km.has_kernel:
                    await self._km.shutdown_kernel(now=True)
            except Exception:  # the process is gone either way; the directory must go too
                log.exception("code_interpreter: stopping session %s failed", self.id)
            self._km = None
        await asyncio.to_thread(self.paths.remove)
        if self._uid_lease is not None:
            UidLeases.release(self._uid_lease)  # only once the jail's processes are gone
            self._uid_lease = None


class LocalSessionStore(KernelStore[LocalSession]):
    """Jailed kernels on this machine, one per key, stopped after `idle_timeout` without use."""

    def __init__(self, config: CodeInterpreterConfig, base: Path, jail: Jail | None) -> None:
        super().__init__(config)
        self.base = base
        self.jail = jail
        self.python = jail.inside_python if jail else sys.executable
        self.zmq_context = zmq.asyncio.Context()
        self.unsandboxed_environment = _unsandboxed_environment(config) if jail is None else {}
        self._free_slots = list(range(config.max_sessions))
        self.uid_leases = UidLeases()

    @classmethod
    async def open(cls, config: CodeInterpreterConfig) -> LocalSessionStore | UnavailableStore:
        base = await asyncio.to_thread(_make_base, config.sessions_dir)
        socket_path = base / ("0" * SESSION_ID_CHARS) / "run" / f"{SOCKET_NAME}-99"
        if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH:
            reason = f"the sessions directory {base.parent} is too long a path for unix sockets"
            log.error("code_interpreter disabled: %s (set a shorter sessions dir)", reason)
            await asyncio.to_thread(shutil.rmtree, base, True)
            return UnavailableStore(reason)
        jail = None
        if not config.unsandboxed:
            if config.data_mb and data_limited():
                problem = await asyncio.to_thread(data_mount_problem, base)
                if problem is not None:
                    log.warning("code_interpreter: /mnt/data cannot be size-limited here (%s)", problem)
                    config = replace(config, data_mb=0)
            jail, reason = await _working_jail(config, base)
            if jail is None:
                log.error("code_interpreter disabled: no working sandbox on this machine (%s)", reason)
                await asyncio.to_thread(shutil.rmtree, base, True)
                return UnavailableStore("no working sandbox on this machine")
            log.info("code_interpreter: %s", _limits_line(config, jail.budget))
        else:
            log.warning("code_interpreter runs code UNSANDBOXED, as the server's user (unsandboxed setting)")
        store = cls(config, base, jail)
        store.start_reaper()
        return store

    @property
    def limits(self) -> str:
        """What bounds a session's resources here: `cgroup v2`, `cgroup v1`, `rlimits` or `none`."""
        return self.jail.budget.kind if self.jail is not None else "none"

    @property
    def budgets(self) -> dict[str, float]:
        """The figures in force per session (memory and processes per process under `rlimits`; 0: none)."""
        if self.jail is None:
            return {}
        config = self.config
        return {
            "memory_mb": config.memory_mb,
            "max_processes": config.max_processes,
            "cpu_quota": _cpu_quota(config, self.jail.budget),
            "cpus": config.cpus,
            "data_mb": config.data_mb if data_limited() else 0,
        }

    async def _open(self, key: str, replacing: LocalSession | None) -> LocalSession:
        if replacing is not None:
            self._sessions.pop(key, None)
            self._release(replacing)
            await replacing.stop()
            self._remember_end(key, "ended")
        notice = self._notice_for(key)
        if not self._free_slots:
            await self._evict_one()
        slot = self._free_slots.pop(0)
        session = LocalSession(self, key, slot, notice)
        try:
            await session.start()
        except BaseException:
            self._free_slots.append(slot)
            raise
        if self._closed:
            await session.stop()
            raise CodeInterpreterError(SHUTTING_DOWN)
        self._sessions[key] = session
        log.info("code_interpreter: session %s started (%d running)", session.id, len(self._sessions))
        return session

    async def _evict_one(self) -> None:
        idle = [s for s in self._sessions.values() if not s.busy]
        if not idle:
            raise CodeInterpreterError(
                "Too many Python sessions are busy on this server right now; try again in a moment."
            )
        victim = min(idle, key=lambda s: s.last_used)
        await self._end(victim, "evicted")

    def _release(self, session: LocalSession) -> None:
        if session.slot not in self._free_slots:
            self._free_slots.append(session.slot)
            self._free_slots.sort()

    async def _end(self, session: LocalSession, reason: str) -> None:
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        self._remember_end(session.key, reason)
        await session.stop()
        self._release(session)
        log.info("code_interpreter: session %s stopped (%s)", session.id, reason)

    async def stop(self, key: str) -> None:
        session = self._sessions.pop(key, None)
        if session is not None:
            await session.stop()
            self._release(session)
            log.info("code_interpreter: session %s stopped", session.id)

    async def reap_idle(self) -> list[str]:
        limit = time.monotonic() - self.config.idle_timeout
        expired = [s for s in self._sessions.values() if not s.busy and s.last_used < limit]
        await asyncio.gather(*(self._end(s, "idle") for s in expired))
        if self.jail is not None:
            await asyncio.to_thread(self.jail.budget.sweep)
        return [s.key for s in expired]

    async def _disconnect(self, session: LocalSession) -> None:
        await session.stop()

    async def _release_resources(self) -> None:
        self.zmq_context.destroy(linger=0)
        await asyncio.to_thread(_remove_base, self.base)


async def _working_jail(config: CodeInterpreterConfig, base: Path) -> tuple[Jail | None, str]:
    """The jail with the best budget that runs here, or None and why no jail does."""
    try:
        budget = await asyncio.to_thread(detect_budget) if config.cgroups else Budget("rlimits", reason="cgroups off")
        jail = Jail.for_config(config, budget)
        reason = await jail.probe(base, UidLeases())
        if reason is not None and budget is not RLIMITS_ONLY:
            # A cgroup this server may create but not use (a host that refuses to move the jail
            # into it): per-process limits are still a sandbox.
            jail = replace(jail, budget=Budget("rlimits", reason=f"{budget.kind} refused: {reason}"))
            reason = await jail.probe(base, UidLeases())
    except Exception as exc:  # noqa: BLE001 - any failure to set up the jail means "no sandbox"
        return None, f"{type(exc).__name__}: {exc}"
    return (jail, "") if reason is None else (None, reason)


def _limits_line(config: CodeInterpreterConfig, budget: Budget) -> str:
    if not config.data_mb:
        data = "unlimited"
    else:
        data = f"{config.data_mb} MB" if data_limited() else "unlimited (the server is not root)"
    scope = "each session" if budget.kind != "rlimits" else "each process"
    quota = _cpu_quota(config, budget)
    cpu = f"{quota:g} core(s) of CPU time" if quota else "no CPU quota"
    return (
        f"limits by {budget.describe()}: {config.memory_mb} MB of memory and {config.max_processes} processes "
        f"for {scope}, {cpu}, {config.cpus} CPU(s); /mnt/data {data}"
    )


def _cpu_quota(config: CodeInterpreterConfig, budget: Budget) -> float:
    """The CPU quota in force per session (cores; 0: none)."""
    return config.cpu_quota if budget.bounds_cpu else 0.0


def _make_base(parent: Path | None) -> Path:
    """A private directory for this server's sessions; removes those of servers that are gone."""
    root = Path(parent) if parent else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{BASE_PREFIX}*"):
        try:
            pid = int((stale / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _process_exists(pid):
            unmount_under(stale)  # /mnt/data tmpfs of its sessions
            shutil.rmtree(stale, ignore_errors=True)
    base = Path(tempfile.mkdtemp(prefix=BASE_PREFIX, dir=root))
    (base / OWNER_FILE).write_text(str(os.getpid()))
    return base


def _remove_base(base: Path) -> None:
    unmount_under(base)
    shutil.rmtree(base, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_line(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][-300:] if lines else ""


def _unsandboxed_environment(config: CodeInterpreterConfig) -> dict[str, str]:
    # Same clean environment as in a jail: none of the server's variables (keys, database URL).
    jail = Jail(config=config, nsjail=Path("/nonexistent"), readonly=())
    return jail.environment()
