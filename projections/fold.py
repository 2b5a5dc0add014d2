"""The projector: one pure fold `state x event -> state`, used inline, for rebuilds and for as-of reads."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from events.types import NULL, GoldLabelCreated, GoldLabelDeleted, GoldLabelUpdated, RecordedEvent, SealedEvent


class LabelState(msgspec.Struct, frozen=True):
    """A label after some prefix of its stream; deleted labels keep their last state as a tombstone."""

    id: str
    account_id: str
    run_id: str
    output_resource_name: str
    created_by: str
    created_at: datetime
    updated_by: str
    updated_at: datetime
    version: int
    hash: str
    text_value: str | None = None
    object_value: msgspec.Raw = NULL
    object_value_is_partial: bool | None = None
    deleted_by: str | None = None
    deleted_at: datetime | None = None

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None

    @property
    def last_recorded_at(self) -> datetime:
        return self.deleted_at or self.updated_at


class FoldError(Exception):
    """An event that cannot follow the state it is applied to: the log is inconsistent."""

    def __init__(self, event: SealedEvent, problem: str) -> None:
        where = f"at position {event.position} " if isinstance(event, RecordedEvent) else ""
        super().__init__(f"event {where}(label {event.stream_id}, version {event.version}): {problem}")
        self.event = event


def apply(state: LabelState | None, event: SealedEvent) -> LabelState:
    data = event.data
    if isinstance(data, GoldLabelCreated):
        if state is not None:
            raise FoldError(event, "created twice")
        if event.version != 1:
            raise FoldError(event, "a label's stream must start at version 1")
        return LabelState(
            id=event.stream_id,
            account_id=event.account_id,
            run_id=data.run_id,
            output_resource_name=data.output_resource_name,
            text_value=data.text_value,
            object_value=data.object_value,
            object_value_is_partial=data.object_value_is_partial,
            created_by=event.actor,
            created_at=event.recorded_at,
            updated_by=event.actor,
            updated_at=event.recorded_at,
            version=1,
            hash=event.hash,
        )
    if state is None:
        raise FoldError(event, "the label was never created")
    if state.deleted:
        raise FoldError(event, "the label was already deleted")
    if event.version != state.version + 1:
        raise FoldError(event, f"expected version {state.version + 1}")
    if isinstance(data, GoldLabelUpdated):
        return msgspec.structs.replace(
            state,
            text_value=data.text_value,
            object_value=data.object_value,
            object_value_is_partial=data.object_value_is_partial,
            updated_by=event.actor,
            updated_at=event.recorded_at,
            version=event.version,
            hash=event.hash,
        )
    if isinstance(data, GoldLabelDeleted):
        return msgspec.structs.replace(
            state,
            deleted_by=event.actor,
            deleted_at=event.recorded_at,
            version=event.version,
            hash=event.hash,
        )
    raise FoldError(event, f"unknown event type {type(data).__name__}")


def fold(events: Iterable[SealedEvent], state: LabelState | None = None) -> LabelState | None:
    for event in events:
        state = apply(state, event)
    return state
