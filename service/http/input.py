"""Reading what a request says beyond its body: path ids, query times and counts, If-Match,
X-Change-Reason, Idempotency-Key, the acting principal, and the JSON body's media type. Each problem is an
InvalidInput naming what to fix."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime

from litestar import Request
from litestar.datastructures import State
from litestar.exceptions import ClientException

from events.types import parse_time
from service.http.auth import Principal
from service.http.request_log import request_id_of
from service.settings import Settings
from service.storage.database import Database
from service.usecases.commands import Actor, InvalidInput
from service.usecases.idempotency import Idempotency

MAX_REASON_LENGTH = 2000
_VALID_KEY = re.compile(r"^[!-~]{1,255}$")


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


def idempotency_for(key: str, method: str, path: str, body: bytes, retention_seconds: int) -> Idempotency:
    """An Idempotency-Key, with a fingerprint of the request a retry must repeat exactly."""
    if not _VALID_KEY.match(key):
        raise InvalidInput("Idempotency-Key must be 1 to 255 printable ASCII characters", "Idempotency-Key")
    fingerprint = hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()
    return Idempotency(key=key, fingerprint=fingerprint, retention_seconds=retention_seconds)


async def actor(request: Request[Principal, None, State], body: bytes | None = None) -> Actor:
    """Who writes, under which request id, why, and (with an Idempotency-Key) as which retryable request;
    `body` when the handler has read it already (a stream is read once)."""
    key = request.headers.get("idempotency-key")
    idempotency = None
    if key is not None:
        retention = settings(request).idempotency_retention_seconds
        sent = await request.body() if body is None else body
        idempotency = idempotency_for(key, request.method, request.scope["path"], sent, retention)
    return Actor(
        account_id=request.user.account,
        user_id=request.user.user,
        request_id=request_id_of(request.scope),
        reason=change_reason(request),
        idempotency=idempotency,
    )


def _json_media_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise ClientException(status_code=415, detail=f"send the body as application/json, not {media_type[:60]!r}")


async def json_body(request: Request) -> bytes:
    _json_media_type(request)
    return await request.body()


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than the limit of {limit} bytes")


async def batch_body(request: Request, limit: int) -> bytes:
    """A JSON body of up to `limit` bytes (a route with its own limit, beyond the app's), read as it comes."""
    _json_media_type(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


# A "+" in a query string arrives as a space unless the client encoded it as %2B.
_UNENCODED_PLUS = re.compile(r" (?=\d\d:?\d\d$)")


def parse_moment(value: str, name: str = "as_of") -> datetime:
    try:
        return parse_time(_UNENCODED_PLUS.sub("+", value))
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"{name} must be an RFC 3339 time with an offset, e.g. 2026-01-31T12:00:00Z; got {value[:60]!r}", name
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
