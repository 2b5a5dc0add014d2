"""SQLite (aiosqlite), the embedded default: its engine, its transactions, its time format, its errors, and
every statement it spells differently from PostgreSQL.

SQLite runs in goldtrail's own process and takes one writer at a time (BEGIN IMMEDIATE), so positions are
handed out in commit order: the feed needs no horizon and every transaction id is 0.
"""

from __future__ import annotations

import fcntl
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from events.types import PendingEvent, SealedEvent
from projections.fold import LabelState
from service.settings import Settings
from service.storage.failures import Failure
from service.storage.rows import LABEL_FIELDS, Row, label_params, label_values
from service.storage.sql import (
    APPEND,
    DELETE_READ_MODEL,
    INSERT_LABEL,
    MOVE_LABEL_ON,
    Integration,
    LabelWrites,
    Maintenance,
    Reads,
)

NAME = "sqlite"


def url(parsed: sa.URL, *, asynchronous: bool) -> sa.URL:
    return parsed.set(drivername="sqlite+aiosqlite" if asynchronous else "sqlite")


def path_of(database_url: str) -> Path | None:
    parsed = make_url(database_url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _configure(sync_engine: sa.Engine) -> None:
    """WAL for readers beside a writer, a busy timeout instead of 'database is locked', FULL sync for
    durability; every transaction is begun explicitly (BEGIN IMMEDIATE for writes, so two writers queue
    rather than deadlock on upgrading a read lock)."""

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


def create_engine(settings: Settings, database_url: sa.URL) -> AsyncEngine:
    path = path_of(database_url.render_as_string(hide_password=False))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        database_url, pool_size=settings.db_pool_size, pool_timeout=settings.db_timeout_seconds, hide_parameters=True
    )
    _configure(engine.sync_engine)
    return engine


def sync_engine(database_url: sa.URL, _timeout_seconds: float) -> sa.Engine:
    engine = sa.create_engine(database_url, poolclass=NullPool)
    _configure(engine)
    return engine


