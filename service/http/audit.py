"""Routes for auditors: label history, the event feed (paged JSON or streamed JSON Lines) and digests."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime

from litestar import Request, Response, get
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from events.feed import BadCursor, FeedPoint
from events.types import parse_time
from service.http import openapi
from service.http.auth import AUDIT, requires
from service.http.bodies import InvalidInput
from service.http.input import canonical_uuid, database
from service.http.views import encode
from service.usecases import audit

NDJSON = "application/x-ndjson"
DEFAULT_PAGE, MAX_PAGE = 100, 1000


# A "+" in a query string arrives as a space unless the client encoded it as %2B.
_UNENCODED_PLUS = re.compile(r" (?=\d\d:?\d\d$)")


def parse_moment(value: str) -> datetime:
    try:
        return parse_time(_UNENCODED_PLUS.sub("+", value))
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"as_of must be an RFC 3339 time with an offset, e.g. 2026-01-31T12:00:00Z; got {value[:60]!r}", "as_of"
        ) from None


_WHOLE_NUMBER = re.compile(r"[0-9]{1,30}")  # ASCII digits only (str.isdigit() also takes '²')


def parse_count(
    value: str | None, name: str, *, default: int | None = None, minimum: int = 1, maximum: int | None = None
) -> int | None:
    if value is None:
        return default
    number = int(value) if _WHOLE_NUMBER.fullmatch(value) else None
    if number is None or number < minimum or (maximum is not None and number > maximum):
        limit = f" to {maximum}" if maximum else " or more"
        raise InvalidInput(f"{name} must be a whole number from {minimum}{limit}, got {value[:30]!r}", name)
    return number


@get(
    "/run/{run_id:str}/gold-label/{gold_label_id:str}/history",
    operation_id="getRunGoldLabelHistory",
    operation_class=openapi.HISTORY,
    guards=[requires(AUDIT)],
)
async def label_history(request: Request, run_id: FromPath[str], gold_label_id: FromPath[str]) -> Response[bytes]:
    db = database(request)
    run, label = canonical_uuid(run_id, "run_id"), canonical_uuid(gold_label_id, "gold_label_id")
    entries = await audit.label_history(db, request.user.account, run, label)
    return Response(content=encode(entries), media_type="application/json")


@get("/events", operation_id="listEvents", operation_class=openapi.FEED, guards=[requires(AUDIT)])
async def events_feed(
    request: Request,
    after: FromQuery[str | None] = None,
    limit: FromQuery[str | None] = None,
) -> Response:
    db = database(request)
    try:
        point = FeedPoint.parse(after)
    except BadCursor as error:
        raise InvalidInput(f"after: {error}", "after") from None
    if NDJSON in request.headers.get("accept", ""):
        events = audit.feed_stream(db, request.user.account, point)
        # Reach the database before answering 200, so an outage is a 503 and not a cut-off stream.
        first = await db.within_time_limit(lambda _deadline: anext(events, None))
        return Stream(_lines(first, events), media_type=NDJSON)
    size = parse_count(limit, "limit", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    page, next_cursor = await audit.feed_page(db, request.user.account, point, size)
    return Response(content=encode({"events": page, "next": next_cursor}), media_type="application/json")


async def _lines(first: audit.FeedEvent | None, rest: AsyncIterator[audit.FeedEvent]) -> AsyncIterator[bytes]:
    if first is None:
        return
    yield encode(first) + b"\n"
    async for event in rest:
        yield encode(event) + b"\n"


@get("/audit/digest", operation_id="getLogDigest", operation_class=openapi.DIGEST, guards=[requires(AUDIT)])
async def log_digest(request: Request, position: FromQuery[str | None] = None) -> Response[bytes]:
    db = database(request)
    wanted = parse_count(position, "position", minimum=0)
    digest = await audit.log_digest(db, request.user.account, wanted)
    return Response(content=encode(digest), media_type="application/json")


AUDIT_ROUTES = [label_history, events_feed, log_digest]
