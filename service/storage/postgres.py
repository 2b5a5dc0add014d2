"""PostgreSQL (psycopg 3): its engine, its transactions, its clock, its errors, and every statement it spells
differently from SQLite."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec
import psycopg
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from events.chain import CHAIN_FORMAT
from events.types import PendingEvent, SealedEvent
from projections.fold import LabelState
from service.settings import Settings
from service.storage.failures import Failure
from service.storage.group_commit import LiveUpdate
from service.storage.rows import LABEL_FIELDS, Row, label_from_row, label_params, label_values
from service.storage.sql import DELETE_READ_MODEL, Integration, LabelWrites, Maintenance, Reads

NAME = "postgresql"
_NAMED = re.compile(r"(?<![:\w]):(\w+)")


@functools.cache
def _psycopg(sql: str) -> str:
    """psycopg spells `:name` as `%(name)s`."""
    return _NAMED.sub(r"%(\1)s", sql)


def url(parsed: sa.URL, *, asynchronous: bool) -> sa.URL:
    return parsed.set(drivername="postgresql+psycopg")


def create_engine(settings: Settings, database_url: sa.URL) -> AsyncEngine:
    return create_async_engine(
        database_url,
        pool_size=settings.db_pool_size,
        max_overflow=0,
        pool_timeout=settings.db_timeout_seconds,
        hide_parameters=True,  # label values must never reach a log line through an error message
        connect_args={"connect_timeout": max(1, round(settings.db_timeout_seconds))},
    )


def sync_engine(database_url: sa.URL, timeout_seconds: float) -> sa.Engine:
    # A database that accepts the connection but never answers must not hang start-up forever.
    return sa.create_engine(
        database_url, poolclass=NullPool, connect_args={"connect_timeout": max(1, round(timeout_seconds))}
    )


# Any fixed number: the advisory lock that serialises concurrent `migrate` runs.
_MIGRATION_LOCK_KEY = 0x601D7A11


@contextmanager
def migration_lock(conn: sa.Connection, _database_url: str) -> Iterator[None]:
    """Held by one `migrate` at a time across every host; released when the migration's transaction ends."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
    yield


_TABLES = (
    "events",
    "gold_labels",
    "idempotency_keys",
    "log_leaves",
    "log_tiles",
    "log_heads",
    "log_checkpoints",
    "log_cosignatures",
    "log_progress",
    "alembic_version",
)


def runtime_role_sql(role: str, database: str) -> list[str]:
    """Grants for the role the service runs as: it may append events but never change or remove one,
    so even a compromised service cannot rewrite history (the triggers are the second line)."""
    name = '"' + role.replace('"', '""') + '"'
    db = '"' + database.replace('"', '""') + '"'
    return [
        f"DO $$ BEGIN CREATE ROLE {name} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        f"GRANT CONNECT ON DATABASE {db} TO {name}",
        f"GRANT USAGE ON SCHEMA public TO {name}",
        f"REVOKE ALL ON {', '.join(_TABLES)} FROM {name}",
        f"GRANT SELECT, INSERT ON events, log_leaves, log_checkpoints, log_cosignatures TO {name}",
        f"GRANT SELECT, INSERT, UPDATE ON gold_labels, idempotency_keys, log_tiles, log_heads TO {name}",
        f"GRANT SELECT, UPDATE ON log_progress TO {name}",
        f"GRANT SELECT ON alembic_version TO {name}",
    ]


# Errors ---------------------------------------------------------------------------------------------

_CONSTRAINTS = {"uq_events_stream_version": Failure.LOST_RACE, "uq_gold_labels_live_output": Failure.NAME_TAKEN}
# Raised by goldtrail_write_check (migration 0004).
ROW_MOVED_ON, TOO_LATE = "GT001", "GT002"


def failure(error: BaseException) -> Failure | None:
    if not isinstance(error, psycopg.Error):
        return None
    sqlstate = error.sqlstate or ""
    if isinstance(error, psycopg.OperationalError) and (not sqlstate or sqlstate.startswith("57P")):
        return Failure.DISCONNECTED  # the server closed the connection (a restart), or refused a new one
    if sqlstate.startswith(("08", "57P")):
        return Failure.UNREACHABLE
    if isinstance(error, psycopg.errors.ReadOnlySqlTransaction):
        return Failure.READ_ONLY
    if isinstance(error, psycopg.errors.UniqueViolation):
        return _CONSTRAINTS.get(error.diag.constraint_name or "")
    return {ROW_MOVED_ON: Failure.LOST_RACE, TOO_LATE: Failure.TOO_LATE}.get(sqlstate)


