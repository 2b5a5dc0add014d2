"""What the API returns: the documented `RunGoldLabel` with its ETag, history entries, feed pages and
health, each encoded once. These Structs are also what the OpenAPI schema is generated from."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from events.types import NULL, RecordedEvent, format_time
from projections.fold import LabelState
from projections.history import Step
from service.usecases.commands import ObjectValue
from service.usecases.idempotency import StoredResponse

# What the OpenAPI schema says of these strings beyond their Python type (encoding is unaffected).
Uuid = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uuid"})]
Timestamp = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
Version = Annotated[int, msgspec.Meta(ge=1)]


class RunGoldLabel(msgspec.Struct, frozen=True):
    """A gold label: a text value or an object value, and who created and last updated it, when."""

    id: Uuid
    account_id: str
    run_id: Uuid
    output_resource_name: str
    text_value: str | None
    object_value: ObjectValue
    object_value_is_partial: bool | None
    created_by: str
    created_at: Timestamp
    updated_by: str
    updated_at: Timestamp


class Change(msgspec.Struct, frozen=True):
    """One field's value before and after an event."""

    from_: Any = msgspec.field(name="from")
    to: Any = None


class HistoryEntry(msgspec.Struct, frozen=True):
    """One event of a label's history, the fields it changed and the label as it stood after it."""

    version: Version
    type: str
    actor: str
    recorded_at: Timestamp
    request_id: str
    reason: str | None
    changes: dict[str, Change]
    state: RunGoldLabel | None
    log_index: int | None  # the event's index in the account's log; null until integrated (within a second)
    hash: str


class FeedEvent(msgspec.Struct, frozen=True):
    """One event of the account's log, in log order, with its place in the hash chain and in the log: the
    line `goldtrail verify-log` checks (the payload is the exact stored text the chain hash covers)."""

    cursor: str
    log_index: int | None
    label_id: Uuid
    run_id: Uuid
    version: Version
    type: str
    actor: str
    recorded_at: Timestamp
    request_id: str
    reason: str | None
    data: Annotated[Any, msgspec.Meta(extra_json_schema={"type": "object"})]
    prev_hash: str
    hash: str
    chain: int
    payload: str


class FeedPage(msgspec.Struct, frozen=True):
    """A page of the feed, and the cursor to ask for the next one."""

    events: list[FeedEvent]
    next: str


class Status(msgspec.Struct, frozen=True):
    status: str


class RunSummary(msgspec.Struct, frozen=True):
    """One run of the account: its labels (live now, and ever created), its events, and its newest event."""

    run_id: Uuid
    live_labels: int
    labels: int
    events: int
    last_changed_at: Timestamp
    last_changed_by: str
    last_change: str  # the newest event's type


class GoldLabelChange(msgspec.Struct, frozen=True):
    """How one label of a run differs between two times: `added` (live only at `to`), `removed` (only at
    `from`) or `changed` (live at both, another value); the label at each time, with its version then."""

    id: Uuid
    output_resource_name: str
    change: Literal["added", "changed", "removed"]
    before: RunGoldLabel | None
    after: RunGoldLabel | None
    before_version: Version | None
    after_version: Version | None


_encoder = msgspec.json.Encoder()


def encode(value: object) -> bytes:
    return _encoder.encode(value)


def run_gold_label(state: LabelState) -> RunGoldLabel:
    return RunGoldLabel(
        id=state.id,
        account_id=state.account_id,
        run_id=state.run_id,
        output_resource_name=state.output_resource_name,
        text_value=state.text_value,
        object_value=state.object_value,
        object_value_is_partial=state.object_value_is_partial,
        created_by=state.created_by,
        created_at=format_time(state.created_at),
        updated_by=state.updated_by,
        updated_at=format_time(state.updated_at),
    )


def etag(version: int) -> str:
    return f'"{version}"'


def label_answer(state: LabelState, status: int, headers: dict[str, str] | None = None) -> StoredResponse:
    """What the API answers for a label write: the label, its ETag, and any extra headers."""
    return StoredResponse(
        status=status, body=encode(run_gold_label(state)), headers={"ETag": etag(state.version), **(headers or {})}
    )


def label_location(state: LabelState) -> str:
    return f"/v1/run/{state.run_id}/gold-label/{state.id}"


NO_CONTENT = StoredResponse(status=204, body=b"", headers={})


def _shown(value: Any) -> Any:
    """A field's value as a RunGoldLabel shows it."""
    return format_time(value) if isinstance(value, datetime) else None if value == NULL else value


def history_entry(step: Step) -> HistoryEntry:
    event = step.event
    return HistoryEntry(
        version=event.version,
        type=event.type,
        actor=event.actor,
        recorded_at=format_time(event.recorded_at),
        request_id=event.request_id,
        reason=event.reason,
        changes={name: Change(_shown(before), _shown(after)) for name, (before, after) in step.changes.items()},
        state=None if step.after is None else run_gold_label(step.after),
        log_index=event.log_index,
        hash=event.hash,
    )


def feed_event(event: RecordedEvent, cursor: str | None = None) -> FeedEvent:
    """An event as the feed and exports show it; its cursor resumes after it (the log's next index)."""
    if cursor is None:
        cursor = "" if event.log_index is None else str(event.log_index + 1)
    return FeedEvent(
        cursor=cursor,
        log_index=event.log_index,
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
        chain=event.chain,
        payload=event.payload,
    )
