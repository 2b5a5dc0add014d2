"""The documented gold-label routes, plus as-of reads on get and list. Handlers are thin: parse the
request, call one use case, answer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from projections.fold import LabelState
from service.http import openapi
from service.http.auth import READ, WRITE, requires
from service.http.bodies import decode_label_batch, decode_label_patch, decode_new_label
from service.http.consistency import reads_for
from service.http.input import (
    actor,
    batch_body,
    canonical_uuid,
    database,
    expected_versions,
    json_body,
    parse_count,
    parse_moment,
    settings,
)
from service.http.views import NO_CONTENT, encode, label_answer, label_location, run_gold_label
from service.usecases import audit, labels
from service.usecases.commands import InvalidInput
from service.usecases.idempotency import StoredResponse

NDJSON = "application/x-ndjson"


def respond(answer: StoredResponse) -> Response:
    return Response(
        content=answer.body, status_code=answer.status, media_type="application/json", headers=answer.headers
    )


def _created(state: LabelState) -> StoredResponse:
    return label_answer(state, 201, {"Location": label_location(state)})


def _updated(state: LabelState) -> StoredResponse:
    return label_answer(state, 200)


def _deleted(_state: LabelState) -> StoredResponse:
    return NO_CONTENT


@post(
    "/run/{run_id:str}/gold-labels",
    operation_id="createRunGoldLabel",
    operation_class=openapi.CREATE,
    guards=[requires(WRITE)],
    status_code=201,
)
async def create_gold_label(request: Request, run_id: FromPath[str]) -> Response[bytes]:
    db = database(request)
    run = canonical_uuid(run_id, "run_id")
    new = decode_new_label(await json_body(request), settings(request).max_object_depth)
    state = await labels.create_label(db, await actor(request), run, new, _created)
    return respond(_created(state))


def _batch_answer(outcome: labels.BatchOutcome) -> StoredResponse:
    return StoredResponse(status=200, body=encode(outcome), headers={})


@post(
    "/run/{run_id:str}/gold-labels/batch",
    operation_id="importRunGoldLabels",
    operation_class=openapi.BATCH,
    guards=[requires(WRITE)],
    status_code=200,
    request_max_body_size=None,  # checked against GOLDTRAIL_MAX_BATCH_BYTES below
)
async def import_gold_labels(request: Request, run_id: FromPath[str]) -> Response[bytes]:
    """Upsert up to 10,000 of the run's labels by output resource, all or nothing."""
    db = database(request)
    run = canonical_uuid(run_id, "run_id")
    body = await batch_body(request, settings(request).max_batch_bytes)
    batch = decode_label_batch(body, settings(request).max_object_depth)
    outcome = await labels.import_batch(db, await actor(request, body), run, batch, _batch_answer)
    return respond(_batch_answer(outcome))


@get(
    "/run/{run_id:str}/gold-labels",
    operation_id="listRunGoldLabels",
    operation_class=openapi.LIST,
    guards=[requires(READ)],
)
async def list_gold_labels(
    request: Request,
    run_id: FromPath[str],
    as_of: FromQuery[str | None] = None,
    limit: FromQuery[str | None] = None,
    after: FromQuery[str | None] = None,
) -> Response:
    """The run's live labels, oldest first: the whole run streamed (the documented form), or a page of
    `limit` with a Link to the next (`after`); as JSON Lines with `Accept: application/x-ndjson`."""
    db = reads_for(request, any_database=as_of is not None)
    run = canonical_uuid(run_id, "run_id")
    lines = NDJSON in request.headers.get("accept", "")
    if as_of is not None:
        if limit is not None or after is not None:
            raise InvalidInput("as_of reads the whole run: leave out limit and after", "as_of")
        found = await audit.run_as_of(db, request.user.account, run, parse_moment(as_of))
        return _labels_answer([found], lines)
    if limit is None and after is None:
        # One transaction, on the primary: on a standby, replay could cancel it half-way through the array.
        batches = labels.stream_labels(database(request), request.user.account, run)
        # Reach the database (and know the run) before answering 200, so an outage is a 503 and an unknown run
        # a 404, not a cut-off stream.
        first = await db.within_time_limit(lambda _deadline: anext(batches))
        return Stream(_streamed(first, batches, lines), media_type=NDJSON if lines else "application/json")
    size = parse_count(limit, "limit", default=DEFAULT_PAGE, maximum=MAX_PAGE)
    page, following = await labels.list_labels_page(db, request.user.account, run, _label_cursor(after), size)
    answer = _labels_answer([page], lines)
    if following is not None:
        query = urlencode({"limit": size, "after": _encoded(following)})
        answer.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    return answer


