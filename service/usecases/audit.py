"""The auditors' use cases: a label's history, labels and runs as of a time or version, the event
feed and digests of the log. All are read-only and scoped to the caller's account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from events import feed
from events.schema import events
from events.types import NULL, RecordedEvent, format_time
from projections.fold import LabelState, apply, fold
from service.http.views import RunGoldLabel, run_gold_label
from service.storage import store
from service.storage.database import Database
from service.usecases.labels import LabelNotFound, RunNotFound


class Change(msgspec.Struct, frozen=True):
    from_: Any = msgspec.field(name="from")
    to: Any = None


class HistoryEntry(msgspec.Struct, frozen=True):
    version: int
    type: str
    actor: str
    recorded_at: str
    request_id: str
    reason: str | None
    changes: dict[str, Change]
    state: RunGoldLabel | None
    position: int
    hash: str


class FeedEvent(msgspec.Struct, frozen=True):
    cursor: str
    position: int
    label_id: str
    run_id: str
    version: int
    type: str
    actor: str
    recorded_at: str
    request_id: str
    reason: str | None
    data: Any
    prev_hash: str
    hash: str


class Digest(msgspec.Struct, frozen=True):
    position: int
    digest: str


class PositionNotFound(Exception):
    def __init__(self, position: int) -> None:
        super().__init__(f"no event at position {position} in this account's log")


MAX_POSITION = 2**63 - 1  # positions are signed 64-bit integers in both databases
_NOTHING = {field: None for field in RunGoldLabel.__struct_fields__}


def _visible(state: LabelState | None) -> RunGoldLabel | None:
    return None if state is None or state.deleted else run_gold_label(state)


def _fields(view: RunGoldLabel | None) -> dict[str, Any]:
    if view is None:
        return _NOTHING
    return {name: None if value == NULL else value for name, value in msgspec.structs.asdict(view).items()}


def _changes(before: RunGoldLabel | None, after: RunGoldLabel | None) -> dict[str, Change]:
    """Each field whose value changed; a delete changes no field (the label just stops existing)."""
    if after is None:
        return {}
    old, new = _fields(before), _fields(after)
    return {name: Change(old[name], new[name]) for name in new if old[name] != new[name]}


def history_of(stream: list[RecordedEvent]) -> list[HistoryEntry]:
    entries, state = [], None
    for event in stream:
        before = _visible(state)
        state = apply(state, event)
        after = _visible(state)
        entries.append(
            HistoryEntry(
                version=event.version,
                type=event.type,
                actor=event.actor,
                recorded_at=format_time(event.recorded_at),
                request_id=event.request_id,
                reason=event.reason,
                changes=_changes(before, after),
                state=after,
                position=event.position,
                hash=event.hash,
            )
        )
    return entries


async def _stream_of(db: Database, account_id: str, run_id: str, label_id: str) -> list[RecordedEvent]:
    stream = await db.run_read(lambda conn: store.read_stream(conn, account_id, label_id))
    if not stream or stream[0].run_id != run_id:
        raise LabelNotFound(run_id, label_id)
    return stream


async def label_history(db: Database, account_id: str, run_id: str, label_id: str) -> list[HistoryEntry]:
    return history_of(await _stream_of(db, account_id, run_id, label_id))


async def label_as_of(
    db: Database, account_id: str, run_id: str, label_id: str, *, at: datetime | None, version: int | None
) -> LabelState:
    """The label as it stood at a moment or a version: the same fold, over a prefix of its stream."""
    stream = await _stream_of(db, account_id, run_id, label_id)
    prefix = [e for e in stream if (at is None or e.recorded_at <= at) and (version is None or e.version <= version)]
    if version is not None and version > len(stream):
        raise LabelNotFound(run_id, label_id)
    state = fold(prefix)
    if state is None or state.deleted:
        raise LabelNotFound(run_id, label_id)
    return state


async def run_as_of(db: Database, account_id: str, run_id: str, at: datetime) -> list[LabelState]:
    """Every label of a run as it stood at `at`, oldest first: one indexed scan of the run's events."""
    query = (
        sa.select(*store.COLUMNS)
        .where(events.c.account_id == account_id, events.c.run_id == run_id, events.c.recorded_at <= at)
        .order_by(events.c.position)
    )

    async def replay_run(conn: AsyncConnection) -> dict[str, LabelState]:
        states: dict[str, LabelState] = {}
        async for row in await conn.stream(query.execution_options(yield_per=5000)):
            event = store.from_row(row)
            states[event.stream_id] = apply(states.get(event.stream_id), event)
        return states

    states = await db.run_read(replay_run)
    if not states:
        raise RunNotFound(run_id)
    return sorted((s for s in states.values() if not s.deleted), key=lambda s: (s.created_at, s.id))


def feed_event(point: feed.FeedPoint, event: RecordedEvent) -> FeedEvent:
    return FeedEvent(
        cursor=point.cursor,
        position=event.position,
        label_id=event.stream_id,
        run_id=event.run_id,
        version=event.version,
        type=event.type,
        actor=event.actor,
        recorded_at=format_time(event.recorded_at),
        request_id=event.request_id,
        reason=event.reason,
        data=event.data,
        prev_hash=event.prev_hash,
        hash=event.hash,
    )


async def feed_page(
    db: Database, account_id: str | None, after: feed.FeedPoint, limit: int
) -> tuple[list[FeedEvent], str]:
    """A page of the feed and the cursor to ask for the next one (the same cursor when nothing is new)."""
    page = await db.run_read(lambda conn: feed.read_page(conn, account_id, after, limit))
    return [feed_event(point, event) for point, event in page], (page[-1][0] if page else after).cursor


async def feed_stream(db: Database, account_id: str | None, after: feed.FeedPoint) -> AsyncIterator[FeedEvent]:
    # An export runs as long as the log is long: no time limit, and the stream cannot be restarted.
    async with db.read() as conn:
        async for point, event in feed.stream(conn, account_id, after):
            yield feed_event(point, event)


async def log_digest(db: Database, account_id: str, position: int | None) -> Digest:
    return await db.run_read(lambda conn: _digest(conn, account_id, position))


async def _digest(conn: AsyncConnection, account_id: str, position: int | None) -> Digest:
    if position is None:
        point = await feed.newest_point(conn, account_id) or feed.FeedPoint(0, 0)
    elif position == 0:
        point = feed.FeedPoint(0, 0)
    elif position > MAX_POSITION:
        raise PositionNotFound(position)
    else:
        point = await feed.point_of(conn, account_id, position)
        if point is None:
            raise PositionNotFound(position)
    return Digest(position=point.position, digest=await feed.digest(conn, account_id, point))
