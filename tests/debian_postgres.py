"""A PostgreSQL cluster of the system's own server (Debian's `postgresql` package, with pgvector), as a
deployment's external database: initdb into a fresh directory, started on an ephemeral port with its
unix socket in that directory, stopped at the end.

Locally without the server these tests skip; in CI (CI=true) they fail, as .ci/run installs it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port

PG_ROOT = Path("/usr/lib/postgresql")
PG_SHARE = Path("/usr/share/postgresql")
SYSTEM_USER = "postgres"  # Postgres refuses to run as root; Debian's package creates this user


def _version(path: Path) -> float:
    try:
        return float(path.name)
    except ValueError:
        return -1


def find_server() -> tuple[Path | None, str]:
    """The bin directory of the newest installed server that has pgvector, or None and what is missing."""
    versions = sorted((p for p in PG_ROOT.glob("*") if (p / "bin" / "initdb").exists()), key=_version, reverse=True)
    if not versions:
        return None, "Debian's PostgreSQL server (apt-get install postgresql) is not installed"
    for version in versions:
        if (PG_SHARE / version.name / "extension" / "vector.control").exists():
            return version / "bin", ""
    return None, f"pgvector is not installed for PostgreSQL {versions[0].name}"


def require_server() -> Path:
    """The server's bin directory; skip without it, except in CI, where it must be there."""
    bindir, problem = find_server()
    if bindir is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem}: CI must provide it (.ci/run installs it)", pytrace=False)
        pytest.skip(problem)
    return bindir


@dataclass
class Cluster:
    url: str  # the superuser's connection to database `postgres`, over the unix socket
    directory: Path
    bindir: Path

    def database(self, name: str) -> str:
        """A new database on the cluster, and its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url.replace("/postgres?", f"/{name}?")


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", SYSTEM_USER, "--", *cmd]


def start(bindir: Path) -> tuple[Cluster, Callable[[], None]]:
    """A new cluster on an ephemeral port; returns it and the function that stops it (and removes it)."""
    # Its own directory under the system temp dir (not under a root-only test directory): the server's
    # user must reach the data and the socket.
    directory = Path(tempfile.mkdtemp(prefix="assistgraph-pg-"))
    data, socket_dir = directory / "data", directory
    if os.geteuid() == 0:
        user = pwd.getpwnam(SYSTEM_USER)
        os.chown(directory, user.pw_uid, user.pw_gid)
    port = free_port()
    log = directory / "server.log"

    def run(*cmd: str, timeout: float = 120) -> None:
        result = subprocess.run(_as_server_user([*cmd]), capture_output=True, text=True, timeout=timeout, cwd=directory)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")

    # Unix socket only, no fsync: nothing in this cluster outlives the tests.
    options = f"-p {port} -k {socket_dir} -c listen_addresses='' -c fsync=off -c max_connections=300"
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
    except RuntimeError as exc:
        server_log = log.read_text(errors="replace") if log.exists() else ""
        shutil.rmtree(directory, ignore_errors=True)
        raise RuntimeError(f"{exc}\n{server_log}") from None

    def stop() -> None:
        try:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    url = f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"
    return Cluster(url, directory, bindir), stop