# The server's clock, for the deadline a write checks as its last step ---------------------------------

# How fast two hosts' clocks may drift apart, as a share of the time elapsed; far above what NTP allows.
_CLOCK_DRIFT = 1e-3
# A fixed allowance on top: the event loop's timers may fire a little before the monotonic deadline.
_CLOCK_SLACK = 0.05
# How long a reading of the server's clock is used before it is read again.
_CLOCK_MAX_AGE = 30.0
_CLOCK_INFO_KEY = "goldtrail_server_clock"


class ServerClock(NamedTuple):
    """The server's clock as read once over a connection: `server_time` was read at some local moment before
    `answered` (local monotonic time), so at a later local moment the server's clock reads at least
    `server_time + (moment - answered)`, give or take the drift between the hosts."""

    server_time: datetime
    answered: float

    def earliest_reading_at(self, moment: float) -> datetime:
        """A time the server's clock has certainly passed by local monotonic `moment`: a write that the server
        checks against it and finds it past ran after `moment`, or close enough before it."""
        elapsed = moment - self.answered
        allowance = _CLOCK_SLACK + _CLOCK_DRIFT * abs(elapsed)
        return self.server_time + timedelta(seconds=elapsed - allowance)


async def _server_clock(pooled: Any) -> ServerClock:
    """The server's clock as last read over this connection, read again when the reading is old."""
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


# Reads ----------------------------------------------------------------------------------------------


def _aware(value: datetime) -> datetime:
    return value.astimezone(UTC)


