"""The database a goldtrail process talks to: its connection pool, the kinds of transaction it runs, the
time limit on a request's database work, and one vocabulary for what goes wrong (storage.errors).

Dialect-free: what PostgreSQL and SQLite do differently lives in storage.postgres and storage.sqlite.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from projections.fold import LabelState
from service.metrics import DB_CONNECTIONS_IN_USE, DB_CONNECTIONS_WAITING, DB_FAILURES
from service.settings import Settings
from service.storage import postgres, sqlite
from service.storage.errors import (
    CommitOutcomeUnknown,
    DatabaseReadOnly,
    DatabaseUnavailable,
    LostRace,
    OutputResourceTaken,
    StaleConnection,
)
from service.storage.failures import Failure
from service.storage.group_commit import GroupCommit, LiveUpdate
from service.storage.sql import Integration, LabelWrites, Maintenance, Reads

T = TypeVar("T")
_BACKENDS: dict[str, ModuleType] = {"postgres": postgres, "postgresql": postgres, "sqlite": sqlite}


def backend_of(database_url: str) -> ModuleType:
    """The storage module of the database this URL names (storage.postgres or storage.sqlite)."""
    name = make_url(database_url).get_backend_name()
    if name not in _BACKENDS:
        raise ValueError(
            f"unsupported database URL {database_url!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
        )
    return _BACKENDS[name]


def sync_url(database_url: str) -> sa.URL:
    """The URL SQLAlchemy's synchronous engines take (migrations, tests)."""
    return backend_of(database_url).url(make_url(database_url), asynchronous=False)


def sync_engine(database_url: str, timeout_seconds: float = 10.0) -> sa.Engine:
    """A synchronous engine without a pool, set up as the service's own, for migrations."""
    return backend_of(database_url).sync_engine(sync_url(database_url), timeout_seconds)