@contextmanager
def migration_lock(_conn: sa.Connection, database_url: str) -> Iterator[None]:
    """SQLite has no advisory locks: a lock file beside the database serialises this host's `migrate` runs."""
    path = path_of(database_url)
    if path is None:
        yield
        return
    lock = path.with_name(path.name + ".migrate-lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Times: the text SQLAlchemy's DATETIME type stores, fixed-width UTC, e.g. 2026-01-01 00:00:00.000001 ------


def stored(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def parsed(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _params(params: dict[str, Any]) -> dict[str, Any]:
    return {name: stored(value) if isinstance(value, datetime) else value for name, value in params.items()}


# Errors ---------------------------------------------------------------------------------------------


class _RowMovedOn(Exception):
    """A guarded UPDATE moved no row: another writer got there first."""


_UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)$")
_CONSTRAINTS = {
    "events.account_id, events.stream_id, events.version": Failure.LOST_RACE,
    "gold_labels.account_id, gold_labels.run_id, gold_labels.output_resource_name": Failure.NAME_TAKEN,
}


def failure(error: BaseException) -> Failure | None:
    if isinstance(error, _RowMovedOn):
        return Failure.LOST_RACE
    if isinstance(error, sqlite3.OperationalError):
        message = str(error).lower()
        if any(sign in message for sign in ("locked", "unable to open", "disk i/o")):
            return Failure.UNREACHABLE
    if isinstance(error, sqlite3.IntegrityError) and (match := _UNIQUE.search(str(error))):
        return _CONSTRAINTS.get(match.group(1))
    return None


# Reads ----------------------------------------------------------------------------------------------


class SqliteReads(Reads):
    """Reads in autocommit, one statement each, unless `transaction` (then one read transaction, in which
    every statement sees the database as of one moment)."""

    # The time as the hash has it, from the fixed-width text stored: 2026-01-01T00:00:00.000001Z.
    TIME_TEXT = "replace(recorded_at, ' ', 'T') || 'Z'"
    DAY = "substr(e.recorded_at, 1, 10)"  # the stored text starts with the UTC day
    # SQLite's LIKE ignores the case of ASCII letters (and then uses no index): GLOB is case-sensitive.
    NAME_PREFIX = "output_resource_name GLOB :name_pattern"

    @staticmethod
    def name_pattern(prefix: str) -> str:
        return "".join(f"[{c}]" if c in "*?[" else c for c in prefix) + "*"

    def __init__(self, connection: Any, *, transaction: bool = False, begin: str = "BEGIN") -> None:
        self.connection = connection  # an aiosqlite.Connection
        self.transaction, self._begin = transaction, begin

    def time(self, value: str) -> datetime:
        return parsed(value)

    async def begin(self) -> None:
        if self.transaction:
            await self.connection.execute(self._begin)

    async def commit(self) -> None:
        if self.transaction:
            await self.connection.execute("COMMIT")

    async def abort(self) -> None:
        if self.transaction:
            await self.connection.execute("ROLLBACK")

    async def release(self) -> None:
        """Nothing to reset."""

    async def _one(self, sql: str, params: dict[str, Any]) -> Row | None:
        cursor = await self.connection.execute(sql, _params(params))
        return await cursor.fetchone()

    async def _all(self, sql: str, params: dict[str, Any]) -> list[Row]:
        cursor = await self.connection.execute(sql, _params(params))
        return await cursor.fetchall()

    async def _batches(self, sql: str, params: dict[str, Any], size: int) -> AsyncIterator[list[Row]]:
        cursor = await self.connection.execute(sql, _params(params))
        try:
            while batch := await cursor.fetchmany(size):  # aiosqlite fetches in its own thread
                yield batch
        finally:
            await cursor.close()


class SqliteMaintenance(SqliteReads, Maintenance):
    def __init__(self, connection: Any) -> None:
        # BEGIN IMMEDIATE takes the write lock at once: it excludes every other writer until the end.
        super().__init__(connection, transaction=True, begin="BEGIN IMMEDIATE")

    async def lock_read_model(self) -> None:
        """Already done: the transaction holds SQLite's one write lock."""

    async def replace_read_model(self, states: Iterable[LabelState]) -> int:
        times = [LABEL_FIELDS.index(name) for name in ("created_at", "updated_at", "deleted_at")]
        rows = []
        for state in states:
            row = label_values(state)
            for index in times:
                if row[index] is not None:
                    row[index] = stored(row[index])
            rows.append(row)
        await self.connection.execute(DELETE_READ_MODEL)
        placeholders = ", ".join("?" * len(LABEL_FIELDS))
        await self.connection.executemany(
            f"INSERT INTO gold_labels ({', '.join(LABEL_FIELDS)}) VALUES ({placeholders})", rows
        )
        return len(rows)


class SqliteIntegration(SqliteReads, Integration):
    def __init__(self, connection: Any) -> None:
        # The one writer at a time, across processes too: no other integrator can be at work meanwhile.
        super().__init__(connection, transaction=True, begin="BEGIN IMMEDIATE")

    async def _execute(self, sql: str, params: dict[str, Any]) -> None:
        await self.connection.execute(sql, _params(params))

    async def _execute_many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            await self.connection.executemany(sql, [_params(row) for row in rows])


# Writes ---------------------------------------------------------------------------------------------


class SqliteTransaction(LabelWrites):
    """SQLite's one writer at a time (BEGIN IMMEDIATE) keeps a label's versions in position order; a write
    that outlived its request is rolled back before COMMIT (see Database.within_time_limit)."""

    def __init__(self, connection: Any) -> None:
        super().__init__()
        self.connection = connection  # an aiosqlite.Connection

    def time(self, value: str) -> datetime:
        return parsed(value)

    async def begin(self) -> None:
        await self.connection.execute("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        self.committing = True
        await self.connection.execute("COMMIT")

    async def abort(self) -> None:
        await self.connection.execute("ROLLBACK")

    async def release(self) -> None:
        """Nothing to reset."""

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Row | None:
        cursor = await self.connection.execute(sql, _params(params))
        return await cursor.fetchone()

    async def fetchall(self, sql: str, params: dict[str, Any]) -> list[Row]:
        cursor = await self.connection.execute(sql, _params(params))
        return await cursor.fetchall()

    async def execute(self, sql: str, params: dict[str, Any]) -> None:
        await self.connection.execute(sql, _params(params))

    async def execute_one(self, sql: str, params: dict[str, Any]) -> None:
        cursor = await self.connection.execute(sql, _params(params))
        if cursor.rowcount != 1:
            raise _RowMovedOn(f"{cursor.rowcount} rows changed where exactly one was expected")

    # A batch through executemany: one call into the driver's thread instead of one a statement.

    async def append_many(self, events: list[PendingEvent]) -> list[SealedEvent]:
        rows, sealed = [], []
        for pending in events:
            row, done = self._sealed(pending)
            rows.append(_params(row))
            sealed.append(done)
        if rows:
            await self.connection.executemany(APPEND, rows)
        return sealed

    async def save_labels(self, states: list[LabelState]) -> None:
        created = [_params(label_params(state)) for state in states if state.version == 1]
        moved = [
            _params({**label_params(state), "previous": state.version - 1}) for state in states if state.version > 1
        ]
        if created:
            await self.connection.executemany(INSERT_LABEL, created)
        if moved:
            cursor = await self.connection.executemany(MOVE_LABEL_ON, moved)
            if cursor.rowcount != len(moved):
                raise _RowMovedOn(f"{cursor.rowcount} of {len(moved)} labels moved on")


# What the dialect-free Database asks of a backend ----------------------------------------------------

ONE_WRITER = True  # one writer per file: this process queues its own writers instead of spinning on the lock
GROUP_COMMIT = False  # one writer at a time: nothing to gather
DRIVER_ERROR = sqlite3.Error
RECONNECTS_AFTER_LOSS = False  # the file does not restart; a locked database is no reason to reconnect


def reads(pooled: Any, *, transaction: bool, snapshot: bool) -> SqliteReads:
    return SqliteReads(pooled.driver_connection, transaction=transaction or snapshot)


def maintenance(pooled: Any) -> SqliteMaintenance:
    return SqliteMaintenance(pooled.driver_connection)


def integration(pooled: Any) -> SqliteIntegration:
    return SqliteIntegration(pooled.driver_connection)


async def write(pooled: Any, _deadline_at: float, _optimistic: bool) -> LabelWrites:
    return SqliteTransaction(pooled.driver_connection)