class PostgresReads(Reads):
    """Reads in autocommit, one statement each, unless `transaction` (then one transaction, REPEATABLE READ
    with `snapshot`, so every statement sees the database as of one moment)."""

    FEED_TX = "tx_id::text::bigint"
    TX_PARAM = "CAST(:tx_id AS xid8)"
    PROGRESS_TX = "CAST(CAST(p.tx_id AS text) AS xid8)"
    EVENT_TX = "e.tx_id::text::bigint"
    # Positions are handed out before commit, so the feed only reads transactions older than every one still
    # in flight: below that horizon nothing new can appear (events.feed).
    HORIZON = "tx_id < pg_snapshot_xmin(pg_current_snapshot())"
    TIME_TEXT = """to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
    DAY = "CAST(e.recorded_at AT TIME ZONE 'UTC' AS DATE)"

    def __init__(self, connection: psycopg.AsyncConnection, *, transaction: bool = False, snapshot: bool = False):
        self.connection = connection
        self.transaction, self.snapshot = transaction, snapshot
        self._in_transaction = False

    def time(self, value: datetime) -> datetime:
        return _aware(value)

    def _tx_id(self, tx_id: int) -> str:
        return str(tx_id)  # xid8 is unsigned 64-bit: sent as text and cast

    async def begin(self) -> None:
        await self.connection.set_autocommit(True)
        if self.transaction:
            isolation = " ISOLATION LEVEL REPEATABLE READ" if self.snapshot else ""
            await self.connection.execute(f"BEGIN{isolation}")
            self._in_transaction = True

    async def commit(self) -> None:
        if self._in_transaction:
            self._in_transaction = False
            await self.connection.execute("COMMIT")

    async def abort(self) -> None:
        if self._in_transaction:
            self._in_transaction = False
            await self.connection.execute("ROLLBACK")

    async def release(self) -> None:
        await self.connection.set_autocommit(False)

    async def writable(self) -> bool:
        row = await self._one("SELECT current_setting('transaction_read_only')", {})
        return row[0] == "off"

    async def _one(self, sql: str, params: dict[str, Any]) -> Row | None:
        cursor = await self.connection.execute(_psycopg(sql), params)
        return await cursor.fetchone()

    async def _all(self, sql: str, params: dict[str, Any]) -> list[Row]:
        cursor = await self.connection.execute(_psycopg(sql), params)
        return await cursor.fetchall()

    async def _batches(self, sql: str, params: dict[str, Any], size: int) -> AsyncIterator[list[Row]]:
        # A server-side cursor lives in a transaction: a read in autocommit opens one for it.
        opened = not self._in_transaction
        if opened:
            await self.connection.execute("BEGIN")
            self._in_transaction = True
        try:
            async for batch in self._server_side(sql, params, size):
                yield batch
        finally:
            if opened:
                await self.commit()

    async def _server_side(self, sql: str, params: dict[str, Any], size: int) -> AsyncIterator[list[Row]]:
        # The client holds a batch at a time; each FETCH is sent before the batch before it is handed over, so
        # the server produces it (into the socket's buffers) while the caller works, instead of idling.
        async with self.connection.cursor(name="goldtrail_scan") as cursor:
            await cursor.execute(_psycopg(sql), params)
            batch = await cursor.fetchmany(size)
            while batch:
                following = asyncio.ensure_future(cursor.fetchmany(size))
                await asyncio.sleep(0)  # the task's first step sends the FETCH
                try:
                    yield batch
                finally:
                    # Also when the caller stops early: the connection is free again only after this answer.
                    batch = await following


class PostgresMaintenance(PostgresReads, Maintenance):
    def __init__(self, connection: psycopg.AsyncConnection) -> None:
        super().__init__(connection, transaction=True)

    async def lock_read_model(self) -> None:
        await self.connection.execute("LOCK TABLE gold_labels IN EXCLUSIVE MODE")

    async def replace_read_model(self, states: Iterable[LabelState]) -> int:
        await self.connection.execute(DELETE_READ_MODEL)
        count = 0
        copy_in = f"COPY gold_labels ({', '.join(LABEL_FIELDS)}) FROM STDIN"
        async with self.connection.cursor() as cursor, cursor.copy(copy_in) as copy:
            for state in states:
                await copy.write_row(label_values(state))
                count += 1
        return count


# The one integrator at a time, across every process: a transaction-level advisory lock, tried, not awaited.
_INTEGRATOR_LOCK_KEY = 0x601D106


class PostgresIntegration(PostgresReads, Integration):
    def __init__(self, connection: psycopg.AsyncConnection) -> None:
        super().__init__(connection, transaction=True)

    async def take_turn(self) -> bool:
        row = await self._one("SELECT pg_try_advisory_xact_lock(:key)", {"key": _INTEGRATOR_LOCK_KEY})
        return bool(row[0])

    async def _execute(self, sql: str, params: dict[str, Any]) -> None:
        await self.connection.execute(_psycopg(sql), params)

    async def _execute_many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            async with self.connection.cursor() as cursor:
                await cursor.executemany(_psycopg(sql), rows)

    async def add_leaves(self, leaves: list[tuple[str, int, int]]) -> None:
        # One statement for the whole batch: a statement per leaf costs the integrator most of its time.
        if leaves:
            accounts, indexes, positions = (list(column) for column in zip(*leaves, strict=True))
            await self.connection.execute(
                "INSERT INTO log_leaves (account_id, log_index, position)"
                " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[])",
                (accounts, indexes, positions),
            )


# Writes ---------------------------------------------------------------------------------------------

_EVENT_ARRAYS = {
    "account_id": "text",
    "stream_id": "text",
    "version": "int",
    "run_id": "text",
    "type": "text",
    "data": "text",
    "actor": "text",
    "recorded_at": "timestamptz",
    "request_id": "text",
    "reason": "text",
    "prev_hash": "text",
    "hash": "text",
    "chain": "smallint",
}
_LABEL_TYPES = {"created_at": "timestamptz", "updated_at": "timestamptz", "deleted_at": "timestamptz"}
_LABEL_ARRAYS = {
    name: _LABEL_TYPES.get(name, "int" if name == "version" else "boolean" if name.endswith("partial") else "text")
    for name in LABEL_FIELDS
}


def _unnest(arrays: dict[str, str]) -> str:
    return ", ".join(f"%({name})s::{kind}[]" for name, kind in arrays.items())


def _columns(rows: list[dict[str, Any]], arrays: dict[str, str]) -> dict[str, list]:
    return {name: [row[name] for row in rows] for name in arrays}


# One index probe per name (the live-name unique index), whatever the planner's statistics say: the names are
# the outer side of a LATERAL subquery that OFFSET 0 keeps from being flattened into a join the planner may
# turn around. Right after a big import the statistics say the run is empty; a plain join (or an IN list)
# then compares every name with every label of the run, a minute for 10,000 names in a run of 50,000.
_LIVE_LABELS_NAMED = (
    f"SELECT {', '.join(f'g.{name}' for name in LABEL_FIELDS)} FROM unnest(CAST(:names AS text[])) AS n(name)"
    " CROSS JOIN LATERAL (SELECT * FROM gold_labels WHERE account_id = :account_id AND run_id = :run_id"
    " AND deleted_at IS NULL AND output_resource_name = n.name OFFSET 0) AS g"
)
_APPEND_MANY = f"INSERT INTO events ({', '.join(_EVENT_ARRAYS)}) SELECT * FROM unnest({_unnest(_EVENT_ARRAYS)})"
_INSERT_LABELS = f"INSERT INTO gold_labels ({', '.join(_LABEL_ARRAYS)}) SELECT * FROM unnest({_unnest(_LABEL_ARRAYS)})"
_MOVE_LABELS_ON = (
    "WITH moved AS (UPDATE gold_labels g SET text_value = n.text_value, object_value = n.object_value,"
    " object_value_is_partial = n.object_value_is_partial, updated_by = n.updated_by, updated_at = n.updated_at,"
    " deleted_by = n.deleted_by, deleted_at = n.deleted_at, version = n.version, hash = n.hash"
    f" FROM unnest({_unnest({**_LABEL_ARRAYS, 'previous': 'int'})}) AS n({', '.join(_LABEL_ARRAYS)}, previous)"
    " WHERE g.account_id = n.account_id AND g.id = n.id AND g.version = n.previous RETURNING 1)"
    " SELECT goldtrail_write_check(NULL, (SELECT count(*) FROM moved) = %(count)s)"
)

# A label's writers queue on a transaction-level advisory lock: unlike a row lock, it takes no transaction id
# (see sql.LabelWrites). Two-int keys, goldtrail's own namespace (they never meet the one-bigint keys above).
_LABEL_QUEUE_CLASS = 0x6774
# A label's queue is one of 256 per account (the label id's hash picks it): a batch of thousands of labels
# queues on at most 256 locks, taken in key order so that batches and single writers never deadlock.
_BUCKET = "(hashtext({label}) & 255)::text"
_LABEL_KEY = f"{_LABEL_QUEUE_CLASS}, hashtext(%(queue_account)s || '/' || {_BUCKET.format(label='%(queue_label)s')})"
_QUEUE_MANY = (
    f"SELECT count(pg_advisory_xact_lock({_LABEL_QUEUE_CLASS}, key)) FROM (SELECT DISTINCT"
    f" hashtext(%(queue_account)s || '/' || {_BUCKET.format(label='label')}) AS key"
    " FROM unnest(%(queue_labels)s::text[]) AS label ORDER BY key) AS keys"
)
# The last statement before COMMIT (migration 0004): refuses once the server's clock is past the deadline.
_WRITE_CHECK = "SELECT goldtrail_write_check(%(deadline)s, %(moved)s)"


class PostgresTransaction(LabelWrites):
    """A locking write, pipelined: statements are queued and sent together when a result is awaited, and the
    writes, the deadline check, COMMIT and the pipeline's closing Sync travel in one flush. An update is two
    round trips: the queue and the read, then the rest."""

    def __init__(self, connection: psycopg.AsyncConnection, deadline: datetime | None) -> None:
        super().__init__()
        self.connection = connection
        self.deadline = deadline
        self.pipeline: psycopg.AsyncPipeline | None = None

    def time(self, value: datetime) -> datetime:
        return _aware(value)

    def for_update(self, sql: str) -> str:
        return sql + " FOR UPDATE"

    async def begin(self) -> None:
        self.pipeline = self.connection.pipeline()
        await self.pipeline.__aenter__()

    async def queue(self, account_id: str, label_id: str) -> None:
        await self.connection.execute(
            f"SELECT pg_advisory_xact_lock({_LABEL_KEY})", {"queue_account": account_id, "queue_label": label_id}
        )

    async def queue_many(self, account_id: str, label_ids: list[str]) -> None:
        if label_ids:
            await self.connection.execute(_QUEUE_MANY, {"queue_account": account_id, "queue_labels": label_ids})

    async def live_labels_named(self, account_id: str, run_id: str, names: list[str]) -> dict[str, LabelState]:
        # The names as one array, each looked up by index (_LIVE_LABELS_NAMED): an IN list of parameters is
        # searched item by item for every row a plan visits, and stale statistics make plans visit the run.
        rows = await self.fetchall(_LIVE_LABELS_NAMED, {"account_id": account_id, "run_id": run_id, "names": names})
        states = (label_from_row(row, self.time) for row in rows)
        return {state.output_resource_name: state for state in states}

    # A batch in a few statements: a statement per label costs psycopg more than the database its work.

    async def append_many(self, events: list[PendingEvent]) -> list[SealedEvent]:
        rows, sealed = [], []
        for event in events:
            row, done = self._sealed(event)
            rows.append(row)
            sealed.append(done)
        if rows:
            await self.connection.execute(_APPEND_MANY, _columns(rows, _EVENT_ARRAYS))
        return sealed

    async def save_labels(self, states: list[LabelState]) -> None:
        created = [label_params(state) for state in states if state.version == 1]
        moved = [{**label_params(state), "previous": state.version - 1} for state in states if state.version > 1]
        if created:
            await self.connection.execute(_INSERT_LABELS, _columns(created, _LABEL_ARRAYS))
        if moved:
            # Every row must move on from the version read, or the whole transaction is refused (LostRace).
            await self.connection.execute(
                _MOVE_LABELS_ON, {**_columns(moved, {**_LABEL_ARRAYS, "previous": "int"}), "count": len(moved)}
            )

    async def fetchall(self, sql: str, params: dict[str, Any]) -> list[Row]:
        cursor = await self.connection.execute(_psycopg(sql), params)
        return await cursor.fetchall()

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

    async def release(self) -> None:
        """Nothing to reset: the transaction ended with COMMIT or ROLLBACK."""

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Row | None:
        cursor = await self.connection.execute(_psycopg(sql), params)
        return await cursor.fetchone()

    async def execute(self, sql: str, params: dict[str, Any]) -> None:
        await self.connection.execute(_psycopg(sql), params)

    async def execute_one(self, sql: str, params: dict[str, Any]) -> None:
        # Not waited for, so it travels with COMMIT: a row count other than one raises ROW_MOVED_ON, which
        # aborts the transaction server-side before COMMIT can take effect.
        guarded = (
            f"WITH changed AS ({_psycopg(sql)} RETURNING 1) "
            "SELECT goldtrail_write_check(NULL, (SELECT count(*) FROM changed) = 1)"
        )
        await self.connection.execute(guarded, params)


class PostgresOneStatement(LabelWrites):
    """An optimistic write: reads run at once, in autocommit and without a lock; the writes are queued and
    sent at commit as one statement (each a CTE of it), which PostgreSQL runs as a transaction of its own.
    The statement ends with the write check: every guarded UPDATE moved exactly one row, no locking writer
    is queued on the label (an optimistic write yields to them rather than racing them), and the deadline
    has not passed; otherwise the whole statement, the event with it, is refused. Two round trips for an
    update, one for a create, and no BEGIN, COMMIT or pipeline Sync: psycopg spends about half the CPU of
    the pipelined transaction on it."""

    def __init__(self, connection: psycopg.AsyncConnection, deadline: datetime | None) -> None:
        super().__init__()
        self.connection = connection
        self.deadline = deadline
        self.writes: list[tuple[str, dict[str, Any], bool]] = []
        self.queued: dict[str, str] | None = None

    def time(self, value: datetime) -> datetime:
        return _aware(value)

    async def begin(self) -> None:
        await self.connection.set_autocommit(True)

    async def queue(self, account_id: str, label_id: str) -> None:
        self.queued = {"queue_account": account_id, "queue_label": label_id}

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Row | None:
        cursor = await self.connection.execute(_psycopg(sql), params)
        return await cursor.fetchone()

    async def fetchall(self, sql: str, params: dict[str, Any]) -> list[Row]:
        cursor = await self.connection.execute(_psycopg(sql), params)
        return await cursor.fetchall()

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

    async def update_live_many(self, updates: list[LiveUpdate]) -> dict[tuple[str, str], LabelState]:
        """Group commit's statement, sent at once (and committed by itself): the labels it moved on, by
        (account, label id); an update missing from them wrote nothing."""
        self.committing = True
        params = {"updates": _encode_group(updates).decode(), "deadline": self.deadline}
        cursor = await self.connection.execute(_UPDATE_LIVE_MANY, params)
        states = (label_from_row(row, self.time) for row in await cursor.fetchall())
        return {(state.account_id, state.id): state for state in states}

    async def abort(self) -> None:
        """Nothing to undo: a statement that failed changed nothing, and none was sent before commit."""

    async def release(self) -> None:
        await self.connection.set_autocommit(False)


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


# Group commit (storage.group_commit): many labels' updates in one autocommit statement, each event sealed
# from its label's row. `seen` is the labels as the statement's snapshot saw them; `locked` locks those rows
# without waiting (SKIP LOCKED, so groups never deadlock) and finds them as they are now; only a row still at
# the version the snapshot saw is moved on, so the writer before it committed before this statement took a
# transaction id (feed order), and a row locked or moved on by another writer is handed back. An update whose
# label's queue is held by a locking writer is handed back too (pg_try_advisory_xact_lock), as an optimistic
# write yields. Each label is found by one primary-key probe (LATERAL, and OFFSET 0 keeps the planner from
# turning it into a join): with the statistics a big import leaves behind, a join scanned every label.
_LIVE_TYPES = {"object_value_is_partial": "boolean", "recorded_at": "timestamptz"}
_LIVE_RECORD = ", ".join(f"{name} {_LIVE_TYPES.get(name, 'text')}" for name in LiveUpdate.__struct_fields__)
_encode_group = msgspec.json.Encoder().encode
_NEXT_HASH = (
    "encode(sha256(convert_to(s.head || (s.seen_version + 1)::text || s.middle || '\"' || s.prev_hash || '\"]',"
    " 'UTF8')), 'hex')"
)
_UPDATE_LIVE_MANY = f"""
WITH items AS MATERIALIZED (
    SELECT i.*, pg_try_advisory_xact_lock({_LABEL_QUEUE_CLASS},
        hashtext(i.account_id || '/' || {_BUCKET.format(label="i.label_id")})) AS free
    FROM json_to_recordset(%(updates)s::json) AS i({_LIVE_RECORD})
), seen AS (
    SELECT i.*, g.version AS seen_version, g.hash AS prev_hash
    FROM items i CROSS JOIN LATERAL (
        SELECT * FROM gold_labels WHERE account_id = i.account_id AND id = i.label_id OFFSET 0) AS g
    WHERE i.free AND g.run_id = i.run_id AND g.deleted_at IS NULL AND g.updated_at <= i.recorded_at
), locked AS (
    SELECT g.account_id, g.id, g.version
    FROM seen s CROSS JOIN LATERAL (
        SELECT account_id, id, version FROM gold_labels WHERE account_id = s.account_id AND id = s.label_id
        FOR UPDATE SKIP LOCKED) AS g
), moved AS (
    UPDATE gold_labels g SET text_value = s.text_value, object_value = s.object_value,
        object_value_is_partial = s.object_value_is_partial, updated_by = s.actor, updated_at = s.recorded_at,
        version = s.seen_version + 1, hash = {_NEXT_HASH}
    FROM seen s JOIN locked l ON l.account_id = s.account_id AND l.id = s.label_id AND l.version = s.seen_version
    WHERE g.account_id = s.account_id AND g.id = s.label_id
    RETURNING {", ".join(f"g.{name}" for name in LABEL_FIELDS)}, s.data, s.request_id, s.reason, s.prev_hash
), appended AS (
    INSERT INTO events (account_id, stream_id, version, run_id, type, data, actor, recorded_at, request_id, reason,
        prev_hash, hash, chain)
    SELECT account_id, id, version, run_id, 'GoldLabelUpdated', data, updated_by, updated_at, request_id, reason,
        prev_hash, hash, {CHAIN_FORMAT} FROM moved
    RETURNING 1
)
SELECT {", ".join(f"m.{name}" for name in LABEL_FIELDS)}
FROM moved m, (SELECT goldtrail_write_check(%(deadline)s,
    (SELECT count(*) FROM appended) = (SELECT count(*) FROM moved))) AS checked
"""


# What the dialect-free Database asks of a backend ----------------------------------------------------

ONE_WRITER = False  # writers run side by side; the database arbitrates
GROUP_COMMIT = True  # concurrent plain updates share one statement (storage.group_commit)
DRIVER_ERROR = psycopg.Error
RECONNECTS_AFTER_LOSS = True  # a lost connection may mean a restart: older pooled connections are suspect


def reads(pooled: Any, *, transaction: bool, snapshot: bool) -> PostgresReads:
    return PostgresReads(pooled.driver_connection, transaction=transaction, snapshot=snapshot)


def maintenance(pooled: Any) -> PostgresMaintenance:
    return PostgresMaintenance(pooled.driver_connection)


def integration(pooled: Any) -> PostgresIntegration:
    return PostgresIntegration(pooled.driver_connection)


async def write(pooled: Any, deadline_at: float, optimistic: bool) -> LabelWrites:
    clock = await _server_clock(pooled)
    kind = PostgresOneStatement if optimistic else PostgresTransaction
    return kind(pooled.driver_connection, clock.earliest_reading_at(deadline_at))
