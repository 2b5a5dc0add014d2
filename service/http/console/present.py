"""How the console shows values and their changes: what each event did to a label's value (a line diff of
texts, a structural diff of objects on their stored text, or the whole value), shortened values for tables,
and times. Pure functions the templates call."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from events.types import NULL, format_time
from projections.diff import DiffLine, Entry, Fold, json_diff, line_diff, parse, render, with_context
from projections.fold import LabelState
from service.usecases.timeline import Value

SHORT = 120  # characters of a value shown in a table cell


class ValueChange(msgspec.Struct, frozen=True):
    """What one event (or two times) did to a label's value, ready to show."""

    kind: Literal["created", "changed", "confirmed", "deleted"]
    lines: list[DiffLine | Fold] | None = None  # text before -> text after
    entries: list[Entry] | None = None  # object before -> object after
    shown: Value | None = None  # the whole value, when there is nothing to diff it with
    notes: list[str] = []  # changes besides the value itself (kind of value, partial flag)


def value_of(state: LabelState) -> Value:
    text = None if state.object_value == NULL else bytes(state.object_value).decode()
    return Value(state.text_value, text, state.object_value_is_partial)


def _kind(value: Value) -> str:
    return (
        "object value"
        if value.object_value is not None
        else "text value"
        if value.text_value is not None
        else "no value"
    )


def value_change(before: Value | None, after: Value | None) -> ValueChange:
    if before is None:
        return ValueChange("created", shown=after)
    if after is None:
        return ValueChange("deleted", shown=before)
    if before == after:
        return ValueChange("confirmed")
    notes = []
    if _kind(before) != _kind(after):
        notes.append(f"{_kind(before)} → {_kind(after)}")
    if before.object_value_is_partial != after.object_value_is_partial and after.object_value is not None:
        notes.append(
            f"object_value_is_partial: {_flag(before.object_value_is_partial)} → {_flag(after.object_value_is_partial)}"
        )
    if before.text_value is not None and after.text_value is not None:
        return ValueChange("changed", lines=with_context(line_diff(before.text_value, after.text_value)), notes=notes)
    if before.object_value is not None and after.object_value is not None:
        return ValueChange("changed", entries=json_diff(before.object_value, after.object_value), notes=notes)
    # One kind of value replaced by another (or by none): both are shown, as lines of text.
    old, new = _as_text(before), _as_text(after)
    return ValueChange("changed", lines=with_context(line_diff(old, new), context=10_000), notes=notes)


def _flag(value: bool | None) -> str:
    return "null" if value is None else "true" if value else "false"


def _as_text(value: Value) -> str:
    if value.object_value is not None:
        return pretty(value.object_value)
    return value.text_value if value.text_value is not None else ""


def pretty(object_text: str) -> str:
    """An object value indented for reading, its numbers and key order exactly as stored."""
    return render(parse(object_text), indent=2)


def short(value: Value) -> str:
    """A value in one line for a table cell, shortened."""
    if value.object_value is not None:
        text = value.object_value
    elif value.text_value is not None:
        text = value.text_value
    else:
        return "—"
    text = " ".join(text.split())
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"


def when(moment: datetime | None) -> str:
    """A time as goldtrail writes it everywhere: RFC 3339, UTC, microseconds."""
    return "" if moment is None else format_time(moment)
