"""A label's timeline for auditors, a page of versions at a time: each event with the label's value just before
and just after it, and the label as it stood at any version. Deleted labels included; scoped to the account."""

from __future__ import annotations

import msgspec

from events.types import NULL, GoldLabelCreated, GoldLabelUpdated, RecordedEvent
from projections.fold import LabelState, fold
from service.storage.database import Database
from service.storage.sql import Reads
from service.usecases.labels import LabelNotFound


class VersionNotFound(Exception):
    def __init__(self, version: int, last: int) -> None:
        super().__init__(f"the label has no version {version}: its versions are 1 to {last}")


class Value(msgspec.Struct, frozen=True):
    """A label's value: its text, or its object as the exact JSON text stored, and the partial flag."""

    text_value: str | None
    object_value: str | None
    object_value_is_partial: bool | None


class Moment(msgspec.Struct, frozen=True):
    """One event of the label, and its value before and after it (None: the label did not exist, or was deleted)."""

    event: RecordedEvent
    before: Value | None
    after: Value | None


class Timeline(msgspec.Struct, frozen=True):
    label: LabelState  # as it stands now (deleted labels too)
    moments: list[Moment]  # newest first
    newest: int  # the versions this page shows, newest..oldest
    oldest: int


def value_after(event: RecordedEvent, before: Value | None) -> Value | None:
    """The label's value after an event: a create or an update carries the whole value, not a patch."""
    data = event.data
    if isinstance(data, GoldLabelCreated | GoldLabelUpdated):
        text = None if data.object_value == NULL else bytes(data.object_value).decode()
        return Value(data.text_value, text, data.object_value_is_partial)
    return None  # deleted


async def _label(reads: Reads, account_id: str, run_id: str, label_id: str) -> LabelState:
    state = await reads.label(account_id, label_id)
    if state is None or state.run_id != run_id:
        raise LabelNotFound(run_id, label_id)
    return state


async def timeline(
    db: Database, account_id: str, run_id: str, label_id: str, newest: int | None, size: int
) -> Timeline:
    """The events of versions `newest` (default: the label's latest) down to `size` versions before it."""

    async def page(reads: Reads) -> Timeline:
        label = await _label(reads, account_id, run_id, label_id)
        last = label.version if newest is None else max(1, min(newest, label.version))
        first = max(1, last - size + 1)
        # One version before the page too: the value each event started from.
        events = await reads.stream_versions(account_id, label_id, max(1, first - 1), last)
        moments, value = [], None
        for event in events:
            after = value_after(event, value)
            if event.version >= first:
                moments.append(Moment(event, value, after))
            value = after
        return Timeline(label, moments[::-1], last, first)

    return await db.run_read(page)


async def state_at_version(db: Database, account_id: str, run_id: str, label_id: str, version: int) -> LabelState:
    """The label right after `version` (a deleted one keeps its last value and says when it was deleted): the
    same fold as every other read, over versions 1 to `version`."""

    async def state(reads: Reads) -> LabelState:
        label = await _label(reads, account_id, run_id, label_id)
        if version > label.version:
            raise VersionNotFound(version, label.version)
        return fold(await reads.stream_versions(account_id, label_id, 1, version))

    return await db.run_read(state)
