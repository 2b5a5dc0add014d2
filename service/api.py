"""The documented gold-label routes. Handlers are thin: parse the request, call one use case, answer."""

from __future__ import annotations

import asyncio
import uuid

from litestar import Request, Response, Router, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ClientException
from litestar.middleware import DefineMiddleware
from litestar.params import FromPath

from service import labels
from service.auth import READ, WRITE, BearerAuthMiddleware, Principal, requires
from service.bodies import InvalidInput, decode_label_patch, decode_new_label
from service.database import Database, DatabaseUnavailable
from service.errors import error_response
from service.request_log import request_id_of
from service.settings import Settings
from service.views import encode, etag, run_gold_label

MAX_REASON_LENGTH = 2000


def _uuid(value: str, name: str) -> str:
    """The canonical form of a path id, so that every spelling of one UUID names one label."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidInput(f"{name} must be a UUID, got {value[:64]!r}", name) from None


def _expected_versions(request: Request) -> frozenset[int] | None:
    """The versions an If-Match header accepts; None when any version will do."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    tags = (tag.strip() for tag in header.split(","))
    return frozenset(int(tag.strip('"')) for tag in tags if tag.strip('"').isdigit() and len(tag) < 20)


def _reason(request: Request) -> str | None:
    raw = request.headers.get("x-change-reason")
    if raw is None or not raw.strip():
        return None
    try:
        reason = raw.encode("latin-1").decode("utf-8").strip()
    except UnicodeError:
        raise InvalidInput("X-Change-Reason must be UTF-8 text", "X-Change-Reason") from None
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(f"X-Change-Reason is longer than {MAX_REASON_LENGTH} characters", "X-Change-Reason")
    return reason


def _actor(request: Request[Principal, None, State]) -> labels.Actor:
    return labels.Actor(
        account_id=request.user.account,
        user_id=request.user.user,
        request_id=request_id_of(request.scope),
        reason=_reason(request),
    )


async def _json_body(request: Request) -> bytes:
    content_type = request.headers.get("content-type")
    if content_type:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise ClientException(status_code=415, detail=f"send the body as application/json, not {media_type[:60]!r}")
    return await request.body()


def _label_response(state, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        content=encode(run_gold_label(state)),
        status_code=status_code,
        media_type="application/json",
        headers={"ETag": etag(state), **(headers or {})},
    )


@post("/run/{run_id:str}/gold-labels", operation_id="createRunGoldLabel", guards=[requires(WRITE)], status_code=201)
async def create_gold_label(
    request: Request, run_id: FromPath[str], db: NamedDependency[Database], settings: NamedDependency[Settings]
) -> Response[bytes]:
    run = _uuid(run_id, "run_id")
    new = decode_new_label(await _json_body(request), settings.max_object_depth)
    state = await labels.create_label(db, _actor(request), run, new)
    return _label_response(state, 201, {"Location": f"/v1/run/{run}/gold-label/{state.id}"})


@get("/run/{run_id:str}/gold-labels", operation_id="listRunGoldLabels", guards=[requires(READ)])
async def list_gold_labels(request: Request, run_id: FromPath[str], db: NamedDependency[Database]) -> Response[bytes]:
    found = await labels.list_labels(db, request.user.account, _uuid(run_id, "run_id"))
    return Response(content=encode([run_gold_label(state) for state in found]), media_type="application/json")


@get("/run/{run_id:str}/gold-label/{gold_label_id:str}", operation_id="getRunGoldLabel", guards=[requires(READ)])
async def get_gold_label(
    request: Request, run_id: FromPath[str], gold_label_id: FromPath[str], db: NamedDependency[Database]
) -> Response[bytes]:
    run, label = _uuid(run_id, "run_id"), _uuid(gold_label_id, "gold_label_id")
    return _label_response(await labels.get_label(db, request.user.account, run, label))


@put("/run/{run_id:str}/gold-label/{gold_label_id:str}", operation_id="updateRunGoldLabel", guards=[requires(WRITE)])
async def update_gold_label(
    request: Request,
    run_id: FromPath[str],
    gold_label_id: FromPath[str],
    db: NamedDependency[Database],
    settings: NamedDependency[Settings],
) -> Response[bytes]:
    run, label = _uuid(run_id, "run_id"), _uuid(gold_label_id, "gold_label_id")
    patch = decode_label_patch(await _json_body(request), settings.max_object_depth)
    state = await labels.update_label(db, _actor(request), run, label, patch, _expected_versions(request))
    return _label_response(state)


@delete(
    "/run/{run_id:str}/gold-label/{gold_label_id:str}",
    operation_id="deleteRunGoldLabel",
    guards=[requires(WRITE)],
    status_code=204,
)
async def delete_gold_label(
    request: Request, run_id: FromPath[str], gold_label_id: FromPath[str], db: NamedDependency[Database]
) -> None:
    run, label = _uuid(run_id, "run_id"), _uuid(gold_label_id, "gold_label_id")
    await labels.delete_label(db, _actor(request), run, label, _expected_versions(request))


def _provide_db(state: State) -> Database:
    return state.db


def _provide_settings(state: State) -> Settings:
    return state.settings


v1 = Router(
    path="/v1",
    route_handlers=[create_gold_label, list_gold_labels, get_gold_label, update_gold_label, delete_gold_label],
    middleware=[DefineMiddleware(BearerAuthMiddleware)],
    dependencies={
        "db": Provide(_provide_db, sync_to_thread=False),
        "settings": Provide(_provide_settings, sync_to_thread=False),
    },
    tags=["gold labels"],
)


@get("/healthz", operation_id="health", include_in_schema=True)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", operation_id="readiness")
async def readyz(state: State) -> Response:
    settings: Settings = state.settings
    try:
        await asyncio.wait_for(state.db.ping(), timeout=settings.db_timeout_seconds)
    except (DatabaseUnavailable, TimeoutError, OSError) as error:
        return error_response(
            503,
            f"not ready: the database is unreachable ({type(error).__name__})",
            headers={"Retry-After": str(settings.retry_after_seconds)},
        )
    return Response(content={"status": "ready"})
