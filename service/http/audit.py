"""Routes for auditors: label history, the event feed (paged JSON or streamed JSON Lines) and digests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar import Request, Response, get
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from events.feed import BadCursor, parse_cursor
from events.types import RecordedEvent
from service.http import openapi
from service.http.auth import AUDIT, requires
from service.http.consistency import reads_for
from service.http.input import canonical_uuid, parse_count
from service.http.views import FeedPage, encode, feed_event, history_entry
from service.usecases import audit
from service.usecases.commands import InvalidInput

NDJSON = "application/x-ndjson"
DEFAULT_PAGE, MAX_PAGE = 100, 1000


@get(
    "/run/{run_id:str}/gold-label/{gold_label_id:str}/history",
    operation_id="getRunGoldLabelHistory",
    operation_class=openapi.HISTORY,
    guards=[requires(AUDIT)],
)
async def label_history(request: Request, run_id: FromPath[str], gold_label_id: FromPath[str]) -> Response[bytes]:
    db = reads_for(request)
    run, label = canonical_uuid(run_id, "run_id"), canonical_uuid(gold_label_id, "gold_label_id")
    steps = await audit.label_history(db, request.user.account, run, label)
    return Response(content=encode([history_entry(step) for step in steps]), media_type="application/json")


@get("/events", operation_id="listEvents", operation_class=openapi.FEED, guards=[requires(AUDIT)])
async def events_feed(
    request: Request,
    after: FromQuery[str | None] = None,
    limit: FromQuery[str | None] = None,
) -> Response:
    db = reads_for(request)
    try:
        cursor = parse_cursor(after)
    except BadCursor as error:
        raise InvalidInput(f"after: {error}", "after") from None
    if NDJSON in request.headers.get("accept", ""):
        events = audit.feed_stream(db, request.user.account, cursor)
        # Reach the database before answering 200, so an outage is a 503 and not a cut-off stream.
        first = await db.within_time_limit(lambda _deadline: anext(events, None))
        return Stream(_lines(first, events), media_type=NDJSON)
    size = parse_count(limit, "limit", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    page, next_cursor = await audit.feed_page(db, request.user.account, cursor, size)
    events = [feed_event(event) for event in page]
    return Response(content=encode(FeedPage(events=events, next=str(next_cursor))), media_type="application/json")


async def _lines(first: RecordedEvent | None, rest: AsyncIterator[RecordedEvent]) -> AsyncIterator[bytes]:
    if first is None:
        return
    yield encode(feed_event(first)) + b"\n"
    last = first
    try:
        async for last in rest:  # `last`: the last event written, which names where to resume
            yield encode(feed_event(last)) + b"\n"
    except audit.StreamCutShort as error:
        yield cut_short(error, last)


def cut_short(error: audit.StreamCutShort, last: RecordedEvent) -> bytes:
    """The last line of a stream that could not go on, after the last whole line (`last`'s): what happened,
    and the cursor to resume from (`next`, as a feed page names it). The status line already said 200."""
    resume = str(last.log_index + 1)
    return encode({"error": f"the stream was cut short ({error}); resume with after={resume}", "next": resume}) + b"\n"


@get("/audit/digest", operation_id="getLogDigest", operation_class=openapi.DIGEST, guards=[requires(AUDIT)])
async def log_digest(
    request: Request, tree_size: FromQuery[str | None] = None, position: FromQuery[str | None] = None
) -> Response[bytes]:
    db = reads_for(request)
    if tree_size is not None and position is not None:
        raise InvalidInput("ask for tree_size or position, not both")
    digest = await audit.log_digest(
        db,
        request.user.account,
        tree_size=parse_count(tree_size, "tree_size", minimum=0),
        position=parse_count(position, "position", minimum=0),
    )
    return Response(content=encode(digest), media_type="application/json")


AUDIT_ROUTES = [label_history, events_feed, log_digest]
