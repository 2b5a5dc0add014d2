"""Reading what a request says beyond its body: path ids, If-Match, X-Change-Reason, the acting
principal, and the JSON body's media type. Each problem is an InvalidInput naming what to fix."""

from __future__ import annotations

import uuid

from litestar import Request
from litestar.datastructures import State
from litestar.exceptions import ClientException

from service.http.auth import Principal
from service.http.bodies import InvalidInput
from service.http.request_log import request_id_of
from service.settings import Settings
from service.storage.database import Database
from service.usecases import labels
from service.usecases.idempotency import idempotency_for

MAX_REASON_LENGTH = 2000


# The database and settings are read from the app state rather than injected as dependencies: Litestar's
# dependency injection costs more per request than everything else in routing (a State copy and a
# signature model per dependency, and a task group for two of them).
def database(request: Request) -> Database:
    return request.app.state.db


def settings(request: Request) -> Settings:
    return request.app.state.settings


def canonical_uuid(value: str, name: str) -> str:
    """The canonical form of a path id, so that every spelling of one UUID names one label."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidInput(f"{name} must be a UUID, got {value[:64]!r}", name) from None


def expected_versions(request: Request) -> frozenset[int] | None:
    """The versions an If-Match header accepts; None when any version will do."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    tags = (tag.strip() for tag in header.split(","))
    return frozenset(int(tag.strip('"')) for tag in tags if tag.strip('"').isdigit() and len(tag) < 20)


def change_reason(request: Request) -> str | None:
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


async def actor(request: Request[Principal, None, State]) -> labels.Actor:
    """Who writes, under which request id, why, and (with an Idempotency-Key) as which retryable request."""
    key = request.headers.get("idempotency-key")
    idempotency = None
    if key is not None:
        retention = settings(request).idempotency_retention_seconds
        idempotency = idempotency_for(key, request.method, request.scope["path"], await request.body(), retention)
    return labels.Actor(
        account_id=request.user.account,
        user_id=request.user.user,
        request_id=request_id_of(request.scope),
        reason=change_reason(request),
        idempotency=idempotency,
    )


async def json_body(request: Request) -> bytes:
    content_type = request.headers.get("content-type")
    if content_type:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise ClientException(status_code=415, detail=f"send the body as application/json, not {media_type[:60]!r}")
    return await request.body()
