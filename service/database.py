"""Database wiring: engines, transactions, and every difference between SQLite and PostgreSQL.

Everything outside this module (and the migrations) is dialect-free SQLAlchemy Core.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service.metrics import DB_CONNECTIONS_IN_USE, DB_CONNECTIONS_WAITING, DB_FAILURES
from service.settings import Settings


class DatabaseUnavailable(Exception):
    """The database cannot be reached or did not answer in time; the request changed nothing."""


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
    if isinstance(error, sa.exc.TimeoutError | ConnectionError | TimeoutError | OSError):
        return True
    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        # Class 08 is connection trouble, 57P0x an admin shutdown; "database is locked" on SQLite.
        sqlstate = getattr(error.orig, "sqlstate", None) or ""
        if sqlstate.startswith(("08", "57P")):
            return True
        if isinstance(error, sa.exc.OperationalError):
            if type(error.orig).__module__.startswith("sqlite3"):
                text = str(error.orig).lower()
                return any(sign in text for sign in ("locked", "unable to open", "disk i/o"))
            return sqlstate == ""  # psycopg's connection failures carry no SQLSTATE
    return False


class Database:
    """An engine plus the two kinds of transaction a request uses."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # SQLite allows one writer per file: queue this process's writers here instead of
        # spinning on the file lock (the busy timeout still covers other processes).
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None

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
                pool_pre_ping=True,
                hide_parameters=True,  # label values must never reach a log line through an error message
                connect_args={"connect_timeout": max(1, round(settings.db_timeout_seconds))},
            )
        return cls(engine)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction that commits when the block ends and rolls back on any exception."""
        if self._write_lock is None:
            async with self._transaction(write=True) as conn:
                yield conn
        else:
            async with self._write_lock, self._transaction(write=True) as conn:
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._transaction(write=False) as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        try:
            with DB_CONNECTIONS_WAITING.track_inprogress():
                conn = await self.engine.connect()
            try:
                with DB_CONNECTIONS_IN_USE.track_inprogress():
                    await conn.execution_options(write=write)
                    async with conn.begin():
                        yield conn
            finally:
                await conn.close()
        except DatabaseUnavailable:
            raise
        except Exception as error:
            if _is_unavailable(error):
                DB_FAILURES.labels("unavailable").inc()
                raise DatabaseUnavailable(str(error).splitlines()[0]) from error
            if isinstance(error, sa.exc.DBAPIError):
                DB_FAILURES.labels("error").inc()
            raise

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)$")
_SQLITE_CONSTRAINTS = {
    "events.account_id, events.stream_id, events.version": "uq_events_stream_version",
    "gold_labels.account_id, gold_labels.run_id, gold_labels.output_resource_name": "uq_gold_labels_live_output",
    "gold_labels.account_id, gold_labels.id": "gold_labels_pkey",
}


def violated_constraint(error: sa.exc.IntegrityError) -> str | None:
    """The name of the unique constraint or index an INSERT/UPDATE ran into, on either backend."""
    diag = getattr(error.orig, "diag", None)
    if diag is not None:
        return diag.constraint_name
    match = _SQLITE_UNIQUE.search(str(error.orig))
    return _SQLITE_CONSTRAINTS.get(match.group(1)) if match else None


async def insert_ignoring_conflict(conn: AsyncConnection, table: sa.Table, values: dict) -> bool:
    """INSERT … ON CONFLICT DO NOTHING on either backend; True when the row was inserted.

    On PostgreSQL a conflicting row that is not yet committed makes this wait for its transaction,
    which is what lets a concurrent duplicate see the first one's outcome.
    """
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)
    key = table.primary_key.columns.values()[0]
    result = await conn.execute(insert.values(values).on_conflict_do_nothing().returning(key))
    return result.first() is not None
