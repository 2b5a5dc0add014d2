"""The OpenAPI description of goldtrail's routes. Handlers read their bodies themselves (to keep
object values byte-exact), so the request bodies, answers and error shapes are written out here,
matching the documented contract, and attached to each route through its operation class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.openapi.spec import Operation

UUID = {"type": "string", "format": "uuid"}
NULLABLE_TEXT = {"type": ["string", "null"]}
RUN_GOLD_LABEL = {
    "type": "object",
    "required": ["id", "account_id", "run_id", "output_resource_name", "created_at"],
    "properties": {
        "id": UUID,
        "account_id": {"type": "string"},
        "run_id": UUID,
        "output_resource_name": {"type": "string"},
        "text_value": NULLABLE_TEXT,
        "object_value": {"type": ["object", "null"], "additionalProperties": True},
        "object_value_is_partial": {"type": ["boolean", "null"]},
        "created_by": NULLABLE_TEXT,
        "created_at": {"type": "string", "format": "date-time"},
        "updated_by": NULLABLE_TEXT,
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": "string"}, "detail": {"type": "string"}},
}
CREATE_BODY = {
    "type": "object",
    "required": ["output_resource_name"],
    "properties": {
        "output_resource_name": {"type": "string", "minLength": 1, "maxLength": 500},
        "text_value": {"type": "string"},
        "object_value": {"type": "object", "additionalProperties": True},
        "object_value_is_partial": {"type": "boolean"},
    },
}
UPDATE_BODY = {
    "type": "object",
    "properties": {
        "text_value": {"type": "string"},
        "object_value": {"type": "object", "additionalProperties": True},
        "object_value_is_partial": {"type": "boolean"},
    },
}

_ERRORS = {
    400: "The request is malformed; the error names the field",
    401: "Missing or untrusted bearer token",
    403: "The token lacks the scope this route needs",
    404: "No such label or run for this account",
    409: "The output resource already has a live label",
    412: "If-Match does not name the label's current version",
    413: "The body is larger than the configured limit",
    415: "The body is not JSON",
    422: "The Idempotency-Key was used for a different request",
    503: "The database is unavailable; retry after Retry-After seconds",
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


# What the handlers accept in the query string (they parse these themselves, strictly).
QUERY = {
    "as_of": {"type": "string", "format": "date-time"},
    "version": {"type": "integer", "minimum": 1},
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
    "position": {"type": "integer", "minimum": 0},
    "after": {"type": "string", "pattern": "^([0-9]{1,19}-[0-9]{1,18})?$"},  # empty: from the start
}


def described(
    success: int,
    answer: dict[str, Any] | None,
    errors: tuple[int, ...],
    body: dict[str, Any] | None = None,
    *,
    public: bool = False,
) -> type[Operation]:
    """An Operation class that documents a route's body, its answer and its errors."""
    responses: dict[str, Any] = {
        str(success): {"description": "Success", **({"content": _json(answer)} if answer else {})}
    }
    for status in (*errors, *(() if public else (401, 503))):
        responses[str(status)] = {"description": _ERRORS[status], "content": _json(ERROR)}

    @dataclass
    class Described(Operation):
        def __post_init__(self) -> None:
            self.responses = responses  # type: ignore[assignment]
            if public:
                self.security = []
            for parameter in self.parameters or ():
                if parameter.param_in == "path":  # every path id is a UUID
                    parameter.schema = UUID  # type: ignore[union-attr]
                elif parameter.name in QUERY:
                    parameter.schema = QUERY[parameter.name]  # type: ignore[union-attr]
            if body is not None:
                self.request_body = {"required": True, "content": _json(body)}  # type: ignore[assignment]

    return Described


# Inlined rather than referenced: Litestar rebuilds components.schemas from the handlers' types.
LABEL = RUN_GOLD_LABEL
CREATE = described(201, LABEL, (400, 403, 409, 413, 415, 422), CREATE_BODY)
LIST = described(200, {"type": "array", "items": LABEL}, (400, 403, 404))
GET = described(200, LABEL, (400, 403, 404))
UPDATE = described(200, LABEL, (400, 403, 404, 412, 413, 415, 422), UPDATE_BODY)
DELETE = described(204, None, (400, 403, 404, 412, 422))

CHANGE = {"type": "object", "properties": {"from": {}, "to": {}}}
HISTORY_ENTRY = {
    "type": "object",
    "required": ["version", "type", "actor", "recorded_at", "request_id", "changes", "state", "position", "hash"],
    "properties": {
        "version": {"type": "integer", "minimum": 1},
        "type": {"type": "string"},
        "actor": {"type": "string"},
        "recorded_at": {"type": "string", "format": "date-time"},
        "request_id": {"type": "string"},
        "reason": NULLABLE_TEXT,
        "changes": {"type": "object", "additionalProperties": CHANGE},
        "state": {"oneOf": [RUN_GOLD_LABEL, {"type": "null"}]},
        "position": {"type": "integer"},
        "hash": {"type": "string"},
    },
}
FEED_EVENT = {
    "type": "object",
    "required": ["cursor", "position", "label_id", "run_id", "version", "type", "actor", "recorded_at", "data", "hash"],
    "properties": {
        "cursor": {"type": "string"},
        "position": {"type": "integer"},
        "label_id": UUID,
        "run_id": UUID,
        "version": {"type": "integer"},
        "type": {"type": "string"},
        "actor": {"type": "string"},
        "recorded_at": {"type": "string", "format": "date-time"},
        "request_id": {"type": "string"},
        "reason": NULLABLE_TEXT,
        "data": {"type": "object"},
        "prev_hash": {"type": "string"},
        "hash": {"type": "string"},
    },
}
HISTORY = described(200, {"type": "array", "items": HISTORY_ENTRY}, (400, 403, 404))
FEED = described(
    200,
    {
        "type": "object",
        "required": ["events", "next"],
        "properties": {"events": {"type": "array", "items": FEED_EVENT}, "next": {"type": "string"}},
    },
    (400, 403),
)
DIGEST = described(
    200,
    {
        "type": "object",
        "required": ["position", "digest"],
        "properties": {"position": {"type": "integer"}, "digest": {"type": "string"}},
    },
    (400, 403, 404),
)

STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
HEALTH = described(200, STATUS, (), public=True)
READINESS = described(200, STATUS, (503,), public=True)
