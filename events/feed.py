"""The global feed: every committed event exactly once, in an order that never changes.

On PostgreSQL positions are handed out before commit, so "position > cursor" would skip an event
whose transaction commits after a later one. The feed is therefore ordered by (transaction id,
position) and only reads transactions older than every one still in flight: below that horizon
nothing new can ever appear, so a cursor never skips. SQLite has a single writer whose positions are
in commit order; there every tx_id is 0 and the order is simply the position order.

A cursor is "<tx_id>-<position>" of the last event read; the empty cursor is the start of the log.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from events.schema import XID8, events
from events.types import RecordedEvent
from service.storage.store import COLUMNS, from_row

START = "0-0"
_CURSOR = re.compile(r"([0-9]{1,19})-([0-9]{1,19})")
# Both parts are signed 64-bit integers in the database (SQLite INTEGER, PostgreSQL bigint; xid8 is
# unsigned, but its values stay far below 2**63), and SQLite cannot even bind a larger one.
_MAX_PART = 2**63 - 1


class BadCursor(ValueError):
    """The cursor was not made by this feed."""


class FeedPoint(msgspec.Struct, frozen=True, order=True):
    tx_id: int
    position: int

    @property
    def cursor(self) -> str:
        return f"{self.tx_id}-{self.position}"

    @classmethod
    def parse(cls, cursor: str | None) -> FeedPoint:
        found = _CURSOR.fullmatch(cursor or START)
        point = None if found is None else cls(int(found.group(1)), int(found.group(2)))
        if point is None or max(point.tx_id, point.position) > _MAX_PART:
            raise BadCursor(f"{(cursor or '')[:60]!r} is not a cursor of this feed: pass back a 'next' value")
        return point


def _tx_value(conn: AsyncConnection, tx_id: int):
    return sa.cast(sa.literal(str(tx_id)), XID8()) if conn.dialect.name == "postgresql" else sa.literal(tx_id)


def _of_account(query: sa.Select, account_id: str | None) -> sa.Select:
    """One account's events, or the whole log (for operators) when no account is named."""
    return query if account_id is None else query.where(events.c.account_id == account_id)


def _feed_query(conn: AsyncConnection, account_id: str | None, after: FeedPoint) -> sa.Select:
    query = _of_account(sa.select(*COLUMNS, events.c.tx_id), account_id).order_by(events.c.tx_id, events.c.position)
    if after != FeedPoint.parse(START):
        query = query.where(
            sa.tuple_(events.c.tx_id, events.c.position) > sa.tuple_(_tx_value(conn, after.tx_id), after.position)
        )
    if conn.dialect.name == "postgresql":
        horizon = sa.func.pg_snapshot_xmin(sa.func.pg_current_snapshot())
        query = query.where(events.c.tx_id < horizon)
    return query


async def read_page(
    conn: AsyncConnection, account_id: str | None, after: FeedPoint, limit: int
) -> list[tuple[FeedPoint, RecordedEvent]]:
    """Up to `limit` events after the cursor, in feed order, each with its own feed point."""
    result = await conn.execute(_feed_query(conn, account_id, after).limit(limit))
    return [(FeedPoint(row.tx_id, row.position), from_row(row)) for row in result]


async def stream(
    conn: AsyncConnection, account_id: str | None, after: FeedPoint, batch_size: int = 2000
) -> AsyncIterator[tuple[FeedPoint, RecordedEvent]]:
    """Every event after the cursor, read with a server-side cursor so memory stays flat."""
    result = await conn.stream(_feed_query(conn, account_id, after).execution_options(yield_per=batch_size))
    async for row in result:
        yield FeedPoint(row.tx_id, row.position), from_row(row)


async def point_of(conn: AsyncConnection, account_id: str | None, position: int) -> FeedPoint | None:
    query = _of_account(sa.select(events.c.tx_id).where(events.c.position == position), account_id)
    tx_id = (await conn.execute(query)).scalar_one_or_none()
    return None if tx_id is None else FeedPoint(tx_id, position)


async def newest_point(conn: AsyncConnection, account_id: str | None) -> FeedPoint | None:
    """The last event of the account's feed that is final (below the commit horizon)."""
    query = _feed_query(conn, account_id, FeedPoint.parse(START)).order_by(None)
    query = query.order_by(events.c.tx_id.desc(), events.c.position.desc()).limit(1)
    row = (await conn.execute(query)).first()
    return None if row is None else FeedPoint(row.tx_id, row.position)


async def digest(conn: AsyncConnection, account_id: str | None, upto: FeedPoint) -> str:
    """SHA-256 over (position, hash) of every account event up to `upto`, in feed order.

    Each event's hash already covers its content and its predecessor, so changing, removing or
    reordering anything at or before `upto` changes this value.
    """
    running = hashlib.sha256()
    query = (
        _of_account(sa.select(events.c.position, events.c.hash), account_id)
        .where(sa.tuple_(events.c.tx_id, events.c.position) <= sa.tuple_(_tx_value(conn, upto.tx_id), upto.position))
        .order_by(events.c.tx_id, events.c.position)
        .execution_options(yield_per=5000)
    )
    async for position, event_hash in await conn.stream(query):
        running.update(f"{position}:{event_hash}\n".encode())
    return running.hexdigest()
