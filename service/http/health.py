"""Liveness and readiness: whether the process runs, and whether its database answers and takes writes."""

from __future__ import annotations

from litestar import Response, get
from litestar.datastructures import State

from service.http import openapi
from service.http.errors import error_response
from service.http.views import Status
from service.settings import Settings
from service.storage.errors import DatabaseReadOnly, DatabaseUnavailable


@get("/healthz", operation_id="health", operation_class=openapi.HEALTH)
async def healthz() -> Status:
    return Status("ok")


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
    return Response(content=Status("ready"))
