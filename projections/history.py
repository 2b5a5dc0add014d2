"""A label's history: each event of its stream with the label just before and just after it, and the
fields it changed. The same fold as everywhere else, over the whole stream."""

from __future__ import annotations

from typing import Any

import msgspec

from events.types import NULL, RecordedEvent
from projections.fold import LabelState, apply

# The fields a label shows to clients (the documented RunGoldLabel), in its order.
SHOWN = (
    "id",
    "account_id",
    "run_id",
    "output_resource_name",
    "text_value",
    "object_value",
    "object_value_is_partial",
    "created_by",
    "created_at",
    "updated_by",
    "updated_at",
)


class Step(msgspec.Struct, frozen=True):
    """One event and what it did: the label after it (None once deleted) and each shown field it changed,
    as (before, after); creating changes every field from None, deleting changes none."""

    event: RecordedEvent
    after: LabelState | None
    changes: dict[str, tuple[Any, Any]]


def _shown(state: LabelState | None) -> dict[str, Any]:
    if state is None or state.deleted:
        return dict.fromkeys(SHOWN)
    return {name: None if (value := getattr(state, name)) == NULL else value for name in SHOWN}


def history(stream: list[RecordedEvent]) -> list[Step]:
    steps, state = [], None
    for event in stream:
        before = _shown(state)
        state = apply(state, event)
        visible = None if state.deleted else state
        after = _shown(visible)
        changes = (
            {}
            if visible is None
            else {name: (before[name], after[name]) for name in SHOWN if before[name] != after[name]}
        )
        steps.append(Step(event, visible, changes))
    return steps
