"""The one place that turns exceptions into HTTP responses: always JSON `{"error": "..."}`."""

from __future__ import annotations

import logging

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from service.http.input import BodyTooLarge
from service.http.request_log import request_id_of
from service.http.views import Uuid, encode, etag
from service.storage.errors import DatabaseReadOnly, DatabaseUnavailable
from service.storage.writes import KeptLosing
from service.usecases.audit import PositionNotFound, TreeSizeNotReached
from service.usecases.commands import InvalidInput
from service.usecases.idempotency import IdempotencyKeyReused, IdempotentReplay
from service.usecases.labels import DuplicateLabel, LabelNotFound, RunNotFound, VersionMismatch
from service.usecases.log import CosignatureRefused, NoCheckpointKey, NotInLog

logger = logging.getLogger("goldtrail.errors")


class Error(msgspec.Struct, frozen=True):
    """Every error answer: one sentence a person can act on, and what it is about when that is known."""

    error: str
    field: str | msgspec.UnsetType = msgspec.UNSET  # the part of the request at fault
    existing_id: Uuid | msgspec.UnsetType = msgspec.UNSET  # the live label that holds the output resource (409)
    request_id: str | msgspec.UnsetType = msgspec.UNSET  # to find an internal error's log line (500)


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **about: str | None) -> Response:
    return Response(
        content=encode(Error(message, **{k: v for k, v in about.items() if v is not None})),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _http_error(request: Request, error: HTTPException) -> Response:
    status = error.status_code
    message = error.detail
    if status == 404:
        message = f"no route matches {request.method} {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    elif status == 413:
        message = (
            f"request body is larger than the limit of {request.route_handler.resolve_request_max_body_size()} bytes"
        )
    elif status == 500 and "disconnected" in str(error.detail):
        # The client went away mid-body: nothing was stored and nobody waits for this answer. 499 is
        # the usual code for it, so logs and metrics do not count it as a server error.
        status, message = 499, "the client closed the request before sending the whole body"
    elif status >= 500:
        logger.error("framework error", exc_info=error)
        message = "internal error"
    return error_response(status, message, headers=error.headers)


def _invalid_body(_request: Request, error: InvalidInput) -> Response:
    return error_response(400, str(error), field=error.field)


def _too_large(_request: Request, error: Exception) -> Response:
    return error_response(413, str(error))


def _bad_request(_request: Request, error: Exception) -> Response:
    return error_response(400, str(error))


def _duplicate(_request: Request, error: DuplicateLabel) -> Response:
    return error_response(409, str(error), existing_id=error.existing_id)


def _not_found(_request: Request, error: Exception) -> Response:
    return error_response(404, str(error))


def _version_mismatch(_request: Request, error: VersionMismatch) -> Response:
    return error_response(412, str(error), headers={"ETag": etag(error.current_version)})


def _unavailable(request: Request, error: DatabaseUnavailable) -> Response:
    logger.warning("database unavailable", extra={"detail": str(error), "request_id": request_id_of(request.scope)})
    retry_after = request.app.state.settings.retry_after_seconds
    message = str(error) if isinstance(error, DatabaseReadOnly) else "the database is unavailable; retry shortly"
    return error_response(503, message, headers={"Retry-After": str(retry_after)})


def _kept_losing(request: Request, error: KeptLosing) -> Response:
    logger.warning("write kept losing", extra={"detail": str(error), "request_id": request_id_of(request.scope)})
    retry_after = request.app.state.settings.retry_after_seconds
    message = "the label is changing too fast to write now; retry shortly"
    return error_response(503, message, headers={"Retry-After": str(retry_after)})


def _reused_key(_request: Request, error: IdempotencyKeyReused) -> Response:
    return error_response(422, str(error), field="Idempotency-Key")


def _replay(_request: Request, replay: IdempotentReplay) -> Response:
    answer = replay.response
    return Response(
        content=answer.body or None,
        status_code=answer.status,
        media_type="application/json",
        headers={**answer.headers, "Idempotent-Replayed": "true"},
    )


def _internal(request: Request, error: Exception) -> Response:
    request_id = request_id_of(request.scope)
    logger.error("unhandled exception", exc_info=error, extra={"request_id": request_id})
    return error_response(500, "internal error", request_id=request_id)


EXCEPTION_HANDLERS = {
    HTTPException: _http_error,
    InvalidInput: _invalid_body,
    DuplicateLabel: _duplicate,
    LabelNotFound: _not_found,
    RunNotFound: _not_found,
    PositionNotFound: _not_found,
    TreeSizeNotReached: _not_found,
    NotInLog: _not_found,
    BodyTooLarge: _too_large,
    NoCheckpointKey: _not_found,
    CosignatureRefused: _bad_request,
    VersionMismatch: _version_mismatch,
    DatabaseUnavailable: _unavailable,
    KeptLosing: _kept_losing,
    IdempotencyKeyReused: _reused_key,
    IdempotentReplay: _replay,
    Exception: _internal,
}
