"""Routes over an account's runs, for any client (the auditor console reads the same use cases): the runs,
most recently changed first, and how a run's labels changed between two times. Both are paged: `limit`, and
an opaque `after` from the `Link: <…>; rel="next"` header (RFC 8288) while more remain."""

from __future__ import annotations

import base64
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, get
from litestar.params import FromPath, FromQuery, QueryParameter

from events.types import format_time, utc_now
from projections.fold import LabelState
from service.http import openapi
from service.http.auth import AUDIT, READ, requires
from service.http.consistency import reads_for
from service.http.input import canonical_uuid, parse_count, parse_moment
from service.http.views import GoldLabelChange, RunSummary, encode, run_gold_label
from service.usecases import runs
from service.usecases.commands import InvalidInput
from service.usecases.labels import LabelCursor

DEFAULT_PAGE, MAX_PAGE = 100, 1000
MAX_SEARCH = 200
_AFTER = 'after must be the cursor of a Link: rel="next" of this list'


def encode_cursor(cursor: Any) -> str:
    """An opaque page cursor: base64url of its JSON, without padding (as the paged label list writes them)."""
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def decode_cursor(text: str | None, kind: type) -> Any:
    """The cursor `encode_cursor` wrote; anything else is a 400 naming `after`."""
    if text is None:
        return None
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), type=kind)
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidInput(_AFTER, "after") from None


def label_cursor(text: str | None) -> LabelCursor | None:
    cursor = decode_cursor(text, LabelCursor)
    if cursor is not None and cursor.created_at.tzinfo is None:
        raise InvalidInput(_AFTER, "after")
    return cursor


def search_text(q: str | None) -> str | None:
    """What to search runs for (None: no search)."""
    if q is None:
        return None
    if len(q) > MAX_SEARCH:
        raise InvalidInput(f"q must be at most {MAX_SEARCH} characters", "q")
    return q.strip() or None


def link_next(request: Request, **query: Any) -> str:
    present = {name: value for name, value in query.items() if value is not None}
    return f'<{request.url.path}?{urlencode(present)}>; rel="next"'


def run_summary(run: runs.RunOverview) -> RunSummary:
    return RunSummary(
        run_id=run.run_id,
        live_labels=run.live_labels,
        labels=run.labels,
        events=run.events,
        last_changed_at=format_time(run.newest.recorded_at),
        last_changed_by=run.newest.actor,
        last_change=run.newest.type,
    )


def _version(state: LabelState | None) -> int | None:
    return None if state is None else state.version


def label_change(change: runs.LabelChange) -> GoldLabelChange:
    label = change.label
    return GoldLabelChange(
        id=label.id,
        output_resource_name=label.output_resource_name,
        change=change.change,
        before=None if change.before is None else run_gold_label(change.before),
        after=None if change.after is None else run_gold_label(change.after),
        before_version=_version(change.before),
        after_version=_version(change.after),
    )


@get("/runs", operation_id="listRuns", operation_class=openapi.RUNS, guards=[requires(READ, AUDIT)])
async def list_runs(
    request: Request,
    limit: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
    q: FromQuery[str | None] = None,
) -> Response[bytes]:
    """The account's runs, most recently changed first; `q` keeps the runs whose id starts with it or that
    ever held a label whose output resource name starts with it."""
    size = parse_count(limit, "limit", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    search = search_text(q)
    page = await runs.list_runs(reads_for(request), request.user.account, decode_cursor(after, str), size, search)
    answer = Response(content=encode([run_summary(run) for run in page.runs]), media_type="application/json")
    if page.following is not None:
        answer.headers["Link"] = link_next(request, limit=size, after=encode_cursor(page.following), q=search)
    return answer


@get(
    "/run/{run_id:str}/gold-labels/changes",
    operation_id="listRunGoldLabelChanges",
    operation_class=openapi.CHANGES,
    guards=[requires(READ, AUDIT)],
)
async def run_changes(
    request: Request,
    run_id: FromPath[str],
    start: Annotated[str | None, QueryParameter(name="from")] = None,
    end: Annotated[str | None, QueryParameter(name="to")] = None,
    limit: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
) -> Response[bytes]:
    """The run's labels added, changed (another value) and removed from `from` to `to` (default: now), in
    list order, each with the label at both times."""
    run = canonical_uuid(run_id, "run_id")
    if start is None:
        raise InvalidInput("from is required: the earlier of the two times to compare", "from")
    since = parse_moment(start, "from")
    until = utc_now() if end is None else parse_moment(end, "to")
    size = parse_count(limit, "limit", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    page = await runs.run_changes(
        reads_for(request), request.user.account, run, since, until, label_cursor(after), size
    )
    answer = Response(content=encode([label_change(change) for change in page.changes]), media_type="application/json")
    if page.following is not None:
        to = end if end is not None else format_time(until)  # the next page compares the same two times
        answer.headers["Link"] = link_next(
            request, **{"from": start, "to": to}, limit=size, after=encode_cursor(page.following)
        )
    return answer


RUN_ROUTES = [list_runs, run_changes]
