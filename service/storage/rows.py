"""How labels and events travel to and from table rows: one conversion each way, for every backend.

A backend hands over its driver's values in the column order named here, with times turned into aware
UTC datetimes by its own `time` function (the only place a backend's time format is read).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from events.types import NULL, RecordedEvent, decode_data
from projections.fold import LabelState

Row = tuple[Any, ...]
StoredTime = Callable[[Any], datetime]

# The read model's columns, in LabelState's field order.
LABEL_FIELDS: tuple[str, ...] = LabelState.__struct_fields__
_OBJECT_VALUE = LABEL_FIELDS.index("object_value")
_PARTIAL = LABEL_FIELDS.index("object_value_is_partial")
_LABEL_TIMES = tuple(LABEL_FIELDS.index(name) for name in ("created_at", "updated_at", "deleted_at"))

EVENT_FIELDS = (
    "position",
    "account_id",
    "stream_id",
    "version",
    "run_id",
    "data",
    "actor",
    "recorded_at",
    "request_id",
    "reason",
    "prev_hash",
    "hash",
    "chain",
)


def label_values(state: LabelState) -> list:
    """A label's row, in LABEL_FIELDS order; the object value as its JSON text (the exact bytes sent)."""
    values = list(msgspec.structs.astuple(state))
    values[_OBJECT_VALUE] = None if state.object_value == NULL else bytes(state.object_value).decode()
    return values


def label_params(state: LabelState) -> dict[str, Any]:
    return dict(zip(LABEL_FIELDS, label_values(state), strict=True))


def label_from_row(row: Row, time: StoredTime) -> LabelState:
    values = list(row)
    for index in _LABEL_TIMES:
        if values[index] is not None:
            values[index] = time(values[index])
    if values[_PARTIAL] is not None:
        values[_PARTIAL] = bool(values[_PARTIAL])  # SQLite has no boolean type
    text = values[_OBJECT_VALUE]
    values[_OBJECT_VALUE] = NULL if text is None else msgspec.Raw(text.encode())
    return LabelState(*values)


def event_from_row(row: Row, time: StoredTime, log_index: int | None = None) -> RecordedEvent:
    """An event from its row in EVENT_FIELDS order (any further columns are the caller's)."""
    position, account_id, stream_id, version, run_id, data, actor, recorded_at, request_id, reason = row[:10]
    return RecordedEvent(
        position=position,
        account_id=account_id,
        stream_id=stream_id,
        version=version,
        run_id=run_id,
        data=decode_data(data),
        actor=actor,
        recorded_at=time(recorded_at),
        request_id=request_id,
        reason=reason,
        prev_hash=row[10],
        hash=row[11],
        payload=data,
        chain=row[12],
        log_index=log_index,
    )
