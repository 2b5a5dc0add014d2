"""Database wiring: engines, transactions, and every difference between SQLite and PostgreSQL.

Everything outside this module (and the migrations) is dialect-free SQLAlchemy Core.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, NoReturn, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn

from service.metrics import DB_CONNECTIONS_IN_USE, DB_CONNECTIONS_WAITING, DB_FAILURES
from service.settings import Settings

T = TypeVar("T")


class DatabaseUnavailable(Exception):
    """The database cannot be reached or did not answer in time; the request changed nothing."""


class DatabaseReadOnly(DatabaseUnavailable):
    """The database takes no writes (a hot standby, or a read-only default): nothing was written."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "the database is read-only (a hot standby?): it takes no writes; point goldtrail at the primary"
            + (f" ({detail})" if detail else "")
        )


class StaleConnection(DatabaseUnavailable):
    """The database had dropped this pooled connection (it restarted) before anything was committed:
    running the same work again on a fresh connection is safe, and is what callers do."""


class CommitOutcomeUnknown(DatabaseUnavailable):
    """The connection was lost while COMMIT was on its way: the write may or may not have happened."""


class RowMovedOn(Exception):
    """A guarded UPDATE found its row at another version: someone else wrote first; nothing was committed."""


class UniqueViolation(Exception):
    """A write ran into a unique constraint or index; `constraint` names it on either backend."""

    def __init__(self, constraint: str | None) -> None:
        super().__init__(f"unique constraint {constraint} violated")
        self.constraint = constraint


