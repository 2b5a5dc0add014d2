"""The documented gold-label routes (plus as-of reads on get and list), and the health routes.
Handlers are thin: parse the request, call one use case, answer."""

from __future__ import annotations

from litestar import Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery

from service.http import openapi
from service.http.audit import parse_count, parse_moment
from service.http.auth import READ, WRITE, requires
from service.http.bodies import InvalidInput, decode_label_patch, decode_new_label
from service.http.errors import error_response
from service.http.input import actor, canonical_uuid, database, expected_versions, json_body, settings
from service.http.views import encode, label_answer, run_gold_label
from service.settings import Settings
from service.storage.database import DatabaseReadOnly, DatabaseUnavailable
from service.usecases import audit, labels
from service.usecases.idempotency import StoredResponse


def respond(answer: StoredResponse) -> Response:
    return Response(
        content=answer.body, status_code=answer.status, media_type="application/json", headers=answer.headers
    )


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
    state = await labels.create_label(db, await actor(request), run, new)
    return respond(label_answer(state, 201, {"Location": labels.label_location(state)}))


@get(
    "/run/{run_id:str}/gold-labels",
    operation_id="listRunGoldLabels",
    operation_class=openapi.LIST,
    guards=[requires(READ)],
)
async def list_gold_labels(
    request: Request, run_id: FromPath[str], as_of: FromQuery[str | None] = None
) -> Response[bytes]:
    db = database(request)
    run = canonical_uuid(run_id, "run_id")
    if as_of is None:
        found = await labels.list_labels(db, request.user.account, run)
    else:
        found = await audit.run_as_of(db, request.user.account, run, parse_moment(as_of))
    return Response(content=encode([run_gold_label(state) for state in found]), media_type="application/json")


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
    db = database(request)
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
    state = await labels.update_label(db, await actor(request), run, label, patch, expected_versions(request))
    return respond(label_answer(state, 200))


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
    await labels.delete_label(db, await actor(request), run, label, expected_versions(request))


LABEL_ROUTES = [create_gold_label, list_gold_labels, get_gold_label, update_gold_label, delete_gold_label]


@get("/healthz", operation_id="health", operation_class=openapi.HEALTH)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", operation_id="readiness", operation_class=openapi.READINESS)
async def readyz(state: State) -> Response:
    settings: Settings = state.settings
    try:
        await state.db.ping()
    except DatabaseReadOnly as error:
        return error_response(503, f"not ready: {error}", headers={"Retry-After": str(settings.retry_after_seconds)})
    except DatabaseUnavailable as error:
        return error_response(
            503,
            f"not ready: the database is unreachable ({type(error).__name__})",
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    return Response(content={"status": "ready"})
