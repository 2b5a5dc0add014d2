"""An account's runs for auditors: the runs most recently changed first, a run's labels as they stood at any
time a page at a time, and what changed in a run between two times. Read-only, scoped to the caller's
account, and each call costs a page's worth of work (DESIGN.md §3.2)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import msgspec

from events.types import RecordedEvent
from projections.fold import LabelState, fold
from service.storage.database import Database
from service.storage.sql import Reads
from service.usecases.commands import InvalidInput
from service.usecases.labels import LabelCursor, RunNotFound

_RUN_ID_PREFIX = re.compile(r"[0-9a-f-]{1,36}")
# Candidate labels read at a time while looking for a page of changes (most candidates are changes).
_CANDIDATES = 500


class RunOverview(msgspec.Struct, frozen=True):
    """One run: its labels (ever created, and live now), its events, and its newest event."""

    run_id: str
    labels: int
    live_labels: int
    events: int
    newest: RecordedEvent


class RunPage(msgspec.Struct, frozen=True):
    runs: list[RunOverview]
    following: str | None  # the run to continue after, or None after the last page


async def list_runs(db: Database, account_id: str, after: str | None, limit: int, search: str | None) -> RunPage:
    """A page of the account's runs, most recently changed first (by their newest event); with `search`, the
    runs whose id starts with it (any case) or that ever held a label whose output resource name starts with
    it (exactly). `after` is the last run of the page before."""
    search = search.strip() if search else None
    run_prefix = search.lower() if search and _RUN_ID_PREFIX.fullmatch(search.lower()) else None

    async def page(reads: Reads) -> RunPage:
        before = None
        if after is not None:
            before = await reads.newest_position(account_id, after)
            if before is None:
                raise InvalidInput('after must be the cursor of a Link: rel="next" of this list', "after")
        found = await reads.newest_runs(
            account_id, before, limit + 1, run_prefix=run_prefix, name=search if search else None
        )
        shown = found[:limit]
        ids = [run_id for run_id, _ in shown]
        totals = await reads.run_totals(account_id, ids)
        newest = await reads.events_at(account_id, [position for _, position in shown])
        runs = [RunOverview(run_id, *totals[run_id], newest=newest[position]) for run_id, position in shown]
        return RunPage(runs, ids[-1] if len(found) > limit else None)

    return await db.run_read(page)


class RunTotals(msgspec.Struct, frozen=True):
    labels: int
    live_labels: int
    events: int


async def run_totals(db: Database, account_id: str, run_id: str) -> RunTotals:
    found = await db.run_read(lambda reads: reads.run_totals(account_id, [run_id]))
    if run_id not in found:
        raise RunNotFound(run_id)
    return RunTotals(*found[run_id])


class LabelPage(msgspec.Struct, frozen=True):
    labels: list[LabelState]
    following: LabelCursor | None
    live: int  # how many labels the run had at that time (now, without one)


def _next(states: list[LabelState], limit: int) -> LabelCursor | None:
    return LabelCursor(states[limit - 1].created_at, states[limit - 1].id) if len(states) > limit else None


def _folded(events: Iterable[RecordedEvent]) -> dict[str, LabelState]:
    """Each label's state after its events (given label by label, in version order)."""
    streams: dict[str, list[RecordedEvent]] = {}
    for event in events:
        streams.setdefault(event.stream_id, []).append(event)
    return {label_id: fold(stream) for label_id, stream in streams.items()}


async def labels_page(
    db: Database, account_id: str, run_id: str, at: datetime | None, after: LabelCursor | None, limit: int
) -> LabelPage:
    """A page of the run's live labels in list order (oldest first): now, or as they stood at `at` (the same
    fold as every as-of read, over the page's labels only)."""

    async def page(reads: Reads) -> LabelPage:
        cursor = None if after is None else (after.created_at, after.id)
        if at is None:
            states = await reads.live_labels_page(account_id, run_id, cursor, limit + 1)
            live = (await reads.run_totals(account_id, [run_id])).get(run_id, (0, 0, 0))[1]
        else:
            rows = await reads.labels_live_at(account_id, run_id, at, cursor, limit + 1)
            folded = _folded(await reads.streams_until(account_id, [row.id for row in rows], at))
            states = [folded[row.id] for row in rows if row.id in folded and not folded[row.id].deleted]
            live = await reads.count_live_at(account_id, run_id, at)
        if not states and not await reads.run_is_known(account_id, run_id):
            raise RunNotFound(run_id)
        return LabelPage(states[:limit], _next(states, limit), live)

    return await db.run_read(page)


class LabelChange(msgspec.Struct, frozen=True):
    """How one label differs between two times: added (live only at the later), removed (only at the
    earlier), or changed (live at both, with a different value)."""

    change: Literal["added", "changed", "removed"]
    before: LabelState | None
    after: LabelState | None

    @property
    def label(self) -> LabelState:
        return self.after or self.before  # type: ignore[return-value]


class ChangePage(msgspec.Struct, frozen=True):
    changes: list[LabelChange]
    following: LabelCursor | None


def _value(state: LabelState) -> tuple:
    return state.text_value, bytes(state.object_value), state.object_value_is_partial


def _live(state: LabelState | None) -> LabelState | None:
    return None if state is None or state.deleted else state


def label_change(before: LabelState | None, after: LabelState | None) -> LabelChange | None:
    """The change from one state of a label to another (None when its value is the same: a PUT that confirmed
    the value, or a label created and deleted in between, is no change of the run's labels)."""
    before, after = _live(before), _live(after)
    if before is None and after is None:
        return None
    if before is None:
        return LabelChange("added", None, after)
    if after is None:
        return LabelChange("removed", before, None)
    return None if _value(before) == _value(after) else LabelChange("changed", before, after)


async def run_changes(
    db: Database, account_id: str, run_id: str, start: datetime, end: datetime, after: LabelCursor | None, limit: int
) -> ChangePage:
    """The run's labels added, changed and removed from `start` to `end`, in list order, a page at a time."""
    if start > end:
        raise InvalidInput("from must not be later than to: give the earlier time as from", "from")

    async def page(reads: Reads) -> ChangePage:
        if not await reads.run_is_known(account_id, run_id):
            raise RunNotFound(run_id)
        changes: list[LabelChange] = []
        cursor = None if after is None else (after.created_at, after.id)
        while len(changes) <= limit:
            candidates = await reads.labels_changed_between(account_id, run_id, start, end, cursor, _CANDIDATES)
            if not candidates:
                break
            events = await reads.streams_until(account_id, [state.id for state in candidates], end)
            at_end = _folded(events)
            at_start = _folded(event for event in events if event.recorded_at <= start)
            for state in candidates:
                change = label_change(at_start.get(state.id), at_end.get(state.id))
                if change is not None:
                    changes.append(change)
            cursor = (candidates[-1].created_at, candidates[-1].id)
        following = None
        if len(changes) > limit:
            last = changes[limit - 1].label
            following = LabelCursor(last.created_at, last.id)
        return ChangePage(changes[:limit], following)

    return await db.run_read(page)
