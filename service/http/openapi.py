"""The OpenAPI description of goldtrail's routes. Handlers read and write their own bytes (to keep object
values byte-exact), so each route names its body, answer and errors here; their schemas are generated from
the msgspec Structs that the bodies decode into and the answers encode from, and served as components."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar.openapi import spec

from service.http.errors import Error
from service.http.views import FeedPage, GoldLabelChange, HistoryEntry, RunGoldLabel, RunSummary, Status
from service.usecases.audit import Digest
from service.usecases.commands import LabelBatch, LabelPatch, NewLabel
from service.usecases.labels import BatchOutcome
from service.usecases.log import ConsistencyProof, Cosignature, InclusionProof

REF = "#/components/schemas/{name}"
SCHEMAS: dict[str, dict[str, Any]] = {}  # every Struct a route names, by name, as components/schemas serves it


def schema_of(python_type: Any) -> dict[str, Any]:
    """The JSON schema of a type, with the Structs in it referenced and their schemas added to SCHEMAS."""
    (schema,), components = msgspec.json.schema_components([python_type], ref_template=REF)
    for name, component in components.items():
        if SCHEMAS.setdefault(name, component) != component:
            raise TypeError(f"two Structs named {name} in the OpenAPI schema")
    return schema


@dataclass
class Components(spec.Components):
    """Components that keep the Structs' schemas: building the document, Litestar sets `schemas` to those it
    derived from handler signatures (here at most a copy of one of ours), which would drop the rest."""

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, {**(value or {}), **SCHEMAS} if name == "schemas" else value)


UUID = {"type": "string", "format": "uuid"}
# What the handlers accept in the query string (they parse these themselves, strictly).
QUERY = {
    "as_of": {"type": "string", "format": "date-time"},
    "version": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
    "position": {"type": "integer", "minimum": 0},
    "tree_size": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    "log_index": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    "from": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    "to": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
    # entries read so far, or an older "<tx>-<position>" cursor; empty: from the start
    "after": {"type": "string", "pattern": "^([0-9]{1,19}|[0-9]{1,19}-[0-9]{1,19})?$"},
}
# The request headers the write routes read (the handlers parse them themselves).
HEADERS = {
    name: spec.Parameter(name=name, param_in="header", required=False, description=text, schema=schema)
    for name, text, schema in (
        ("If-Match", 'write only at one of these versions, e.g. "3" (412 otherwise)', {"type": "string"}),
        (
            "Idempotency-Key",
            "1 to 255 printable ASCII characters: a retry with the same key and request is answered as the first",
            {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
        ),
        ("X-Change-Reason", "why: recorded on the event (UTF-8, up to 2000 characters)", {"type": "string"}),
        ("X-Request-ID", "recorded on the event and echoed on the response", {"type": "string"}),
        (
            "Goldtrail-Consistency",
            "a token a write answered: the read then sees that write (on a standby that has it, or the primary);"
            " a value that is not such a token is ignored",
            {"type": "string"},
        ),
    )
}
# What every successful write answers when goldtrail reads on hot standbys (GOLDTRAIL_READ_REPLICA_URLS).
TOKEN_HEADER = {
    "Goldtrail-Consistency": {
        "description": "An opaque consistency token: send it back on a read to see at least this write",
        "schema": {"type": "string"},
    }
}
_WRITE = ("Idempotency-Key", "X-Change-Reason", "X-Request-ID")
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
_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _json(python_type: Any) -> dict[str, Any]:
    return {"application/json": {"schema": schema_of(python_type)}}


def described(
    success: int,
    answer: Any,
    errors: tuple[int, ...],
    body: Any = None,
    *,
    public: bool = False,
    required: tuple[str, ...] = (),
    query: dict[str, dict[str, Any]] | None = None,
    headers: tuple[str, ...] = (),
    answers_token: bool = False,
) -> type[spec.Operation]:
    """An Operation class that documents a route's body, its answer and its errors (given as Python types)."""
    content = _TEXT if answer is str else _json(answer) if answer else None
    responses: dict[str, Any] = {str(success): {"description": "Success", **({"content": content} if content else {})}}
    if answers_token:
        responses[str(success)]["headers"] = TOKEN_HEADER
    for status in (*errors, *(() if public else (401, 503))):
        responses[str(status)] = {"description": _ERRORS[status], "content": _json(Error)}
    request_body = None if body is None else {"required": True, "content": _json(body)}
    schemas = {**QUERY, **(query or {})}

    @dataclass
    class Described(spec.Operation):
        def __post_init__(self) -> None:
            self.responses = responses  # type: ignore[assignment]
            if public:
                self.security = []
            for parameter in self.parameters or ():
                if parameter.param_in == "path":  # every path id is a UUID
                    parameter.schema = UUID  # type: ignore[union-attr]
                elif parameter.name in schemas:
                    parameter.schema = schemas[parameter.name]  # type: ignore[union-attr]
                    # The handler parses them itself (its errors name the parameter), so it takes them optional.
                    parameter.required = parameter.name in required
            if request_body is not None:
                self.request_body = request_body  # type: ignore[assignment]
            self.parameters = [*(self.parameters or ()), *(HEADERS[name] for name in headers)]

    return Described


