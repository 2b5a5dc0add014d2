"""Append to and read from the event log. Functions take a connection and never commit:
the caller owns the transaction, so an event and its projection commit or vanish together."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from events.chain import seal
from events.schema import events
from events.types import PendingEvent, RecordedEvent, SealedEvent, decode_data

COLUMNS = (
    events.c.position,
    events.c.account_id,
    events.c.stream_id,
    events.c.version,
    events.c.run_id,
    events.c.data,
    events.c.actor,
    events.c.recorded_at,
    events.c.request_id,
    events.c.reason,
    events.c.prev_hash,
    events.c.hash,
)


class SqlTransaction(Protocol):
    """The hand-written-SQL transaction the request path writes through (see service.storage.database)."""

    def for_update(self, sql: str) -> str: ...

    async def queue(self, account_id: str, label_id: str) -> None: ...

    async def fetchone(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None: ...

    async def execute(self, sql: str, params: dict[str, Any]) -> None: ...

    async def execute_one(self, sql: str, params: dict[str, Any]) -> None: ...


_APPEND = (
    "INSERT INTO events (account_id, stream_id, version, run_id, type, data, actor, recorded_at, request_id,"
    " reason, prev_hash, hash) VALUES (:account_id, :stream_id, :version, :run_id, :type, :data, :actor,"
    " :recorded_at, :request_id, :reason, :prev_hash, :hash)"
)


async def append(tx: SqlTransaction, event: PendingEvent) -> SealedEvent:
    """Append one event (sent with the transaction's next waiting statement). A clash on (stream, version)
    surfaces as the database's unique violation, before the transaction can commit."""
    data, digest = seal(event)
    await tx.execute(
        _APPEND,
        {
            "account_id": event.account_id,
            "stream_id": event.stream_id,
            "version": event.version,
            "run_id": event.run_id,
            "type": event.type,
            "data": data.decode(),
            "actor": event.actor,
            "recorded_at": event.recorded_at,
            "request_id": event.request_id,
            "reason": event.reason,
            "prev_hash": event.prev_hash,
            "hash": digest,
        },
    )
    return SealedEvent(**msgspec.structs.asdict(event), hash=digest)


def from_row(row: sa.Row) -> RecordedEvent:
    return RecordedEvent(
        position=row.position,
        account_id=row.account_id,
        stream_id=row.stream_id,
        version=row.version,
        run_id=row.run_id,
        data=decode_data(row.data),
        actor=row.actor,
        recorded_at=row.recorded_at,
        request_id=row.request_id,
        reason=row.reason,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


async def read_stream(conn: AsyncConnection, account_id: str | None, stream_id: str) -> list[RecordedEvent]:
    """Every event of one stream, oldest first; operators may leave out the account (ids are UUIDs)."""
    query = sa.select(*COLUMNS).where(events.c.stream_id == stream_id).order_by(events.c.version)
    if account_id is not None:
        query = query.where(events.c.account_id == account_id)
    result = await conn.execute(query)
    return [from_row(row) for row in result]


async def has_event(conn: AsyncConnection, event: SealedEvent) -> bool:
    """Whether this very event (same stream, version and hash) is in the log: the way to learn if a
    write whose COMMIT answer was lost did commit."""
    query = sa.select(events.c.hash).where(
        events.c.account_id == event.account_id,
        events.c.stream_id == event.stream_id,
        events.c.version == event.version,
    )
    return (await conn.execute(query)).scalar_one_or_none() == event.hash
