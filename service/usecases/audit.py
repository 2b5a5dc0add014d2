"""The auditors' use cases: a label's history, labels and runs as of a time or version, the event feed and
digests of the log. All are read-only and scoped to the caller's account (operators may read the whole log
by naming no account)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

import msgspec

from events import feed
from events.feed import FeedPoint
from events.types import RecordedEvent
from projections.fold import LabelState, apply, fold
from projections.history import Step, history
from service.storage.database import Database
from service.storage.sql import Reads
from service.usecases.labels import LabelNotFound, RunNotFound, live_in_run

MAX_POSITION = 2**63 - 1  # positions are signed 64-bit integers in both databases
FeedItem = tuple[FeedPoint, RecordedEvent]


class Digest(msgspec.Struct, frozen=True):
    """The digest of an account's log up to and including the event at `position` (0: the empty log)."""

    position: Annotated[int, msgspec.Meta(ge=0)]
    digest: str


class PositionNotFound(Exception):
    def __init__(self, position: int) -> None:
        super().__init__(f"no event at position {position} in this account's log")


async def _stream_of(db: Database, account_id: str, run_id: str, label_id: str) -> list[RecordedEvent]:
    stream = await db.run_read(lambda reads: reads.stream(account_id, label_id))
    if not stream or stream[0].run_id != run_id:
        raise LabelNotFound(run_id, label_id)
    return stream


async def label_history(db: Database, account_id: str, run_id: str, label_id: str) -> list[Step]:
    return history(await _stream_of(db, account_id, run_id, label_id))


async def label_as_of(
    db: Database, account_id: str, run_id: str, label_id: str, *, at: datetime | None, version: int | None
) -> LabelState:
    """The label as it stood at a moment or a version: the same fold, over a prefix of its stream."""
    stream = await _stream_of(db, account_id, run_id, label_id)
    if version is not None and version > len(stream):
        raise LabelNotFound(run_id, label_id)
    prefix = [e for e in stream if (at is None or e.recorded_at <= at) and (version is None or e.version <= version)]
    return live_in_run(fold(prefix), run_id, label_id)


async def run_as_of(db: Database, account_id: str, run_id: str, at: datetime) -> list[LabelState]:
    """Every label of a run as it stood at `at`, oldest first: one indexed scan of the run's events."""

    async def replay_run(reads: Reads) -> dict[str, LabelState]:
        states: dict[str, LabelState] = {}
        async for event in reads.run_events_until(account_id, run_id, at):
            states[event.stream_id] = apply(states.get(event.stream_id), event)
        return states

    states = await db.run_read(replay_run)
    if not states:
        raise RunNotFound(run_id)
    return sorted((s for s in states.values() if not s.deleted), key=lambda s: (s.created_at, s.id))


async def feed_page(db: Database, account_id: str | None, after: FeedPoint, limit: int) -> tuple[list[FeedItem], str]:
    """A page of the feed and the cursor to ask for the next one (the same cursor when nothing is new)."""
    page = await db.run_read(lambda reads: reads.feed_page(account_id, after, limit))
    return page, (page[-1][0] if page else after).cursor


async def feed_stream(db: Database, account_id: str | None, after: FeedPoint) -> AsyncIterator[FeedItem]:
    """Every event after the cursor, in feed order. An export runs as long as the log is long: no time limit."""
    async with db.read() as reads:
        async for item in reads.feed(account_id, after):
            yield item


async def digest_at(reads: Reads, account_id: str | None, position: int | None) -> Digest | None:
    """The digest of the log up to the event at `position` (the newest final event when None; the empty log
    at 0), or None when there is no such event (it may have been removed)."""
    if position is None:
        point = await reads.newest_point(account_id) or FeedPoint(0, 0)
    elif position == 0:
        point = FeedPoint(0, 0)
    elif position > MAX_POSITION:
        return None
    else:
        point = await reads.point_of(account_id, position)
        if point is None:
            return None
    return Digest(position=point.position, digest=await feed.digest(reads.feed_hashes(account_id, point)))


async def log_digest(db: Database, account_id: str, position: int | None) -> Digest:
    found = await db.run_read(lambda reads: digest_at(reads, account_id, position))
    if found is None:
        raise PositionNotFound(position)
    return found
