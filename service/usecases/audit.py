"""The auditors' use cases: a label's history, labels and runs as of a time or version, the event feed and
digests of the log. All are read-only and scoped to the caller's account (operators may read the whole log
by naming no account)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, TypeVar

import msgspec

from events import feed
from events.feed import FeedPoint
from events.types import RecordedEvent
from projections.fold import LabelState, apply, fold
from projections.history import Step, history
from service.storage.database import Database
from service.storage.errors import DatabaseUnavailable
from service.storage.replicas import ReadRoute, recovery_conflict
from service.storage.sql import Reads
from service.usecases.labels import LabelNotFound, RunNotFound, live_in_run

T = TypeVar("T")
MAX_POSITION = 2**63 - 1  # positions are signed 64-bit integers in both databases


class Digest(msgspec.Struct, frozen=True, omit_defaults=True):
    """The digest of an account's log: of its first `tree_size` entries, or (the older form, for digests
    kept before the log had indexes) of its events up to and including the one at `position`."""

    digest: str
    tree_size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    position: Annotated[int, msgspec.Meta(ge=0)] | None = None


class PositionNotFound(Exception):
    def __init__(self, position: int) -> None:
        super().__init__(f"no event at position {position} in this account's log")


class TreeSizeNotReached(Exception):
    def __init__(self, size: int, current: int) -> None:
        super().__init__(f"this account's log holds {current} entries, not {size} (yet)")


async def _stream_of(db: Database, account_id: str, run_id: str, label_id: str) -> list[RecordedEvent]:
    stream = await db.run_read(lambda reads: reads.stream_with_index(account_id, label_id))
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


async def _start(reads: Reads, account_id: str, cursor: int | FeedPoint) -> int:
    return cursor if isinstance(cursor, int) else await reads.first_index_after(account_id, cursor)


async def feed_page(
    db: Database, account_id: str, cursor: int | FeedPoint, limit: int
) -> tuple[list[RecordedEvent], int]:
    """A page of the account's log from the cursor (events.feed.parse_cursor), and the cursor of the next
    page: the number of entries read (the same cursor when nothing is new)."""

    async def page(reads: Reads) -> tuple[list[RecordedEvent], int]:
        start = await _start(reads, account_id, cursor)
        events = await reads.log_page(account_id, start, limit)
        return events, (events[-1].log_index + 1 if events else start)

    return await db.run_read(page)


class StreamCutShort(DatabaseUnavailable):
    """A long read could not go on (every database it could use failed); `resume` is the cursor it got to."""

    def __init__(self, resume: int | str, reason: str) -> None:
        super().__init__(reason)
        self.resume = resume


STREAM_PAGE = 1000  # entries per short read of a stream
_STREAM_RETRIES = 8  # reads of one page in a row that a standby may cancel (recovery conflicts) before giving up


async def feed_stream(db: Database, account_id: str, cursor: int | FeedPoint) -> AsyncIterator[RecordedEvent]:
    """Every entry of the account's log from the cursor up to its size when the stream began, in log order.

    Each page is a short read of its own, so on a hot standby no long transaction holds back replay (which
    would cancel it: a recovery conflict). Log indexes are dense and final, so a page read again (on the same
    database or another) continues exactly where the last one ended. StreamCutShort names where to resume
    when no database can serve a page."""

    async def bounds(reads: Reads) -> tuple[int, int]:
        head = await reads.log_head(account_id)
        return await _start(reads, account_id, cursor), 0 if head is None else head[0]

    start, end = await _retrying(db, bounds, cursor if isinstance(cursor, int) else cursor.cursor)
    while start < end:
        limit = min(STREAM_PAGE, end - start)

        async def read_page(reads: Reads, start: int = start, limit: int = limit) -> list[RecordedEvent]:
            return await reads.log_page(account_id, start, limit)

        page = await _retrying(db, read_page, start)
        if not page and isinstance(db, ReadRoute):
            # A standby behind the size the stream began with (the primary gave it, or a fresher standby).
            page = await _retrying(db.primary, read_page, start)
        if not page:
            return
        for event in page:
            yield event
        start = page[-1].log_index + 1


async def _retrying(db: Database, work: Callable[[Reads], Awaitable[T]], resume: int | str) -> T:
    """`work` as one short read; again, after a pause, when a standby cancelled it (a recovery conflict)."""
    for attempt in range(_STREAM_RETRIES):
        try:
            return await db.run_read(work)
        except DatabaseUnavailable as error:
            raise StreamCutShort(resume, str(error)) from error
        except Exception as error:
            if not recovery_conflict(error):
                raise
            if attempt == _STREAM_RETRIES - 1:
                raise StreamCutShort(resume, f"the standby cancelled the read {_STREAM_RETRIES} times") from error
            await asyncio.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")


async def whole_feed(db: Database, after: FeedPoint) -> AsyncIterator[tuple[FeedPoint, RecordedEvent]]:
    """For operators: every account's events after the cursor, in the global feed order."""
    async with db.read() as reads:
        async for item in reads.feed(None, after):
            yield item


async def _log_hashes(reads: Reads, account_id: str, size: int) -> AsyncIterator[tuple[int, str]]:
    async for event in reads.log_events(account_id, 0):
        if event.log_index >= size:
            return
        yield event.log_index, event.hash


async def digest_at(
    reads: Reads, account_id: str | None, *, tree_size: int | None = None, position: int | None = None
) -> Digest | None:
    """The digest of the account's log: of its first `tree_size` entries (all of them when neither is given),
    or, the older form, of its events up to the one at `position` (0: the empty log). None when the log is
    not that long, or no such event is there (it may have been removed)."""
    if position is None:
        head = await reads.log_head(account_id)
        current = 0 if head is None else head[0]
        size = current if tree_size is None else tree_size
        if size > current:
            return None
        return Digest(tree_size=size, digest=await feed.digest(_log_hashes(reads, account_id, size)))
    if position == 0:
        point = FeedPoint(0, 0)
    elif position > MAX_POSITION:
        return None
    else:
        point = await reads.point_of(account_id, position)
        if point is None:
            return None
    return Digest(position=point.position, digest=await feed.digest(reads.feed_hashes(account_id, point)))


async def log_digest(db: Database, account_id: str, *, tree_size: int | None, position: int | None) -> Digest:
    found = await db.run_read(lambda reads: digest_at(reads, account_id, tree_size=tree_size, position=position))
    if found is None:
        if position is not None:
            raise PositionNotFound(position)
        head = await db.run_read(lambda reads: reads.log_head(account_id))
        raise TreeSizeNotReached(tree_size, 0 if head is None else head[0])
    return found