DEFAULT_PAGE, MAX_PAGE = 100, 1000
_cursor_decoder = msgspec.json.Decoder(labels.LabelCursor)


def _encoded(cursor: labels.LabelCursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def _label_cursor(text: str | None) -> labels.LabelCursor | None:
    if text is None:
        return None
    try:
        cursor = _cursor_decoder.decode(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidInput('after must be the cursor of a Link: rel="next" of this list', "after") from None
    if cursor.created_at.tzinfo is None:
        raise InvalidInput('after must be the cursor of a Link: rel="next" of this list', "after")
    return cursor


def _labels_answer(batches: list[list[LabelState]], lines: bool) -> Response:
    if lines:
        body = b"".join(encode(run_gold_label(state)) + b"\n" for batch in batches for state in batch)
        return Response(content=body, media_type=NDJSON)
    return Response(
        content=encode([run_gold_label(s) for batch in batches for s in batch]), media_type="application/json"
    )


async def _streamed(
    first: list[LabelState], rest: AsyncIterator[list[LabelState]], lines: bool
) -> AsyncIterator[bytes]:
    """The run's labels as one JSON array (or JSON Lines), a batch at a time: flat memory for any run."""
    if lines:
        yield b"".join(encode(run_gold_label(state)) + b"\n" for state in first)
        async for batch in rest:
            yield b"".join(encode(run_gold_label(state)) + b"\n" for state in batch)
        return
    written = bool(first)
    if first:
        yield b"[" + b",".join(encode(run_gold_label(state)) for state in first)
    async for batch in rest:
        if batch:
            yield (b"," if written else b"[") + b",".join(encode(run_gold_label(state)) for state in batch)
            written = True
    yield b"]" if written else b"[]"


@get(
    "/run/{run_id:str}/gold-label/{gold_label_id:str}",
    operation_id="getRunGoldLabel",
    operation_class=openapi.GET,
    guards=[requires(READ)],
)
async def get_gold_label(
    request: Request,
    run_id: FromPath[str],
    gold_label_id: FromPath[str],
    as_of: FromQuery[str | None] = None,
    version: FromQuery[str | None] = None,
) -> Response[bytes]:
    db = reads_for(request, any_database=as_of is not None or version is not None)
    run, label = canonical_uuid(run_id, "run_id"), canonical_uuid(gold_label_id, "gold_label_id")
    if as_of is None and version is None:
        return respond(label_answer(await labels.get_label(db, request.user.account, run, label), 200))
    if as_of is not None and version is not None:
        raise InvalidInput("ask for as_of or version, not both")
    state = await audit.label_as_of(
        db,
        request.user.account,
        run,
        label,
        at=None if as_of is None else parse_moment(as_of),
        version=parse_count(version, "version"),
    )
    return respond(label_answer(state, 200))


@put(
    "/run/{run_id:str}/gold-label/{gold_label_id:str}",
    operation_id="updateRunGoldLabel",
    operation_class=openapi.UPDATE,
    guards=[requires(WRITE)],
)
async def update_gold_label(
    request: Request,
    run_id: FromPath[str],
    gold_label_id: FromPath[str],
) -> Response[bytes]:
    db = database(request)
    run, label = canonical_uuid(run_id, "run_id"), canonical_uuid(gold_label_id, "gold_label_id")
    patch = decode_label_patch(await json_body(request), settings(request).max_object_depth)
    state = await labels.update_label(db, await actor(request), run, label, patch, expected_versions(request), _updated)
    return respond(_updated(state))


@delete(
    "/run/{run_id:str}/gold-label/{gold_label_id:str}",
    operation_id="deleteRunGoldLabel",
    operation_class=openapi.DELETE,
    guards=[requires(WRITE)],
    status_code=204,
)
async def delete_gold_label(request: Request, run_id: FromPath[str], gold_label_id: FromPath[str]) -> None:
    db = database(request)
    run, label = canonical_uuid(run_id, "run_id"), canonical_uuid(gold_label_id, "gold_label_id")
    await labels.delete_label(db, await actor(request), run, label, expected_versions(request), _deleted)


LABEL_ROUTES = [
    import_gold_labels,
    create_gold_label,
    list_gold_labels,
    get_gold_label,
    update_gold_label,
    delete_gold_label,
]
