"""What the use cases are asked to do, and by whom: the commands (as HTTP bodies decode into them), the
actor, and the one error for a command that cannot be carried out as given."""

from __future__ import annotations

from typing import Annotated

import msgspec

from events.types import NULL
from service.usecases.idempotency import Idempotency


class InvalidInput(Exception):
    """A request cannot be used as given; `field` names the offending part when known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


MAX_NAME_LENGTH = 500  # keeps the unique index on names within PostgreSQL's btree entry size

# What the OpenAPI schema says of these fields beyond their Python type. Schema only: decoding keeps the raw
# object text, and the name's length is checked after decoding, with a message of its own (see http/bodies.py).
ObjectValue = Annotated[
    msgspec.Raw, msgspec.Meta(extra_json_schema={"type": ["object", "null"], "additionalProperties": True})
]
ResourceName = Annotated[str, msgspec.Meta(extra_json_schema={"minLength": 1, "maxLength": MAX_NAME_LENGTH})]


def _null() -> msgspec.Raw:
    return NULL


# A default factory rather than a default: msgspec cannot write a Raw default into the JSON schema.
_ABSENT_OBJECT = msgspec.field(default_factory=_null)


class NewLabel(msgspec.Struct, frozen=True):
    """Create a label (POST). The object value is the exact JSON text sent; null is the same as absent."""

    output_resource_name: ResourceName
    text_value: str | None = None
    object_value: ObjectValue = _ABSENT_OBJECT
    object_value_is_partial: bool | None = None


MAX_BATCH = 10_000


class LabelBatch(msgspec.Struct, frozen=True):
    """Import a run's labels (POST …/gold-labels/batch): each item upserts the label of its output resource.

    An output resource appears at most once in a batch (400 otherwise).
    """

    labels: Annotated[list[NewLabel], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class LabelPatch(msgspec.Struct, frozen=True):
    """Update a label's value (PUT): absent and null both mean 'leave as it is'; the name can only be sent back."""

    text_value: str | None = None
    object_value: ObjectValue = _ABSENT_OBJECT
    object_value_is_partial: bool | None = None
    output_resource_name: ResourceName | None = None


class Actor(msgspec.Struct, frozen=True):
    """Who makes a change, for which account, under which request id, and why."""

    account_id: str
    user_id: str
    request_id: str
    reason: str | None = None
    idempotency: Idempotency | None = None
