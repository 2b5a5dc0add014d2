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
from collections.abc import AsyncIterable

import msgspec

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


_LOG_CURSOR = re.compile(r"[0-9]{1,19}")


def parse_cursor(cursor: str | None) -> int | FeedPoint:
    """A cursor of an account's feed: the number of log entries already read (a tree size), or an older
    cursor "<tx_id>-<position>" of the global feed order, which the caller maps onto the log."""
    if not cursor:
        return 0
    if _LOG_CURSOR.fullmatch(cursor) and int(cursor) <= _MAX_PART:
        return int(cursor)
    return FeedPoint.parse(cursor)


async def digest(hashes: AsyncIterable[tuple[int, str]]) -> str:
    """SHA-256 over (position, hash) of events in feed order (a log's digest up to some point).

    Each event's hash already covers its content and its predecessor, so changing, removing or
    reordering any event covered changes this value.
    """
    running = hashlib.sha256()
    async for position, event_hash in hashes:
        running.update(f"{position}:{event_hash}\n".encode())
    return running.hexdigest()
