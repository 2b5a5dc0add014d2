"""An account's activity for auditors: its events filtered by actor, type, run and time range, a page at a
time (newest first) or all of them as an export (oldest first), and how many changes each actor made per day."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import msgspec

from events.types import RecordedEvent
from service.storage.database import Database
from service.storage.sql import EventFilter, Reads

EVENT_TYPES = ("GoldLabelCreated", "GoldLabelUpdated", "GoldLabelDeleted")
CHART_DAYS = 30  # the chart's span when the filter names no start
MAX_CHART_DAYS = 92  # at most this many days are drawn (the last ones of the range)

# Where a page of activity ends: the last event's (time, label, version).
ActivityCursor = tuple[datetime, str, int]
# An event and its label's output resource name.
Named = tuple[RecordedEvent, str]


class ActivityPage(msgspec.Struct, frozen=True):
    events: list[Named]
    following: ActivityCursor | None


async def activity_page(
    db: Database, account_id: str, chosen: EventFilter, before: ActivityCursor | None, limit: int
) -> ActivityPage:
    events = await db.run_read(lambda reads: reads.events_page(account_id, chosen, before, limit + 1))
    following = None
    if len(events) > limit:
        last = events[limit - 1][0]
        following = (last.recorded_at, last.stream_id, last.version)
    return ActivityPage(events[:limit], following)


async def export_events(db: Database, account_id: str, chosen: EventFilter) -> AsyncIterator[Named]:
    """Every event the filter keeps, oldest first, on one read transaction: an export is as long as it is (no
    time limit)."""
    async with db.read() as reads:
        async for event in reads.filtered_events(account_id, chosen):
            yield event


class Chart(msgspec.Struct, frozen=True):
    """Changes (events) per UTC day and actor, over `days` (every day of the span, oldest first)."""

    days: list[str]
    actors: list[str]  # the most active first
    counts: dict[str, dict[str, int]]  # day -> actor -> events
    clipped: bool  # the range was longer than MAX_CHART_DAYS: only its last days are drawn


def _day(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def changes_per_day(db: Database, account_id: str, chosen: EventFilter) -> Chart:
    """The chart of the filtered events: over the filter's time range, or (without a start) the CHART_DAYS days
    up to its end or the newest event it keeps; never more than MAX_CHART_DAYS days."""

    async def chart(reads: Reads) -> Chart:
        end = chosen.until
        if end is None:
            newest = await reads.events_page(account_id, chosen, None, 1)
            end = _day(newest[0][0].recorded_at if newest else datetime.now(UTC)) + timedelta(days=1)
        start = chosen.since or _day(end - timedelta(microseconds=1)) - timedelta(days=CHART_DAYS - 1)
        clipped = end - start > timedelta(days=MAX_CHART_DAYS)
        if clipped:
            start = _day(end - timedelta(microseconds=1)) - timedelta(days=MAX_CHART_DAYS - 1)
        rows = await reads.changes_per_day(account_id, msgspec.structs.replace(chosen, since=start, until=end))
        days, day = [], _day(start)
        while day < end:
            days.append(day.strftime("%Y-%m-%d"))
            day += timedelta(days=1)
        counts: dict[str, dict[str, int]] = {}
        totals: dict[str, int] = {}
        for when, actor, count in rows:
            counts.setdefault(when, {})[actor] = count
            totals[actor] = totals.get(actor, 0) + count
        actors = sorted(totals, key=lambda actor: (-totals[actor], actor))
        return Chart(days, actors, counts, clipped)

    return await db.run_read(chart)
