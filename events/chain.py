"""The hash chain: each event's SHA-256 covers its content and the hash of the event before it.

The input is a canonical JSON array of the event's stored fields (the payload as its stored
bytes), so anyone can recompute it from the table alone, without goldtrail's code.
events.canonical specifies these bytes and computes them with the standard library alone (for offline
verifiers, and for chain format 2); the service hashes with msgspec here because a replay hashes every
event and msgspec is about twice as fast. Tests pin the two to the same bytes for any text.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import msgspec

from events.canonical import FORMAT_2_TAG, canonical_parts_v2, payload_digest
from events.types import Event, PendingEvent, encode_data, format_time

_encoder = msgspec.json.Encoder()


def canonical_bytes(
    account_id: str,
    stream_id: str,
    version: int,
    run_id: str,
    event_type: str,
    data: bytes | str,
    actor: str,
    recorded_at: str,
    request_id: str,
    reason: str | None,
    prev_hash: str,
) -> bytes:
    """The hashed input; `data` is the stored payload (bytes or text), `recorded_at` as `format_time` writes it."""
    # A tuple encodes as the same JSON array as a list, a little faster.
    return _encoder.encode(
        (
            account_id,
            stream_id,
            version,
            run_id,
            event_type,
            msgspec.Raw(data),
            actor,
            recorded_at,
            request_id,
            reason,
            prev_hash,
        )
    )


def hash_fields(
    account_id: str,
    stream_id: str,
    version: int,
    run_id: str,
    event_type: str,
    data: bytes | str,
    actor: str,
    recorded_at: str,
    request_id: str,
    reason: str | None,
    prev_hash: str,
) -> str:
    # Plain parameters, not **fields: a replay calls this once per event, and packing and unpacking a
    # dict twice cost more than the encoding.
    return hashlib.sha256(
        canonical_bytes(
            account_id, stream_id, version, run_id, event_type, data, actor, recorded_at, request_id, reason, prev_hash
        )
    ).hexdigest()


# The format new events are sealed in: 2 commits to the payload through its SHA-256, so that a payload can
# one day be erased without breaking a chain, a tree or a proof (events.canonical).
CHAIN_FORMAT = 2


def hash_fields_v2(
    account_id: str,
    stream_id: str,
    version: int,
    run_id: str,
    event_type: str,
    data_sha256: str,
    actor: str,
    recorded_at: str,
    request_id: str,
    reason: str | None,
    prev_hash: str,
) -> str:
    """events.canonical.hash_fields_v2, encoded by msgspec (the same bytes, faster)."""
    return hashlib.sha256(
        _encoder.encode(
            (
                FORMAT_2_TAG,
                account_id,
                stream_id,
                version,
                run_id,
                event_type,
                data_sha256,
                actor,
                recorded_at,
                request_id,
                reason,
                prev_hash,
            )
        )
    ).hexdigest()


def chain_hash(
    chain: int,
    account_id: str,
    stream_id: str,
    version: int,
    run_id: str,
    event_type: str,
    data: bytes | str,
    actor: str,
    recorded_at: str,
    request_id: str,
    reason: str | None,
    prev_hash: str,
) -> str:
    """An event's chain hash in its chain format (1: over the payload; 2: over the payload's SHA-256)."""
    if chain == 1:
        return hash_fields(
            account_id, stream_id, version, run_id, event_type, data, actor, recorded_at, request_id, reason, prev_hash
        )
    return hash_fields_v2(
        account_id,
        stream_id,
        version,
        run_id,
        event_type,
        payload_digest(data),
        actor,
        recorded_at,
        request_id,
        reason,
        prev_hash,
    )


def seal(event: PendingEvent) -> tuple[bytes, str]:
    """The payload bytes to store and the event's chain hash, in CHAIN_FORMAT."""
    data = encode_data(event.data)
    digest = chain_hash(
        CHAIN_FORMAT,
        event.account_id,
        event.stream_id,
        event.version,
        event.run_id,
        event.type,
        data,
        event.actor,
        format_time(event.recorded_at),
        event.request_id,
        event.reason,
        event.prev_hash,
    )
    return data, digest


def seal_around(
    account_id: str,
    stream_id: str,
    run_id: str,
    data: Event,
    actor: str,
    recorded_at: datetime,
    request_id: str,
    reason: str | None,
) -> tuple[bytes, str, str]:
    """For an event whose version and prev_hash its label's row will decide (group commit seals it in SQL):
    the payload to store, and the hashed input around those two fields, in CHAIN_FORMAT
    (events.canonical.canonical_parts_v2)."""
    payload = encode_data(data)
    head, middle = canonical_parts_v2(
        account_id,
        stream_id,
        run_id,
        type(data).__struct_config__.tag,  # type: ignore[arg-type]
        payload_digest(payload),
        actor,
        format_time(recorded_at),
        request_id,
        reason,
    )
    return payload, head, middle