class Deadline:
    """When a request's database work must be done (local monotonic time), and whether the request was
    already answered 503 because it was not."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.abandoned = False

    @classmethod
    def until(cls, moment: float) -> Deadline:
        deadline = cls(0.0)
        deadline.at = moment
        return deadline

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


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


class Database:
    """A pool of driver connections and the transactions a request or an operator job runs on them."""

    def __init__(self, engine: AsyncEngine, backend: ModuleType, timeout_seconds: float = 5.0) -> None:
        self.engine = engine
        self.backend = backend
        self.dialect: str = backend.NAME
        # A request's database work must finish within this, or it is answered 503: a database that accepts
        # connections but never answers must not hang requests.
        self.timeout_seconds = timeout_seconds
        # One writer per file (SQLite): queue this process's writers here instead of spinning on the file
        # lock (the busy timeout still covers other processes).
        self._write_lock = asyncio.Lock() if backend.ONE_WRITER else None
        self._trusted_since = 0.0
        _replace_distrusted_connections(engine.sync_engine, lambda: self._trusted_since)
        # Concurrent plain updates written together in one statement, where the backend can (PostgreSQL).
        self.group_commit = GroupCommit(self._write_group, self.within_time_limit) if backend.GROUP_COMMIT else None

    @classmethod
    def connect(cls, settings: Settings) -> Database:
        backend = backend_of(settings.database_url)
        url = backend.url(make_url(settings.database_url), asynchronous=True)
        return cls(backend.create_engine(settings, url), backend, settings.db_timeout_seconds)

    # A request's work, within the time limit ---------------------------------------------------------

    async def run_read(self, work: Callable[[Reads], Awaitable[T]]) -> T:
        """A request's read: within the time limit, and once more on a fresh connection if the first was stale."""

        async def attempt(_deadline: Deadline) -> T:
            async with self.read(transaction=False) as reads:
                return await work(reads)

        try:
            return await self.within_time_limit(attempt)
        except StaleConnection:
            return await self.within_time_limit(attempt)

    async def run_write(self, work: Callable[[LabelWrites], Awaitable[T]], *, optimistic: bool = False) -> T:
        """A request's write, within the time limit. `optimistic` lets the backend read without a lock and
        write everything in one statement that fails if another writer came first (LostRace); otherwise the
        write queues behind the label's other writers. SQLite's one writer makes both the same."""

        async def attempt(deadline: Deadline) -> T:
            async with self._one_writer(), self._write(deadline, optimistic) as tx:
                return await work(tx)

        return await self.within_time_limit(attempt)

    async def _write_group(self, updates: list[LiveUpdate], deadline_at: float) -> dict[tuple[str, str], LabelState]:
        """One group of updates (storage.group_commit), refused by the database past `deadline_at`; the time
        limit is each waiting request's own."""
        async with self._write(Deadline.until(deadline_at), optimistic=True) as tx:
            return await tx.update_live_many(updates)

    async def within_time_limit(self, attempt: Callable[[Deadline], Awaitable[T]]) -> T:
        """Answer within the time limit even when the database hangs.

        The work runs in a task of its own that is left behind, not cancelled, when time is up: cancelling
        psycopg mid-statement makes it try to cancel on the server, which hangs just the same. What the
        abandoned attempt already sent cannot commit once the deadline has passed: PostgreSQL checks the
        deadline itself as a write's last step (migration 0004), and an attempt that gets its answers back
        late rolls back instead of committing. So a 503 given here means nothing was written (unless COMMIT
        itself was in flight).
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

    # Transactions without a time limit (exports, operator jobs) ---------------------------------------

    @asynccontextmanager
    async def read(self, *, transaction: bool = True, snapshot: bool = False) -> AsyncIterator[Reads]:
        """Reads on one connection: one transaction unless `transaction` is false (then each statement stands
        alone); with `snapshot`, every statement sees the database as of one moment."""
        try:
            async with self._pooled() as pooled:
                reads = self.backend.reads(pooled, transaction=transaction, snapshot=snapshot)
                async with self._lifecycle(pooled, reads) as done:
                    yield done
        except Exception as error:
            self._raise(error, stale=True)

    @asynccontextmanager
    async def maintain(self) -> AsyncIterator[Maintenance]:
        """One long transaction over the whole read model, for rebuild: writers wait until it ends."""
        try:
            async with (
                self._one_writer(),
                self._pooled() as pooled,
                self._lifecycle(pooled, self.backend.maintenance(pooled)) as maintenance,
            ):
                yield maintenance
        except Exception as error:
            self._raise(error, stale=False)

    @asynccontextmanager
    async def integrate(self) -> AsyncIterator[Integration]:
        """The integrator's transaction (storage.sql.Integration): short, and committed as a whole."""
        try:
            async with (
                self._one_writer(),
                self._pooled() as pooled,
                self._lifecycle(pooled, self.backend.integration(pooled)) as integration,
            ):
                yield integration
        except Exception as error:
            self._raise(error, stale=False)

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers and takes writes."""
        if not await self.run_read(lambda reads: reads.writable()):
            raise DatabaseReadOnly()

    async def close(self) -> None:
        await self.engine.dispose()

    # The plumbing ------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _one_writer(self) -> AsyncIterator[None]:
        if self._write_lock is None:
            yield
        else:
            async with self._write_lock:
                yield

    @asynccontextmanager
    async def _write(self, deadline: Deadline, optimistic: bool) -> AsyncIterator[LabelWrites]:
        tx: LabelWrites | None = None
        try:
            async with self._pooled() as pooled:
                tx = await self.backend.write(pooled, deadline.at, optimistic)
                async with self._lifecycle(pooled, tx, refuse_commit=lambda: deadline.abandoned):
                    yield tx
        except Exception as error:
            committing = tx is not None and tx.committing
            self._raise(error, stale=tx is not None and not committing, committing=committing)

    @asynccontextmanager
    async def _pooled(self) -> AsyncIterator[Any]:
        """A driver connection from the pool (SQLAlchemy's Connection around it would cost CPU and do nothing
        here), and back to the pool afterwards."""
        try:
            with DB_CONNECTIONS_WAITING.track_inprogress():
                pooled = await self.engine.raw_connection()
        except Exception as error:
            self._raise(error, stale=False)
        try:
            with DB_CONNECTIONS_IN_USE.track_inprogress():
                yield pooled
        finally:
            # The pool resets the connection (awaiting the driver), or drops it if that fails: either way the
            # outcome of the work stands, so a failure here is not the caller's.
            with contextlib.suppress(Exception):
                await greenlet_spawn(pooled.close)

    @asynccontextmanager
    async def _lifecycle(
        self, pooled: Any, tx: Any, refuse_commit: Callable[[], bool] = lambda: False
    ) -> AsyncIterator[Any]:
        """begin, the caller's work, commit (or abort on any exception), and the connection reset for the pool."""
        try:
            await tx.begin()
            yield tx
            if refuse_commit():
                raise DatabaseUnavailable("the request was already answered 503: not committing")
            await tx.commit()
        except BaseException as error:
            if self.backend.RECONNECTS_AFTER_LOSS and self._failure(error) in _LOST_CONNECTION:
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
                # Not fit to go back to the pool as it was lent; the outcome of the work stands.
                with contextlib.suppress(Exception):
                    await greenlet_spawn(pooled.invalidate)

    def _distrust_older_connections(self) -> None:
        """After a lost connection, every pooled connection opened before now is suspect (the server may have
        restarted): each is replaced at its next checkout, so the failure costs one request, not pool_size."""
        self._trusted_since = time.monotonic()

    def _failure(self, error: BaseException) -> Failure | None:
        if isinstance(error, TimeoutError | sa.exc.TimeoutError | ConnectionError | OSError):
            return Failure.UNREACHABLE
        if isinstance(error, sa.exc.DBAPIError):
            if error.connection_invalidated:
                return Failure.DISCONNECTED
            return self._failure(error.orig)
        return self.backend.failure(error)

    def _raise(self, error: Exception, *, stale: bool, committing: bool = False) -> NoReturn:
        """Raise `error` in the vocabulary of storage.errors, whichever path and driver raised it."""
        if isinstance(error, DatabaseUnavailable | LostRace | OutputResourceTaken):
            raise error
        failure = self._failure(error)
        if failure is None:
            if isinstance(error, sa.exc.DBAPIError | self.backend.DRIVER_ERROR):
                DB_FAILURES.labels("error").inc()
            raise error
        translated: Exception
        if failure in _LOST_CONNECTION:
            DB_FAILURES.labels("unavailable").inc()
            kind = (
                CommitOutcomeUnknown
                if committing
                else StaleConnection
                if stale and failure is Failure.DISCONNECTED
                else DatabaseUnavailable
            )
            translated = kind(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        elif failure is Failure.READ_ONLY:
            DB_FAILURES.labels("unavailable").inc()
            translated = DatabaseReadOnly(str(error).strip().splitlines()[0])
        elif failure is Failure.TOO_LATE:
            DB_FAILURES.labels("unavailable").inc()
            translated = DatabaseUnavailable("the write reached the database after its deadline and was refused")
        elif failure is Failure.LOST_RACE:
            translated = LostRace(str(error))
        else:
            translated = OutputResourceTaken(str(error))
        raise translated from error


_LOST_CONNECTION = (Failure.UNREACHABLE, Failure.DISCONNECTED)


def _forget(task: asyncio.Future) -> None:
    """Collect the outcome of an abandoned attempt, so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()
