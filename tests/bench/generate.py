"""Fill an event table fast with valid, hash-chained events (COPY on PostgreSQL), for benchmarks."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import sqlalchemy as sa

from events.chain import seal
from events.types import GENESIS_HASH, GoldLabelCreated, GoldLabelUpdated, PendingEvent, format_time

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def label_events(
    account: str, run_id: str, labels: int, versions: int, start: datetime = EPOCH
) -> Iterator[tuple[PendingEvent, bytes, str]]:
    """`labels` labels of one run, each created and then updated to `versions` versions, interleaved
    round by round (as real traffic is), with recorded_at one microsecond apart."""
    ids = [str(uuid.uuid4()) for _ in range(labels)]
    previous = dict.fromkeys(ids, GENESIS_HASH)
    tick = 0
    for version in range(1, versions + 1):
        for n, label_id in enumerate(ids):
            tick += 1
            data = (
                GoldLabelCreated(run_id=run_id, output_resource_name=f"output-{n}", text_value="v1")
                if version == 1
                else GoldLabelUpdated(text_value=f"v{version} of {n}")
            )
            event = PendingEvent(
                account_id=account,
                stream_id=label_id,
                version=version,
                run_id=run_id,
                data=data,
                actor="bench",
                recorded_at=start + timedelta(microseconds=tick),
                request_id=f"bench-{tick}",
                reason=None,
                prev_hash=previous[label_id],
            )
            payload, digest = seal(event)
            previous[label_id] = digest
            yield event, payload, digest


COLUMNS = "account_id, stream_id, version, run_id, type, data, actor, recorded_at, request_id, reason, prev_hash, hash"


def _row(event: PendingEvent, payload: bytes, digest: str) -> tuple:
    return (
        event.account_id,
        event.stream_id,
        event.version,
        event.run_id,
        event.type,
        payload.decode(),
        event.actor,
        format_time(event.recorded_at),
        event.request_id,
        event.reason,
        event.prev_hash,
        digest,
    )


def insert_events(database_url: str, rows: Iterator[tuple[PendingEvent, bytes, str]]) -> int:
    """Write the events (not the read model: `goldtrail rebuild` makes that). Returns how many."""
    url = sa.make_url(database_url)
    count = 0
    if url.get_backend_name() == "postgresql":
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with (
            psycopg.connect(dsn) as conn,
            conn.cursor() as cursor,
            cursor.copy(f"COPY events ({COLUMNS}) FROM STDIN") as copy,
        ):
            for event, payload, digest in rows:
                copy.write_row(_row(event, payload, digest))
                count += 1
        return count
    with sqlite3.connect(url.database) as conn:
        batch = []
        for event, payload, digest in rows:
            row = list(_row(event, payload, digest))
            row[7] = event.recorded_at.strftime("%Y-%m-%d %H:%M:%S.%f")  # SQLAlchemy's SQLite DATETIME text
            batch.append(row)
            if len(batch) == 10_000:
                conn.executemany(f"INSERT INTO events ({COLUMNS}) VALUES ({','.join('?' * 12)})", batch)
                count += len(batch)
                batch = []
        conn.executemany(f"INSERT INTO events ({COLUMNS}) VALUES ({','.join('?' * 12)})", batch)
        count += len(batch)
    return count