_READ = ("Goldtrail-Consistency",)
BATCH = described(200, BatchOutcome, (400, 403, 409, 413, 415, 422), LabelBatch, headers=_WRITE, answers_token=True)
CREATE = described(201, RunGoldLabel, (400, 403, 409, 413, 415, 422), NewLabel, headers=_WRITE, answers_token=True)
# A page of a run's labels ends where `after` (the opaque cursor of a Link: rel="next") says.
LIST = described(
    200, list[RunGoldLabel], (400, 403, 404), query={"after": {"type": "string", "minLength": 1}}, headers=_READ
)
GET = described(200, RunGoldLabel, (400, 403, 404), headers=_READ)
UPDATE = described(
    200,
    RunGoldLabel,
    (400, 403, 404, 412, 413, 415, 422),
    LabelPatch,
    headers=("If-Match", *_WRITE),
    answers_token=True,
)
DELETE = described(204, None, (400, 403, 404, 412, 422), headers=("If-Match", *_WRITE), answers_token=True)
HISTORY = described(200, list[HistoryEntry], (400, 403, 404), headers=_READ)
FEED = described(200, FeedPage, (400, 403), headers=_READ)
DIGEST = described(200, Digest, (400, 403, 404), headers=_READ)
HEALTH = described(200, Status, (), public=True)
READINESS = described(200, Status, (503,), public=True)

# The verifiable log (service/http/log.py)
CHECKPOINT = described(200, str, (400, 403, 404), headers=_READ)
LOG_KEY = described(200, str, (403, 404))
INCLUSION = described(200, InclusionProof, (400, 403, 404), required=("log_index", "tree_size"), headers=_READ)
CONSISTENCY = described(200, ConsistencyProof, (400, 403, 404), required=("from", "to"), headers=_READ)
COSIGNATURE = described(204, None, (400, 403, 404, 415), Cosignature, answers_token=True)
PROOF_BUNDLE = described(200, dict, (400, 403, 404), required=("version",), headers=_READ)

# What the auditor console reads, for any client (service/http/runs.py)
_PAGE_AFTER = {"after": {"type": "string", "minLength": 1}}  # the opaque cursor of a Link: rel="next"
RUNS = described(
    200, list[RunSummary], (400, 403), query={**_PAGE_AFTER, "q": {"type": "string", "maxLength": 200}}, headers=_READ
)
_MOMENT = {"type": "string", "format": "date-time"}
CHANGES = described(
    200,
    list[GoldLabelChange],
    (400, 403, 404),
    required=("from",),
    query={**_PAGE_AFTER, "from": _MOMENT, "to": _MOMENT},
    headers=_READ,
)
