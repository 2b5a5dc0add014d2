"""Database wiring: engines, transactions, and every difference between SQLite and PostgreSQL.

Everything outside this module (and the migrations) is dialect-free SQLAlchemy Core.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service.metrics import DB_CONNECTIONS_IN_USE, DB_CONNECTIONS_WAITING, DB_FAILURES
from service.settings import Settings


class DatabaseUnavailable(Exception):
    """The database cannot be reached or did not answer in time; the request changed nothing."""


class UniqueViolation(Exception):
    """A write ran into a unique constraint or index; `constraint` names it on either backend."""

    def __init__(self, constraint: str | None) -> None:
        super().__init__(f"unique constraint {constraint} violated")
        self.constraint = constraint


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

    @asynccontextmanager
    async def hot_write(self) -> AsyncIterator[DriverTransaction]:
        """A write transaction on the driver's own connection, for the request path's few statements.

        SQLAlchemy Core costs more CPU per statement than the database does for these; here the SQL is
        written by hand, and on PostgreSQL it is pipelined: reads that a decision needs cost one round
        trip, the writes after them one more, and COMMIT a last one.
        """
        if self._write_lock is None:
            async with self._driver_transaction() as tx:
                yield tx
        else:
            async with self._write_lock, self._driver_transaction() as tx:
                yield tx

    @asynccontextmanager
    async def _driver_transaction(self) -> AsyncIterator[DriverTransaction]:
        try:
            with DB_CONNECTIONS_WAITING.track_inprogress():
                conn = await self.engine.connect()
            try:
                with DB_CONNECTIONS_IN_USE.track_inprogress():
                    raw = (await conn.get_raw_connection()).driver_connection
                    tx = PostgresTransaction(raw) if self.dialect == "postgresql" else SqliteTransaction(raw)
                    async with tx.transaction():
                        yield tx
            finally:
                await conn.close()
        except (DatabaseUnavailable, UniqueViolation):
            raise
        except Exception as error:
            if _is_unavailable(error) or _is_driver_unavailable(error):
                DB_FAILURES.labels("unavailable").inc()
                raise DatabaseUnavailable(str(error).splitlines()[0]) from error
            if constraint := _driver_unique_violation(error):
                raise UniqueViolation(constraint) from error
            if isinstance(error, psycopg.Error | sqlite3.Error):
                DB_FAILURES.labels("error").inc()
            raise

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


Row = tuple[Any, ...]
_NAMED = re.compile(r"(?<![:\w]):(\w+)")


class DriverTransaction:
    """Hand-written SQL with `:name` parameters, on one backend's driver connection.

    `for_update` adds the row lock PostgreSQL needs; SQLite's single writer (BEGIN IMMEDIATE) is already
    exclusive. Values go in and come out as the driver has them, except that SQLite gets and gives
    timestamps as the text SQLAlchemy stores there.
    """

    dialect: str

    def for_update(self, sql: str) -> str:
        return sql

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Row | None:
        """Run a statement and wait for its first row (errors of statements queued before it surface here)."""
        raise NotImplementedError

    async def execute(self, sql: str, params: dict[str, Any]) -> None:
        """Run a statement whose result is not needed; PostgreSQL sends it with the next one that waits."""
        raise NotImplementedError


class PostgresTransaction(DriverTransaction):
    dialect = "postgresql"

    def __init__(self, connection: psycopg.AsyncConnection) -> None:
        self.connection = connection

    @staticmethod
    @functools.cache
    def _sql(sql: str) -> str:
        """psycopg spells `:name` as `%(name)s`."""
        return _NAMED.sub(r"%(\1)s", sql)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        try:
            async with self.connection.pipeline():
                yield
                await self.connection.commit()
        except BaseException:
            await self.connection.rollback()
            raise

    def for_update(self, sql: str) -> str:
        return sql + " FOR UPDATE"

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Row | None:
        cursor = await self.connection.execute(self._sql(sql), params)
        return await cursor.fetchone()

    async def execute(self, sql: str, params: dict[str, Any]) -> None:
        await self.connection.execute(self._sql(sql), params)


class SqliteTransaction(DriverTransaction):
    dialect = "sqlite"

    def __init__(self, connection) -> None:  # an aiosqlite.Connection
        self.connection = connection

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        await self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            await self.connection.execute("ROLLBACK")
            raise
        await self.connection.execute("COMMIT")

    @staticmethod
    def _params(params: dict[str, Any]) -> dict[str, Any]:
        return {k: sqlite_time(v) if isinstance(v, datetime) else v for k, v in params.items()}

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Row | None:
        cursor = await self.connection.execute(sql, self._params(params))
        return await cursor.fetchone()

    async def execute(self, sql: str, params: dict[str, Any]) -> None:
        await self.connection.execute(sql, self._params(params))


def sqlite_time(moment: datetime) -> str:
    """A UTC time as SQLAlchemy's SQLite DATETIME stores it, so both paths read each other's rows."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _is_driver_unavailable(error: BaseException) -> bool:
    if isinstance(error, psycopg.OperationalError):
        sqlstate = error.sqlstate or ""
        return sqlstate == "" or sqlstate.startswith(("08", "57P"))
    if isinstance(error, sqlite3.OperationalError):
        return any(sign in str(error).lower() for sign in ("locked", "unable to open", "disk i/o"))
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


def violated_constraint(error: sa.exc.IntegrityError) -> str | None:
    """The name of the unique constraint or index an INSERT/UPDATE ran into, on either backend."""
    diag = getattr(error.orig, "diag", None)
    if diag is not None:
        return diag.constraint_name
    match = _SQLITE_UNIQUE.search(str(error.orig))
    return _SQLITE_CONSTRAINTS.get(match.group(1)) if match else None