class Deadline:
    """When a request's database work must be done (local monotonic time), and whether the request was
    already answered 503 because it was not."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.abandoned = False

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


# How fast two hosts' clocks may drift apart, as a share of the time elapsed; far above what NTP allows.
_CLOCK_DRIFT = 1e-3
# A fixed allowance on top: the event loop's timers may fire a little before the monotonic deadline.
_CLOCK_SLACK = 0.05
# How long a reading of the database's clock is used before it is read again.
_CLOCK_MAX_AGE = 30.0
_CLOCK_INFO_KEY = "goldtrail_server_clock"


class ServerClock(NamedTuple):
    """The database server's clock as read once over a connection: `server_time` was read at some local moment
    before `answered` (local monotonic time), so at a later local moment the server's clock reads at least
    `server_time + (moment - answered)`, give or take the drift between the hosts."""

    server_time: datetime
    answered: float

    def earliest_reading_at(self, moment: float) -> datetime:
        """A time the server's clock has certainly passed by local monotonic `moment`: a write that the server
        checks against it and finds it past ran after `moment`, or close enough before it."""
        elapsed = moment - self.answered
        allowance = _CLOCK_SLACK + _CLOCK_DRIFT * abs(elapsed)
        return self.server_time + timedelta(seconds=elapsed - allowance)


def _normalised(url: str, *, asynchronous: bool) -> sa.URL:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite" if asynchronous else "sqlite")
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")


def async_url(url: str) -> sa.URL:
    return _normalised(url, asynchronous=True)


def sync_url(url: str) -> sa.URL:
    return _normalised(url, asynchronous=False)


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def configure_sqlite(sync_engine: sa.Engine) -> None:
    """WAL for readers beside a writer, a busy timeout instead of 'database is locked', FULL sync for
    durability, and BEGIN IMMEDIATE for writes so two writers queue rather than deadlock on upgrade."""

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


def _is_unavailable(error: BaseException) -> bool:
    """The database cannot be reached (or SQLite's file is locked): from SQLAlchemy or a driver alike."""
    if isinstance(error, sa.exc.TimeoutError | ConnectionError | TimeoutError | OSError):
        return True
    if isinstance(error, sa.exc.DBAPIError):
        return error.connection_invalidated or _is_unavailable(error.orig)
    if isinstance(error, psycopg.Error):
        # Class 08 is connection trouble, 57P0x an admin shutdown; psycopg's own connection failures
        # carry no SQLSTATE at all.
        sqlstate = error.sqlstate or ""
        return sqlstate.startswith(("08", "57P")) or (isinstance(error, psycopg.OperationalError) and not sqlstate)
    if isinstance(error, sqlite3.OperationalError):
        return any(sign in str(error).lower() for sign in ("locked", "unable to open", "disk i/o"))
    return False


_OPENED_AT = "goldtrail_opened_at"


def _replace_distrusted_connections(sync_engine: sa.Engine, trusted_since: Callable[[], float]) -> None:
    """Connections opened before `trusted_since()` are replaced when checked out: the pool's documented way,
    a DisconnectionError raised at checkout, makes it open a fresh one instead."""

    @event.listens_for(sync_engine, "connect")
    def _opened(_dbapi_connection, record) -> None:
        record.info[_OPENED_AT] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _checked_out(_dbapi_connection, record, _proxy) -> None:
        if record.info.get(_OPENED_AT, 0.0) < trusted_since():
            raise sa.exc.DisconnectionError("opened before the database was last found unreachable")


async def _server_clock(pooled: Any) -> ServerClock:
    """The database's clock as last read over this connection, read again when the reading is old."""
    clock: ServerClock | None = pooled.info.get(_CLOCK_INFO_KEY)
    if clock is None or time.monotonic() - clock.answered > _CLOCK_MAX_AGE:
        connection: psycopg.AsyncConnection = pooled.driver_connection
        await connection.set_autocommit(True)  # a bare read, leaving no transaction open
        try:
            cursor = await connection.execute("SELECT clock_timestamp()")
            (server_time,) = await cursor.fetchone()
        finally:
            await connection.set_autocommit(False)
        clock = pooled.info[_CLOCK_INFO_KEY] = ServerClock(server_time, time.monotonic())
    return clock


class Database:
    """An engine plus the two kinds of transaction a request uses."""

    def __init__(self, engine: AsyncEngine, timeout_seconds: float = 5.0) -> None:
        self.engine = engine
        # A request's transaction must finish within this, or it is cancelled and answered 503: a
        # database that accepts connections but never answers must not hang requests.
        self.timeout_seconds = timeout_seconds
        self.dialect = engine.dialect.name
        # SQLite allows one writer per file: queue this process's writers here instead of
        # spinning on the file lock (the busy timeout still covers other processes).
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self._trusted_since = 0.0
        _replace_distrusted_connections(engine.sync_engine, lambda: self._trusted_since)

    @classmethod
    def connect(cls, settings: Settings) -> Database:
        url = async_url(settings.database_url)
        if url.get_backend_name() == "sqlite":
            path = sqlite_path(settings.database_url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(
                url, pool_size=settings.db_pool_size, pool_timeout=settings.db_timeout_seconds, hide_parameters=True
            )
            configure_sqlite(engine.sync_engine)
        else:
            engine = create_async_engine(
                url,
                pool_size=settings.db_pool_size,
                max_overflow=0,
                pool_timeout=settings.db_timeout_seconds,
                hide_parameters=True,  # label values must never reach a log line through an error message
                connect_args={"connect_timeout": max(1, round(settings.db_timeout_seconds))},
            )
        return cls(engine, settings.db_timeout_seconds)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A read-write SQLAlchemy transaction, for operator jobs (rebuild) that take as long as they take:
        commits when the block ends, rolls back on any exception."""
        if self._write_lock is None:
            async with self._transaction(write=True) as conn:
                yield conn
        else:
            async with self._write_lock, self._transaction(write=True) as conn:
                yield conn

    @asynccontextmanager
    async def read(self, *, snapshot: bool = False) -> AsyncIterator[AsyncConnection]:
        """A read-only SQLAlchemy transaction with no time limit (exports, operator scans). With `snapshot`,
        every statement in it sees the database as of one moment, whatever commits meanwhile (SQLite's
        read transaction already does; PostgreSQL needs REPEATABLE READ)."""
        async with self._transaction(write=False, snapshot=snapshot) as conn:
            yield conn

    async def run_read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """A request's read: within the time limit, and once more on a fresh connection if the first was stale."""

        async def attempt(_deadline: Deadline) -> T:
            async with self.read() as conn:
                return await work(conn)

        try:
            return await self.within_time_limit(attempt)
        except StaleConnection:
            return await self.within_time_limit(attempt)

    async def run_write(self, work: Callable[[DriverTransaction], Awaitable[T]], *, optimistic: bool = False) -> T:
        """A request's write, on the driver connection with hand-written SQL, within the time limit.

        SQLAlchemy Core costs more CPU per statement than the database does for these. On PostgreSQL a
        write is either a locking transaction, pipelined (the reads a decision needs cost one round trip;
        the writes, the last check, COMMIT and the closing Sync travel in one more), or, when `optimistic`,
        reads without a lock and then every write as one statement (see PostgresOneStatement), which costs
        half the CPU. An optimistic write that lost a race raises RowMovedOn or UniqueViolation and changed
        nothing. SQLite's single writer is exclusive anyway, so there both are the same transaction.
        """

        async def attempt(deadline: Deadline) -> T:
            if self._write_lock is None:
                async with self._driver_transaction(deadline, optimistic) as tx:
                    return await work(tx)
            async with self._write_lock, self._driver_transaction(deadline, optimistic) as tx:
                return await work(tx)

        return await self.within_time_limit(attempt)

    async def within_time_limit(self, attempt: Callable[[Deadline], Awaitable[T]]) -> T:
        """Answer within the time limit even when the database hangs.

        The work runs in a task of its own that is left behind, not cancelled, when time is up:
        cancelling psycopg mid-statement makes it try to cancel on the server, which hangs just the
        same. What the abandoned attempt already sent cannot commit once the deadline has passed: the
        database checks the deadline itself as a write's last step (migration 0004), and an attempt that
        gets its answers back late rolls back instead of committing. So a 503 given here means nothing
        was written (unless COMMIT itself was in flight).
        """
        deadline = Deadline(self.timeout_seconds)
        task = asyncio.ensure_future(attempt(deadline))
        try:
            done, _ = await asyncio.wait({task}, timeout=deadline.remaining())
        except asyncio.CancelledError:
            deadline.abandoned = True
            task.add_done_callback(_forget)
            raise
        if done:
            return task.result()
        deadline.abandoned = True
        task.add_done_callback(_forget)
        DB_FAILURES.labels("unavailable").inc()
        raise DatabaseUnavailable(f"the database did not answer within {self.timeout_seconds:g}s")

    @asynccontextmanager
    async def _transaction(self, *, write: bool, snapshot: bool = False) -> AsyncIterator[AsyncConnection]:
        try:
            with DB_CONNECTIONS_WAITING.track_inprogress():
                conn = await self.engine.connect()
            try:
                with DB_CONNECTIONS_IN_USE.track_inprogress():
                    await conn.execution_options(write=write)
                    if snapshot and self.dialect == "postgresql":
                        await conn.execution_options(isolation_level="REPEATABLE READ")
                    async with conn.begin():
                        yield conn
            finally:
                await conn.close()
        except Exception as error:
            if self.dialect == "postgresql" and _is_unavailable(error):
                self._distrust_older_connections()
            _raise_translated(error, stale=not write)

    def _distrust_older_connections(self) -> None:
        """After a lost connection, every pooled connection opened before now is suspect (the server may have
        restarted): each is replaced at its next checkout, so the failure costs one request, not pool_size."""
        self._trusted_since = time.monotonic()

    @asynccontextmanager
    async def _driver_transaction(self, deadline: Deadline, optimistic: bool) -> AsyncIterator[DriverTransaction]:
        tx: DriverTransaction | None = None
        try:
            with DB_CONNECTIONS_WAITING.track_inprogress():
                # Straight from the pool: SQLAlchemy's Connection around it would cost CPU and do nothing here.
                pooled = await self.engine.raw_connection()
            try:
                with DB_CONNECTIONS_IN_USE.track_inprogress():
                    if self.dialect != "postgresql":
                        tx = SqliteTransaction(pooled.driver_connection)
                    else:
                        clock = await _server_clock(pooled)
                        kind = PostgresOneStatement if optimistic else PostgresTransaction
                        tx = kind(pooled.driver_connection, clock.earliest_reading_at(deadline.at))
                    try:
                        await tx.begin()
                        yield tx
                        if deadline.abandoned:
                            raise DatabaseUnavailable("the request was already answered 503: not committing")
                        await tx.commit()
                    except BaseException as error:
                        if self.dialect == "postgresql" and _is_unavailable(error):
                            self._distrust_older_connections()
                        try:
                            await tx.abort()
                        except Exception:
                            with contextlib.suppress(Exception):
                                await greenlet_spawn(pooled.invalidate)
                        raise
                    finally:
                        try:
                            await tx.release()
                        except Exception:
                            # Not fit to go back to the pool as it was lent; the write's outcome stands.
                            with contextlib.suppress(Exception):
                                await greenlet_spawn(pooled.invalidate)
            finally:
                await greenlet_spawn(pooled.close)  # back to the pool (SQLAlchemy's reset awaits the driver)
        except Exception as error:
            committing = tx is not None and tx.committing
            _raise_translated(error, stale=tx is not None and not committing, committing=committing)

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers and takes writes."""

        async def writable(conn: AsyncConnection) -> bool:
            if self.dialect != "postgresql":
                return (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
            return (await conn.execute(sa.text("SELECT current_setting('transaction_read_only')"))).scalar() == "off"

        if not await self.run_read(writable):
            raise DatabaseReadOnly()

    async def close(self) -> None:
        await self.engine.dispose()


Row = tuple[Any, ...]
_NAMED = re.compile(r"(?<![:\w]):(\w+)")


class DriverTransaction:
    """Hand-written SQL with `:name` parameters, on one backend's driver connection.

    Values go in and come out as the driver has them, except that SQLite gets and gives timestamps as the
    text SQLAlchemy stores there.

    Feed order (DESIGN.md §2): on PostgreSQL the feed is ordered by transaction id, which a transaction
    takes at its first write or row lock. A write must therefore read the label it builds on before it
    takes one, and then check, as it commits, that the label has not moved on: then its id is newer than
    that of the write it follows, and a label's versions come in order on the feed. Waiting for another
    writer (`queue`) uses a lock that takes no transaction id.
    """

    dialect: str
    committing = False  # from here on, a lost connection may or may not have committed

    def for_update(self, sql: str) -> str:
        """A SELECT that also locks its rows; SQLite's single writer (BEGIN IMMEDIATE) is exclusive anyway."""
        return sql

    async def queue(self, account_id: str, label_id: str) -> None:
        """Wait until the label's other queued writers are done, where this transaction queues (see each kind)."""

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Row | None:
        """Run a statement and wait for its first row (errors of statements queued before it surface here)."""
        raise NotImplementedError

    async def execute(self, sql: str, params: dict[str, Any]) -> None:
        """Run a statement whose result is not needed; PostgreSQL sends it with the next one that waits."""
        raise NotImplementedError

    async def execute_one(self, sql: str, params: dict[str, Any]) -> None:
        """Like `execute`, for an UPDATE that must change exactly one row, or the transaction fails with
        RowMovedOn (and nothing of it is committed)."""
        raise NotImplementedError

    async def release(self) -> None:
        """Leave the connection as the pool lent it, whatever happened."""


# A label's writers queue on a transaction-level advisory lock: unlike a row lock, it takes no transaction id.
# Two-int keys, a namespace of goldtrail's own (they never meet the single-bigint keys of migrations).
_LABEL_QUEUE_CLASS = 0x6774
_LABEL_KEY = f"{_LABEL_QUEUE_CLASS}, hashtext(%(queue_account)s || '/' || %(queue_label)s)"
# The last statement before COMMIT (migration 0004): refuses once the server's clock is past the deadline.
_WRITE_CHECK = "SELECT goldtrail_write_check(%(deadline)s, %(moved)s)"
ROW_MOVED_ON, TOO_LATE = "GT001", "GT002"


class PostgresTransaction(DriverTransaction):
    """A locking write, pipelined: statements are queued and sent together when a result is awaited, and
    the writes, the deadline check, COMMIT and the pipeline's closing Sync travel in one flush. An update is
    two round trips: the queue and the read, then the rest."""

    dialect = "postgresql"

    def __init__(self, connection: psycopg.AsyncConnection, deadline: datetime | None) -> None:
        self.connection = connection
        self.deadline = deadline
        self.pipeline: psycopg.AsyncPipeline | None = None

    @staticmethod
    @functools.cache
    def _sql(sql: str) -> str:
        """psycopg spells `:name` as `%(name)s`."""
        return _NAMED.sub(r"%(\1)s", sql)

    async def begin(self) -> None:
        self.pipeline = self.connection.pipeline()
        await self.pipeline.__aenter__()

    async def queue(self, account_id: str, label_id: str) -> None:
        await self.connection.execute(
            f"SELECT pg_advisory_xact_lock({_LABEL_KEY})", {"queue_account": account_id, "queue_label": label_id}
        )

    async def commit(self) -> None:
        self.committing = True
        await self.connection.execute(_WRITE_CHECK, {"deadline": self.deadline, "moved": True})
        await self.connection.execute("COMMIT")
        pipeline, self.pipeline = self.pipeline, None
        await pipeline.__aexit__(None, None, None)

    async def abort(self) -> None:
        if self.pipeline is not None:
            pipeline, self.pipeline = self.pipeline, None
            await pipeline.__aexit__(RuntimeError, RuntimeError("aborted"), None)
        await self.connection.rollback()

    def for_update(self, sql: str) -> str:
        return sql + " FOR UPDATE"

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Row | None:
        cursor = await self.connection.execute(self._sql(sql), params)
        return await cursor.fetchone()

    async def execute(self, sql: str, params: dict[str, Any]) -> None:
        await self.connection.execute(self._sql(sql), params)

    async def execute_one(self, sql: str, params: dict[str, Any]) -> None:
        # Not waited for, so it travels with COMMIT: a row count other than one raises ROW_MOVED_ON,
        # which aborts the transaction server-side before COMMIT can take effect.
        guarded = (
            f"WITH changed AS ({self._sql(sql)} RETURNING 1) "
            "SELECT goldtrail_write_check(NULL, (SELECT count(*) FROM changed) = 1)"
        )
        await self.connection.execute(guarded, params)


class PostgresOneStatement(DriverTransaction):
    """An optimistic write: reads run at once, in autocommit and without a lock; the writes are queued
    and sent at commit as one statement (each a CTE of it), which PostgreSQL runs as a transaction of
    its own. The statement ends with the write check: every guarded UPDATE moved exactly one row, no locking
    writer is queued on the label (an optimistic write yields to them rather than racing them), and the
    deadline has not passed; otherwise the whole statement, the event with it, is refused. Two round trips
    for an update, one for a create, and no BEGIN, COMMIT or pipeline Sync: psycopg spends about half the
    CPU of the pipelined transaction on it."""

    dialect = "postgresql"

    def __init__(self, connection: psycopg.AsyncConnection, deadline: datetime | None) -> None:
        self.connection = connection
        self.deadline = deadline
        self.writes: list[tuple[str, dict[str, Any], bool]] = []
        self.queued: dict[str, str] | None = None

    async def begin(self) -> None:
        await self.connection.set_autocommit(True)

    async def queue(self, account_id: str, label_id: str) -> None:
        self.queued = {"queue_account": account_id, "queue_label": label_id}

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Row | None:
        cursor = await self.connection.execute(PostgresTransaction._sql(sql), params)
        return await cursor.fetchone()

    async def execute(self, sql: str, params: dict[str, Any]) -> None:
        self.writes.append((sql, params, False))

    async def execute_one(self, sql: str, params: dict[str, Any]) -> None:
        self.writes.append((sql, params, True))

    async def commit(self) -> None:
        if not self.writes:
            return
        self.committing = True
        statement = _one_statement(tuple((sql, guarded) for sql, _, guarded in self.writes), self.queued is not None)
        params = {f"w{n}_{name}": value for n, (_, named, _) in enumerate(self.writes) for name, value in named.items()}
        await self.connection.execute(statement, {**params, **(self.queued or {}), "deadline": self.deadline})

    async def abort(self) -> None:
        """Nothing to undo: a statement that failed changed nothing, and none was sent before commit."""

    async def release(self) -> None:
        await self.connection.set_autocommit(False)  # SQLAlchemy's own transactions expect it off


@functools.cache
def _one_statement(writes: tuple[tuple[str, bool], ...], queued: bool) -> str:
    """`WITH w0 AS (... RETURNING 1), w1 AS (... RETURNING 1) SELECT goldtrail_write_check(deadline, …)`,
    parameters renamed per statement. The check's arguments read every CTE, so all the writes are done
    before the check reads the clock. The same writes give the same text, so psycopg prepares it once per
    connection."""
    parts, conditions = [], []
    for n, (sql, guarded) in enumerate(writes):
        renamed = _NAMED.sub(rf"%(w{n}_\1)s", sql)
        parts.append(f"w{n} AS ({renamed} RETURNING 1)")
        conditions.append(f"(SELECT count(*) FROM w{n}) {'= 1' if guarded else '>= 0'}")
    if queued:
        conditions.append(f"pg_try_advisory_xact_lock({_LABEL_KEY})")
    return f"WITH {', '.join(parts)} SELECT goldtrail_write_check(%(deadline)s, {' AND '.join(conditions)})"


class SqliteTransaction(DriverTransaction):
    """SQLite runs in this process: its one writer at a time (BEGIN IMMEDIATE) keeps a label's versions in
    position order, and a write that outlived its request is rolled back by the caller before COMMIT."""

    dialect = "sqlite"

    def __init__(self, connection) -> None:  # an aiosqlite.Connection
        self.connection = connection

    async def begin(self) -> None:
        await self.connection.execute("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        self.committing = True
        await self.connection.execute("COMMIT")

    async def abort(self) -> None:
        await self.connection.execute("ROLLBACK")

    @staticmethod
    def _params(params: dict[str, Any]) -> dict[str, Any]:
        return {k: sqlite_time(v) if isinstance(v, datetime) else v for k, v in params.items()}

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Row | None:
        cursor = await self.connection.execute(sql, self._params(params))
        return await cursor.fetchone()

    async def execute(self, sql: str, params: dict[str, Any]) -> None:
        await self.connection.execute(sql, self._params(params))

    async def execute_one(self, sql: str, params: dict[str, Any]) -> None:
        cursor = await self.connection.execute(sql, self._params(params))
        if cursor.rowcount != 1:
            raise RowMovedOn(f"{cursor.rowcount} rows changed where exactly one was expected")


def sqlite_time(moment: datetime) -> str:
    """A UTC time as SQLAlchemy's SQLite DATETIME stores it, so both paths read each other's rows."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _forget(task: asyncio.Future) -> None:
    """Collect the outcome of an abandoned attempt, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _translated(error: Exception, *, stale: bool, committing: bool = False) -> Exception:
    """One vocabulary for what callers handle, whichever path and driver raised it."""
    if isinstance(error, DatabaseUnavailable | UniqueViolation | RowMovedOn):
        return error
    if isinstance(error, TimeoutError):
        DB_FAILURES.labels("unavailable").inc()
        return DatabaseUnavailable("the database did not answer in time")
    if _is_unavailable(error):
        DB_FAILURES.labels("unavailable").inc()
        disconnected = _is_disconnect(error) or getattr(error, "connection_invalidated", False)
        kind = (
            CommitOutcomeUnknown if committing else StaleConnection if stale and disconnected else DatabaseUnavailable
        )
        return kind(str(error).strip().splitlines()[0])
    if isinstance(error, psycopg.errors.ReadOnlySqlTransaction) or (
        isinstance(error, sa.exc.DBAPIError) and isinstance(error.orig, psycopg.errors.ReadOnlySqlTransaction)
    ):
        DB_FAILURES.labels("unavailable").inc()
        return DatabaseReadOnly(str(error).strip().splitlines()[0])
    if constraint := _driver_unique_violation(error):
        return UniqueViolation(constraint)
    if isinstance(error, psycopg.Error) and error.sqlstate == ROW_MOVED_ON:
        return RowMovedOn(str(error))
    if isinstance(error, psycopg.Error) and error.sqlstate == TOO_LATE:
        DB_FAILURES.labels("unavailable").inc()
        return DatabaseUnavailable("the write reached the database after its deadline and was refused")
    if isinstance(error, sa.exc.DBAPIError | psycopg.Error | sqlite3.Error):
        DB_FAILURES.labels("error").inc()
    return error


def _raise_translated(error: Exception, *, stale: bool, committing: bool = False) -> NoReturn:
    translated = _translated(error, stale=stale, committing=committing)
    if translated is error:
        raise error
    raise translated from error


def _is_disconnect(error: BaseException) -> bool:
    """The server closed the connection (as on a restart), as opposed to refusing new ones."""
    if isinstance(error, psycopg.OperationalError):
        return error.sqlstate is None or error.sqlstate.startswith("57P")
    return False


def _driver_unique_violation(error: BaseException) -> str | None:
    if isinstance(error, psycopg.errors.UniqueViolation):
        return error.diag.constraint_name
    if isinstance(error, sqlite3.IntegrityError):
        match = _SQLITE_UNIQUE.search(str(error))
        return _SQLITE_CONSTRAINTS.get(match.group(1)) if match else None
    return None


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)$")
_SQLITE_CONSTRAINTS = {
    "events.account_id, events.stream_id, events.version": "uq_events_stream_version",
    "gold_labels.account_id, gold_labels.run_id, gold_labels.output_resource_name": "uq_gold_labels_live_output",
    "gold_labels.account_id, gold_labels.id": "gold_labels_pkey",
}
