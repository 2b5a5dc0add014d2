"""The bytes an event's chain hash covers, in both chain formats, computed with the standard library alone
so that an auditor can recompute every hash without goldtrail's dependencies.

Both formats hash a compact JSON array (no spaces) of the event's fields. Strings are written as JSON
strings in UTF-8: only `"`, `\\` and the control characters U+0000–U+001F are escaped (`\\b \\f \\n \\r \\t`
by their short forms, the others as `\\u00xx` with lowercase hex); everything else, U+007F and U+2028
included, is written as itself. This is exactly what `json.dumps(value, ensure_ascii=False,
separators=(",", ":"))` writes, and what goldtrail has always written.

Format 1 (every event written so far):
    [account_id, label_id, version, run_id, type, PAYLOAD, actor, recorded_at, request_id, reason, prev_hash]
where PAYLOAD is the stored payload JSON text inserted as it is (not as a string), `reason` is a string or
null, `version` a JSON integer and `recorded_at` the stored RFC 3339 text (`2026-01-02T03:04:05.060708Z`).

Format 2 ("ready for erasure", DESIGN §3.1):
    ["goldtrail-event/2", account_id, label_id, version, run_id, type, payload_sha256, actor, recorded_at,
     request_id, reason, prev_hash]
where payload_sha256 is the lowercase hex SHA-256 of the stored payload's UTF-8 bytes, so the payload can
be erased later and the chain still verifies. The two inputs can never coincide: the third element is
a JSON number in format 1 and a JSON string in format 2, and everything before it is written by this
module, never copied from stored text.

The chain hash is the lowercase hex SHA-256 of those bytes.
"""

from __future__ import annotations

import hashlib
from json.encoder import encode_basestring as _string  # what json.dumps(str, ensure_ascii=False) calls

GENESIS_HASH = "0" * 64
"""The prev_hash of every label's first event."""

FORMAT_2_TAG = "goldtrail-event/2"
_FORMAT_2_HEAD = _string(FORMAT_2_TAG)


def _reason(reason: str | None) -> str:
    return "null" if reason is None else _string(reason)


def _int(value: int) -> str:
    # int.__repr__ on purpose: bool is an int subclass and must not pass as a version.
    if type(value) is not int:
        raise TypeError(f"version must be an int, not {type(value).__name__}")
    return int.__repr__(value)


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
    """Format 1's hashed input; `data` is the stored payload (bytes or text), `recorded_at` as
    `events.types.format_time` writes it."""
    head = f"[{_string(account_id)},{_string(stream_id)},{_int(version)},{_string(run_id)},{_string(event_type)},"
    tail = f",{_string(actor)},{_string(recorded_at)},{_string(request_id)},{_reason(reason)},{_string(prev_hash)}]"
    if isinstance(data, str):
        return (head + data + tail).encode()
    return head.encode() + bytes(data) + tail.encode()


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
    """Format 1's chain hash."""
    # Plain parameters, not **fields: a replay calls this once per event.
    return hashlib.sha256(
        canonical_bytes(
            account_id, stream_id, version, run_id, event_type, data, actor, recorded_at, request_id, reason, prev_hash
        )
    ).hexdigest()


def payload_digest(data: bytes | str) -> str:
    """The lowercase hex SHA-256 of a stored payload (text is hashed as its UTF-8 bytes)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def canonical_parts_v2(
    account_id: str,
    stream_id: str,
    run_id: str,
    event_type: str,
    data_sha256: str,
    actor: str,
    recorded_at: str,
    request_id: str,
    reason: str | None,
) -> tuple[str, str]:
    """Format 2's hashed input around the two fields a label's row decides, `version` and `prev_hash`:
    the input is `head + str(version) + middle + JSON string of prev_hash + "]"` (a hash goldtrail wrote is 64
    hex digits, so its JSON string is itself between quotes). A database can then seal the next event of a
    label in the same statement that moves the label on."""
    head = f"[{_FORMAT_2_HEAD},{_string(account_id)},{_string(stream_id)},"
    middle = (
        f",{_string(run_id)},{_string(event_type)},{_string(data_sha256)},{_string(actor)},{_string(recorded_at)},"
        f"{_string(request_id)},{_reason(reason)},"
    )
    return head, middle


def canonical_bytes_v2(
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
) -> bytes:
    """Format 2's hashed input: the payload enters only through `data_sha256` (see `payload_digest`)."""
    head, middle = canonical_parts_v2(
        account_id, stream_id, run_id, event_type, data_sha256, actor, recorded_at, request_id, reason
    )
    return f"{head}{_int(version)}{middle}{_string(prev_hash)}]".encode()


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
    """Format 2's chain hash."""
    return hashlib.sha256(
        canonical_bytes_v2(
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
    ).hexdigest()
