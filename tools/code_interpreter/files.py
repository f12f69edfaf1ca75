"""Files under a session's /mnt/data: name rules, change detection, and safe access from the host side.

The host directory behind /mnt/data is written by code we do not trust, which may leave symlinks
(`/mnt/data/x -> /etc/shadow`), swap a directory for a symlink while we walk, or create FIFOs. The
server reads and writes there with its own rights, so every access walks the path one component
at a time from a directory descriptor with O_NOFOLLOW (nothing in the standard library opens a
path "beneath" a directory like Linux's openat2 RESOLVE_BENEATH does), and only regular files count.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import PurePosixPath

from .errors import FileNotInSession, FileTooLarge, InvalidFileName
from .execution import FileInfo

# A walk stops after this many entries, so a directory of a million files costs bounded time.
MAX_WALK_ENTRIES = 10_000
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024

Snapshot = dict[str, tuple[int, int]]  # relative name -> (size, mtime_ns)


def check_name(name: str) -> str:
    """A relative path under /mnt/data (`report.csv`, `out/chart.png`), normalised; else InvalidFileName."""
    name = name.removeprefix("/mnt/data/")
    parts = name.split("/")
    if (
        not name
        or "\x00" in name
        or name.startswith("/")
        or len(os.fsencode(name)) > MAX_PATH_BYTES
        or any(p in ("", ".", "..") or len(os.fsencode(p)) > MAX_NAME_BYTES for p in parts)
    ):
        raise InvalidFileName(f"{name!r} is not a valid file name under /mnt/data")
    return str(PurePosixPath(*parts))


def changed_files(before: Snapshot, after: Snapshot) -> list[FileInfo]:
    """Files created or modified between two snapshots, by name."""
    return [FileInfo(name, size) for name, (size, mtime) in sorted(after.items()) if before.get(name) != (size, mtime)]


def snapshot(root: str) -> Snapshot:
    """Regular files under root (blocking: run in a thread). Symlinks and special files are ignored."""
    found: Snapshot = {}
    budget = MAX_WALK_ENTRIES
    stack: list[tuple[int, str]] = []
    try:
        stack.append((_open_dir(root), ""))
    except OSError:
        return found
    while stack:
        fd, prefix = stack.pop()
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    budget -= 1
                    if budget < 0:
                        break
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    name = f"{prefix}{entry.name}"
                    if stat.S_ISREG(info.st_mode):
                        found[name] = (info.st_size, info.st_mtime_ns)
                    elif stat.S_ISDIR(info.st_mode):
                        try:
                            stack.append((_open_dir(entry.name, fd), f"{name}/"))
                        except OSError:
                            continue
        finally:
            os.close(fd)
    return found


def read_file(root: str, name: str, max_bytes: int) -> bytes:
    """The bytes of a regular file under root (blocking: run in a thread)."""
    parts = check_name(name).split("/")
    parent = _walk(root, parts[:-1], create=False, owner=None)
    try:
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            raise FileNotInSession(f"/mnt/data/{name} does not exist or is not a regular file") from exc
    finally:
        os.close(parent)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FileNotInSession(f"/mnt/data/{name} is not a regular file")
        if info.st_size > max_bytes:
            raise FileTooLarge(f"/mnt/data/{name} is {info.st_size} bytes, over the {max_bytes}-byte limit")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooLarge(f"/mnt/data/{name} grew over the {max_bytes}-byte limit while being read")
    return data


def write_file(root: str, name: str, data: bytes, owner: tuple[int, int] | None) -> str:
    """Create or replace a file under root, creating parent directories (blocking: run in a thread).

    `owner` is the jail's host uid/gid when it differs from ours, so the code can change the file.
    """
    normalised = check_name(name)
    parts = normalised.split("/")
    parent = _walk(root, parts[:-1], create=True, owner=owner)
    try:
        # Whatever the code left at that name (a symlink above all) goes; the new file is ours.
        try:
            os.unlink(parts[-1], dir_fd=parent)
        except FileNotFoundError:
            pass
        except IsADirectoryError as exc:
            raise InvalidFileName(f"/mnt/data/{normalised} is a directory") from exc
        fd = os.open(
            parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=parent
        )
        try:
            with os.fdopen(fd, "wb") as file:
                if owner is not None:
                    os.fchown(file.fileno(), *owner)
                file.write(data)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            os.unlink(parts[-1], dir_fd=parent)  # no half-written file left behind
            raise FileTooLarge(f"/mnt/data is full: {normalised} ({len(data)} bytes) does not fit") from exc
    finally:
        os.close(parent)
    return f"/mnt/data/{normalised}"


def _open_dir(name: str, dir_fd: int | None = None) -> int:
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _walk(root: str, parts: list[str], *, create: bool, owner: tuple[int, int] | None) -> int:
    fd = _open_dir(root)
    try:
        for part in parts:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    if owner is not None:
                        os.chown(part, *owner, dir_fd=fd, follow_symlinks=False)
                except FileExistsError:
                    pass
            try:
                next_fd = _open_dir(part, fd)
            except OSError as exc:
                raise FileNotInSession(f"{part!r} under /mnt/data is not a directory") from exc
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd
