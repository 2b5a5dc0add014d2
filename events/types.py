"""Event types of a gold label's stream and the envelope every stored event travels in.

Tags are the stable names written to the log; they never change, even if a class is renamed.
Payloads only ever gain fields with defaults, so every event ever written stays readable.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

# A JSON null kept as raw bytes: object values travel as the exact JSON text the client sent
# (key order, big integers and long decimals intact), so they are never decoded on the way.
NULL = msgspec.Raw(b"null")


class GoldLabelCreated(msgspec.Struct, frozen=True, tag="GoldLabelCreated"):
    run_id: str
    output_resource_name: str
    text_value: str | None = None
    object_value: msgspec.Raw = NULL
    object_value_is_partial: bool | None = None


class GoldLabelUpdated(msgspec.Struct, frozen=True, tag="GoldLabelUpdated"):
    """The label's whole value after the update (not a patch), so folding needs no prior value."""

    text_value: str | None = None
    object_value: msgspec.Raw = NULL
    object_value_is_partial: bool | None = None


class GoldLabelDeleted(msgspec.Struct, frozen=True, tag="GoldLabelDeleted"):
    pass


Event = GoldLabelCreated | GoldLabelUpdated | GoldLabelDeleted

GENESIS_HASH = "0" * 64


class PendingEvent(msgspec.Struct, frozen=True):
    """An event ready to be appended: everything but the position the database assigns."""

    account_id: str
    stream_id: str
    version: int
    run_id: str
    data: Event
    actor: str
    recorded_at: datetime
    request_id: str
    reason: str | None
    prev_hash: str

    @property
    def type(self) -> str:
        return type(self.data).__struct_config__.tag  # type: ignore[return-value]


class SealedEvent(PendingEvent, frozen=True):
    """A pending event with its chain hash: all the fold needs, before the database gives a position."""

    hash: str


class RecordedEvent(SealedEvent, frozen=True):
    """An event as stored: the sealed event plus its global position, the exact payload text its chain hash
    covers, how it covers it (`chain`: 1, the payload's bytes; 2, their SHA-256), and its index in its
    account's verifiable log once integrated."""

    position: int
    payload: str = ""
    chain: int = 1
    log_index: int | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode_data(data: Event) -> bytes:
    return _encoder.encode(data)


def decode_data(raw: bytes | str) -> Event:
    return _decoder.decode(raw)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, always with microseconds, so that text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an explicit offset; raises ValueError otherwise."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return moment.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)
