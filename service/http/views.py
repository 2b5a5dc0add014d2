"""What the API returns for a label: the documented `RunGoldLabel`, encoded once, with its ETag."""

from __future__ import annotations

import msgspec

from events.types import format_time
from projections.fold import LabelState
from service.usecases.idempotency import StoredResponse


class RunGoldLabel(msgspec.Struct, frozen=True):
    id: str
    account_id: str
    run_id: str
    output_resource_name: str
    text_value: str | None
    object_value: msgspec.Raw
    object_value_is_partial: bool | None
    created_by: str
    created_at: str
    updated_by: str
    updated_at: str


_encoder = msgspec.json.Encoder()


def run_gold_label(state: LabelState) -> RunGoldLabel:
    return RunGoldLabel(
        id=state.id,
        account_id=state.account_id,
        run_id=state.run_id,
        output_resource_name=state.output_resource_name,
        text_value=state.text_value,
        object_value=state.object_value,
        object_value_is_partial=state.object_value_is_partial,
        created_by=state.created_by,
        created_at=format_time(state.created_at),
        updated_by=state.updated_by,
        updated_at=format_time(state.updated_at),
    )


def encode(value: object) -> bytes:
    return _encoder.encode(value)


def etag(state: LabelState) -> str:
    return f'"{state.version}"'


def label_answer(state: LabelState, status: int, headers: dict[str, str] | None = None) -> StoredResponse:
    """What the API answers for a label write: the label, its ETag, and any extra headers."""
    return StoredResponse(
        status=status, body=encode(run_gold_label(state)), headers={"ETag": etag(state), **(headers or {})}
    )


NO_CONTENT = StoredResponse(status=204, body=b"", headers={})
