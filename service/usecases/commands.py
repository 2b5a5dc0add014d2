"""What the use cases are asked to do, and by whom: the commands (as HTTP bodies decode into them), the
actor, and the one error for a command that cannot be carried out as given."""

from __future__ import annotations

import msgspec

from events.types import NULL
from service.usecases.idempotency import Idempotency


class InvalidInput(Exception):
    """A request cannot be used as given; `field` names the offending part when known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NewLabel(msgspec.Struct, frozen=True):
    """Create a label (POST). The object value is the exact JSON text sent."""

    output_resource_name: str
    text_value: str | None = None
    object_value: msgspec.Raw = NULL
    object_value_is_partial: bool | None = None


class LabelPatch(msgspec.Struct, frozen=True):
    """Update a label's value (PUT): absent and null both mean 'leave as it is'."""

    text_value: str | None = None
    object_value: msgspec.Raw = NULL
    object_value_is_partial: bool | None = None
    output_resource_name: str | None = None


class Actor(msgspec.Struct, frozen=True):
    """Who makes a change, for which account, under which request id, and why."""

    account_id: str
    user_id: str
    request_id: str
    reason: str | None = None
    idempotency: Idempotency | None = None
