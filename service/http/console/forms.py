"""What the console's forms and links send, read strictly: times (as people type them), the activity filter, page
cursors and versions. Each problem is an InvalidInput naming the field, shown on the page it came from."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from litestar import Request

from events.types import format_time
from service.http.runs import decode_cursor, encode_cursor
from service.storage.sql import EventFilter
from service.usecases.activity import EVENT_TYPES, ActivityCursor
from service.usecases.commands import InvalidInput

MAX_TEXT = 255
_TIME_HINT = "a UTC time such as 2026-01-31, 2026-01-31 12:00 or 2026-01-31T12:00:00.000001Z (an offset may follow)"
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")


def moment(text: str | None, name: str) -> datetime | None:
    """A time typed into a form: RFC 3339 or ISO 8601, a day or a day and a time; without an offset, UTC."""
    if text is None or not text.strip():
        return None
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace(" ", "T", 1))
    except ValueError:
        raise InvalidInput(f"{name} must be {_TIME_HINT}; got {value[:60]!r}", name) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def shown_moment(value: datetime | None) -> str:
    return "" if value is None else format_time(value)


def text_field(text: str | None, name: str) -> str | None:
    if text is None or not text.strip():
        return None
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"{name} must be at most {MAX_TEXT} characters", name)
    return text.strip()


def run_field(text: str | None) -> str | None:
    """A run id typed into a filter: any spelling of a UUID."""
    value = text_field(text, "run")
    if value is None:
        return None
    if not _UUID.fullmatch(value):
        raise InvalidInput(f"run must be a run id (a UUID), got {value[:60]!r}", "run")
    digits = value.replace("-", "").lower()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def event_filter(
    actor: str | None, kind: str | None, run: str | None, since: str | None, until: str | None
) -> EventFilter:
    chosen_type = text_field(kind, "type")
    if chosen_type is not None and chosen_type not in EVENT_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(EVENT_TYPES)}", "type")
    start, end = moment(since, "since"), moment(until, "until")
    if start is not None and end is not None and start >= end:
        raise InvalidInput("since must be earlier than until", "since")
    return EventFilter(
        actor=text_field(actor, "actor"), type=chosen_type, run_id=run_field(run), since=start, until=end
    )


def filter_of(request: Request) -> EventFilter:
    """The activity filter a page or an export was asked for (the same query parameters everywhere)."""
    query = request.query_params
    return event_filter(query.get("actor"), query.get("type"), query.get("run"), query.get("since"), query.get("until"))


def filter_query(chosen: EventFilter) -> dict[str, str]:
    """The filter as the query parameters of a link (only what is set)."""
    query = {
        "actor": chosen.actor,
        "type": chosen.type,
        "run": chosen.run_id,
        "since": shown_moment(chosen.since) or None,
        "until": shown_moment(chosen.until) or None,
    }
    return {name: value for name, value in query.items() if value}


def activity_cursor(text: str | None) -> ActivityCursor | None:
    cursor = decode_cursor(text, tuple[datetime, str, int])
    if cursor is not None and cursor[0].tzinfo is None:
        raise InvalidInput('after must be the cursor of a "next page" link', "after")
    return cursor


def encoded(cursor: object) -> str:
    return encode_cursor(cursor)


def version_field(text: str | None, name: str) -> int | None:
    if text is None or not text.strip():
        return None
    value = text.strip()
    if not re.fullmatch(r"[0-9]{1,18}", value) or int(value) < 1:
        raise InvalidInput(f"{name} must be a version number (1 or more), got {value[:30]!r}", name)
    return int(value)
