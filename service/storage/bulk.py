"""Whole-table reads and writes for replays, on the driver connection: every event in position order,
and the read model read or replaced in one go. Where SQLite and PostgreSQL differ for these, it is here.

SQLAlchemy's per-row result and parameter processing costs more than a replay's own work per event,
so these skip it and hand over plain tuples in batches.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from projections.fold import LabelState
from service.storage.read_model import FIELDS, to_values

# (position, account_id, stream_id, version, run_id, type, data, actor, recorded_at, request_id, reason,
#  prev_hash, hash, tx_id): `data` is the stored JSON text, `recorded_at` the UTC text the hash covers
# (events.types.format_time), e.g. 2026-01-01T00:00:00.000001Z; (tx_id, position) is the event's place in
# the feed (events.feed).
EventRow = tuple[int, str, str, int, str, str, str, str, str, str, str | None, str, str, int]

# The database spells out the time as the hash has it: formatting a datetime in Python costs more than
# the rest of an event's hash. The text is only trusted for events whose hash it matches, and then it
# is exactly what was hashed when the event was written (a wrong spelling could only fail the check).
_TX_ID = {"postgresql": "tx_id::text::bigint", "sqlite": "tx_id"}
_TIME_TEXT = {
    "postgresql": """to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""",
    # SQLite holds the fixed-width UTC text SQLAlchemy writes: 2026-01-01 00:00:00.000001.
    "sqlite": "replace(recorded_at, ' ', 'T') || 'Z'",
}


def _events_in_order(dialect: str) -> str:
    return (
        "SELECT position, account_id, stream_id, version, run_id, type, data, actor, "
        f"{_TIME_TEXT[dialect]}, request_id, reason, prev_hash, hash, {_TX_ID[dialect]} FROM events ORDER BY position"
    )


_READ_MODEL = f"SELECT {', '.join(FIELDS)} FROM gold_labels"


async def _driver(conn: AsyncConnection) -> Any:
    """The psycopg or aiosqlite connection under `conn`, in the same transaction."""
    return (await conn.get_raw_connection()).driver_connection


async def _batches(conn: AsyncConnection, query: str, batch_size: int) -> AsyncIterator[list[tuple]]:
    driver = await _driver(conn)
    if conn.dialect.name == "sqlite":
        # aiosqlite fetches in its own thread.
        cursor = await driver.execute(query)
        try:
            while batch := await cursor.fetchmany(batch_size):
                yield batch
        finally:
            await cursor.close()
        return
    # A server-side cursor, so the client holds a batch at a time; each FETCH is sent before the batch
    # before it is handed over, so the server produces it (into the socket's buffers) while the caller
    # works, instead of idling between fetches.
    async with driver.cursor(name="goldtrail_scan") as cursor:
        await cursor.execute(query)
        batch = await cursor.fetchmany(batch_size)
        while batch:
            following = asyncio.ensure_future(cursor.fetchmany(batch_size))
            await asyncio.sleep(0)  # the task's first step sends the FETCH
            try:
                yield batch
            finally:
                # Also when the caller stops early: the connection is free again only after this answer.
                batch = await following


def event_batches(conn: AsyncConnection, batch_size: int) -> AsyncIterator[list[EventRow]]:
    """Every event, in position order, `batch_size` rows at a time. Use it in `contextlib.aclosing`:
    the connection is free for other statements only once it is closed."""
    return _batches(conn, _events_in_order(conn.dialect.name), batch_size)


def read_model_batches(conn: AsyncConnection, batch_size: int) -> AsyncIterator[list[tuple]]:
    """Every read-model row, as values in `read_model.FIELDS` order (see `read_model.from_values`)."""
    return _batches(conn, _READ_MODEL, batch_size)


async def lock_read_model(conn: AsyncConnection) -> None:
    """Make writers wait until this transaction ends; readers go on.

    Every write changes its label's row in the same transaction as its event, so with this taken before
    the events are read, no event can commit unseen between the read and the end of the transaction.
    SQLite's write transaction (BEGIN IMMEDIATE) already excludes every other writer.
    """
    if conn.dialect.name == "postgresql":
        driver = await _driver(conn)
        await driver.execute("LOCK TABLE gold_labels IN EXCLUSIVE MODE")


def _sqlite_time(moment: datetime | None) -> str | None:
    """A UTC time as SQLAlchemy's SQLite DATETIME stores it, as the inline projection writes it."""
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


_TIMES = [FIELDS.index(name) for name in ("created_at", "updated_at", "deleted_at")]


async def replace_read_model(conn: AsyncConnection, states: Iterable[LabelState]) -> int:
    """Delete every read-model row and write one per state; returns how many were written."""
    driver = await _driver(conn)
    columns = ", ".join(FIELDS)
    count = 0
    if conn.dialect.name == "postgresql":
        await driver.execute("DELETE FROM gold_labels")
        async with driver.cursor() as cursor, cursor.copy(f"COPY gold_labels ({columns}) FROM STDIN") as copy:
            for state in states:
                await copy.write_row(to_values(state))
                count += 1
        return count
    rows = []
    for state in states:
        row = to_values(state)
        for index in _TIMES:
            row[index] = _sqlite_time(row[index])
        rows.append(row)
    await driver.execute("DELETE FROM gold_labels")
    await driver.executemany(f"INSERT INTO gold_labels ({columns}) VALUES ({', '.join('?' * len(FIELDS))})", rows)
    return len(rows)
