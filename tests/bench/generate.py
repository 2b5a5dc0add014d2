"""Fill an event table fast with valid, hash-chained events (COPY on PostgreSQL), for benchmarks."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import sqlalchemy as sa

from events.chain import CHAIN_FORMAT, seal
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
# Events sealed by events.chain.seal carry its chain format; the bulk rows below hash in format 1 (the default).
SEALED_COLUMNS = f"{COLUMNS}, chain"


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
        CHAIN_FORMAT,
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
            cursor.copy(f"COPY events ({SEALED_COLUMNS}) FROM STDIN") as copy,
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
                conn.executemany(f"INSERT INTO events ({SEALED_COLUMNS}) VALUES ({','.join('?' * 13)})", batch)
                count += len(batch)
                batch = []
        conn.executemany(f"INSERT INTO events ({SEALED_COLUMNS}) VALUES ({','.join('?' * 13)})", batch)
        count += len(batch)
    return count


# Bulk histories, for the scale benchmark: the rows the service would have written, built directly as
# table rows with the hash over the same canonical bytes as events.chain (no PendingEvent, no msgspec):
# seal() at about 10 µs an event would make 10M events take minutes before a single row is written.
# `goldtrail verify` accepts the result (tests/bench/scale.py checks it on small logs).

LABEL_COLUMNS = (
    "account_id, id, run_id, output_resource_name, text_value, object_value, object_value_is_partial,"
    " created_by, created_at, updated_by, updated_at, deleted_by, deleted_at, version, hash"
)
ACCOUNTS = ("bench", "acme", "globex", "initech", "umbrella")
ACTORS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")
RUN_LABELS = 50
# A label's version count cycles 1..9 (5 on average); one in ten with two or more ends deleted.
RUN_VERSIONS = [1 + n % 9 for n in range(RUN_LABELS)]
RUN_DELETED = [n % 10 == 9 and RUN_VERSIONS[n] > 1 for n in range(RUN_LABELS)]
RUN_EVENTS = sum(RUN_VERSIONS)
# Bulk events are 10 ms apart and end before EPOCH, where label_events and the labels under test start
# (up to 25M events).
HISTORY_START = EPOCH - timedelta(days=3)
TICK_MICROSECONDS = 10_000


class Clock:
    """RFC 3339 text (as format_time writes it) of the tick-th moment after `start`, without building a
    datetime for each event: the formatted second is kept until the tick moves past it."""

    def __init__(self, start: datetime, step_us: int) -> None:
        self.start, self.step_us, self.second, self.prefix = start, step_us, -1, ""

    def __call__(self, tick: int) -> str:
        second, micro = divmod(tick * self.step_us, 1_000_000)
        if second != self.second:
            self.second, self.prefix = second, format_time(self.start + timedelta(seconds=second))[:20]
        return f"{self.prefix}{micro:06d}Z"


def _value(n: int, version: int) -> tuple[str, str | None, str | None, bool | None]:
    """A label's value at a version: its JSON fields in an event payload, and the read-model columns.
    One label in four holds an object value, the others text."""
    if n % 4 == 3:
        value = f'{{"answer":"option {(n + version) % 7}","score":0.{(n * 7919 + version * 104729) % 1000:03d}}}'
        partial = version % 3 == 0
        json = f'"text_value":null,"object_value":{value},"object_value_is_partial":{"true" if partial else "false"}'
        return json, None, value, partial
    text = f"answer for output {n}, revision {version}"
    return f'"text_value":"{text}","object_value":null,"object_value_is_partial":null', text, None, None


def run_rows(
    account: str,
    run_id: str,
    versions: list[int],
    deleted: list[bool],
    first_tick: int,
    clock: Clock,
) -> tuple[list[tuple], list[list]]:
    """The event rows (COLUMNS) and read-model rows (LABEL_COLUMNS) of one run: label n has
    `versions[n]` events, the last a delete when `deleted[n]`; interleaved round by round, as real
    traffic is, one tick apart from `first_tick` on. Values are plain ASCII, so nothing needs escaping."""
    ids = [str(uuid.UUID(bytes=os.urandom(16), version=4)) for _ in versions]
    previous = [GENESIS_HASH] * len(versions)
    labels: list[list] = [[] for _ in versions]
    events = []
    sha256 = hashlib.sha256
    tick = first_tick
    for version in range(1, max(versions) + 1):
        for n, last in enumerate(versions):
            if last < version:
                continue
            tick += 1
            at = clock(tick)
            actor = ACTORS[(n + version) % len(ACTORS)]
            label = labels[n]
            if version == 1:
                kind, reason = "GoldLabelCreated", None
                json, text, value, partial = _value(n, version)
                data = f'{{"type":"{kind}","run_id":"{run_id}","output_resource_name":"output-{n}",{json}}}'
                label += [account, ids[n], run_id, f"output-{n}", text, value, partial, actor, at, actor, at, None,
                          None, 1, None]  # fmt: skip
            elif version == last and deleted[n]:
                kind, reason = "GoldLabelDeleted", "duplicate output"
                data = '{"type":"GoldLabelDeleted"}'
                label[11:14] = actor, at, version
            else:
                kind, reason = "GoldLabelUpdated", "reviewed by the eval team" if version % 3 == 0 else None
                json, text, value, partial = _value(n, version)
                data = f'{{"type":"{kind}",{json}}}'
                label[4:7] = text, value, partial
                label[9:11] = actor, at
                label[13] = version
            request_id = f"req-{tick}"
            quoted_reason = "null" if reason is None else f'"{reason}"'
            canonical = (
                f'["{account}","{ids[n]}",{version},"{run_id}","{kind}",{data},"{actor}","{at}","{request_id}",'
                f'{quoted_reason},"{previous[n]}"]'
            )
            digest = sha256(canonical.encode()).hexdigest()
            events.append((account, ids[n], version, run_id, kind, data, actor, at, request_id, reason, previous[n],
                           digest))  # fmt: skip
            previous[n] = label[14] = digest
    return events, labels


def history_runs(events: int) -> int:
    """How many bulk runs make about `events` events."""
    return round(events / RUN_EVENTS)


def bulk_run(index: int, clock: Clock) -> tuple[list[tuple], list[list]]:
    """Bulk run number `index`: its account cycles through ACCOUNTS, its ticks follow the run before."""
    account = ACCOUNTS[index % len(ACCOUNTS)]
    return run_rows(account, str(uuid.uuid4()), RUN_VERSIONS, RUN_DELETED, index * RUN_EVENTS, clock)


_NULL = "\\N"


def _event_lines(rows: list[tuple]) -> bytes:
    return "".join(
        f"{a}\t{s}\t{v}\t{r}\t{k}\t{d}\t{actor}\t{at}\t{q}\t{_NULL if reason is None else reason}\t{p}\t{h}\n"
        for a, s, v, r, k, d, actor, at, q, reason, p, h in rows
    ).encode()


def _label_lines(rows: list[list]) -> bytes:
    return "".join("\t".join(_NULL if f is None else str(f) for f in row) + "\n" for row in rows).encode()


def _postgres_dsn(database_url: str) -> str:
    return sa.make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def _copy_runs(dsn: str, runs: range) -> int:
    """COPY the bulk runs `runs` (a slice of them, in one worker process); returns the events written."""
    clock, count = Clock(HISTORY_START, TICK_MICROSECONDS), 0
    with (
        psycopg.connect(dsn) as events_conn,
        psycopg.connect(dsn) as labels_conn,
        events_conn.cursor().copy(f"COPY events ({COLUMNS}) FROM STDIN") as events,
        labels_conn.cursor().copy(f"COPY gold_labels ({LABEL_COLUMNS}) FROM STDIN") as labels,
    ):
        for index in runs:
            event_rows, label_rows = bulk_run(index, clock)
            events.write(_event_lines(event_rows))
            labels.write(_label_lines(label_rows))
            count += len(event_rows)
    return count


# Every index and primary or unique constraint of the two bulk-loaded tables, as (drop, create) DDL.
_POSTGRES_INDEXES = """
SELECT format('ALTER TABLE %I DROP CONSTRAINT %I', conrelid::regclass, conname),
       format('ALTER TABLE %I ADD CONSTRAINT %I %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
  FROM pg_constraint WHERE conrelid IN ('events'::regclass, 'gold_labels'::regclass) AND contype IN ('p', 'u')
UNION ALL
SELECT format('DROP INDEX %s', indexrelid::regclass), pg_get_indexdef(indexrelid)
  FROM pg_index WHERE indrelid IN ('events'::regclass, 'gold_labels'::regclass)
   AND NOT EXISTS (SELECT FROM pg_constraint WHERE conindid = indexrelid)
"""
_POSTGRES_INDEX_DEFINITIONS = """
SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid IN ('events'::regclass, 'gold_labels'::regclass)
 ORDER BY 1
"""


def write_history_postgres(database_url: str, runs: int, last: tuple[list[tuple], list[list]], parts: int = 2) -> int:
    """Fill a freshly migrated database with `runs` bulk runs and then the rows of `last`, each with its
    read-model rows; returns the events written. The indexes are dropped for the load and built again
    after it from their own definitions (one sort is several times faster than 10M random inserts), and
    checked to be the same. `parts` processes generate and COPY side by side, so their runs' positions
    interleave, as concurrent writers' do."""
    dsn = _postgres_dsn(database_url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = conn.execute(_POSTGRES_INDEX_DEFINITIONS).fetchall()
        indexes = conn.execute(_POSTGRES_INDEXES).fetchall()
        for drop, _ in indexes:
            conn.execute(drop)
        count = 0
        if runs:
            with ProcessPoolExecutor(parts, mp_context=multiprocessing.get_context("spawn")) as pool:
                count += sum(pool.map(_copy_runs, [dsn] * parts, [range(part, runs, parts) for part in range(parts)]))
        event_rows, label_rows = last
        with conn.cursor().copy(f"COPY events ({COLUMNS}) FROM STDIN") as copy:
            copy.write(_event_lines(event_rows))
        with conn.cursor().copy(f"COPY gold_labels ({LABEL_COLUMNS}) FROM STDIN") as copy:
            copy.write(_label_lines(label_rows))
        count += len(event_rows)
        conn.execute("SET maintenance_work_mem = '1GB'")
        for _, create in indexes:
            conn.execute(create)
        if conn.execute(_POSTGRES_INDEX_DEFINITIONS).fetchall() != before:
            raise RuntimeError("the rebuilt indexes differ from the migrated ones")
        # What autovacuum would have done long ago to tables this size (and it may be off on a test server);
        # then the checkpoint, so that writing out the load does not fall into a measurement.
        conn.execute("VACUUM (ANALYZE) events, gold_labels")
        conn.execute("CHECKPOINT")
    return count


def _sqlite_time(text: str | None) -> str | None:
    """RFC 3339 as the rows carry it, to SQLAlchemy's SQLite DATETIME text ('2026-01-01 00:00:00.000000')."""
    return None if text is None else f"{text[:10]} {text[11:26]}"


def _sqlite_rows(rows: tuple[list[tuple], list[list]]) -> tuple[list[tuple], list[list]]:
    event_rows, label_rows = rows
    return (
        [(*row[:7], _sqlite_time(row[7]), *row[8:]) for row in event_rows],
        [[*row[:8], _sqlite_time(row[8]), row[9], _sqlite_time(row[10]), row[11], _sqlite_time(row[12]), *row[13:]]
         for row in label_rows],
    )  # fmt: skip


def _sqlite_runs(runs: range) -> tuple[list[tuple], list[list]]:
    """The rows of the bulk runs `runs`, ready for SQLite (built in a worker process)."""
    clock, events, labels = Clock(HISTORY_START, TICK_MICROSECONDS), [], []
    for index in runs:
        event_rows, label_rows = _sqlite_rows(bulk_run(index, clock))
        events += event_rows
        labels += label_rows
    return events, labels


def write_history_sqlite(database_url: str, runs: int, last: tuple[list[tuple], list[list]], parts: int = 2) -> int:
    """The SQLite counterpart of write_history_postgres. SQLite has one writer: `parts` processes build
    the rows, a few chunks ahead of it, while this one inserts them in order."""
    path = sa.make_url(database_url).database
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            " AND tbl_name IN ('events', 'gold_labels')"
        ).fetchall()  # not the unique constraints and primary keys, which SQLite cannot drop
        # A scratch database: no journal while loading, then WAL again, as the service sets it.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1000000")
        conn.execute("BEGIN")
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
        count = 0

        def insert(rows: tuple[list[tuple], list[list]]) -> None:
            nonlocal count
            event_rows, label_rows = rows
            conn.executemany(f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join('?' * 12)})", event_rows)
            conn.executemany(f"INSERT INTO gold_labels ({LABEL_COLUMNS}) VALUES ({', '.join('?' * 15)})", label_rows)
            count += len(event_rows)

        chunk = 100  # runs, about 24,000 events
        with ProcessPoolExecutor(parts, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending: deque[Future] = deque()
            for first in range(0, runs, chunk):
                pending.append(pool.submit(_sqlite_runs, range(first, min(first + chunk, runs))))
                if len(pending) > 2 * parts:  # a bounded lead, so the rows never pile up in memory
                    insert(pending.popleft().result())
            while pending:
                insert(pending.popleft().result())
        insert(_sqlite_rows(last))
        for _, create in indexes:
            conn.execute(create)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    # Written without syncing: flush it now, so that the kernel does not write it out during a measurement.
    with open(path, "rb+") as file:
        os.fsync(file.fileno())
    return count


def write_runs(database_url: str, runs: Iterable[tuple[list[tuple], list[list]]]) -> int:
    """Write the event and read-model rows of runs as `run_rows` makes them into a migrated database, its
    indexes kept (for up to a few hundred thousand events); returns the events written."""
    count = 0
    if sa.make_url(database_url).get_backend_name() == "postgresql":
        dsn = _postgres_dsn(database_url)
        with (
            psycopg.connect(dsn) as events_conn,
            psycopg.connect(dsn) as labels_conn,
            events_conn.cursor().copy(f"COPY events ({COLUMNS}) FROM STDIN") as events,
            labels_conn.cursor().copy(f"COPY gold_labels ({LABEL_COLUMNS}) FROM STDIN") as labels,
        ):
            for event_rows, label_rows in runs:
                events.write(_event_lines(event_rows))
                labels.write(_label_lines(label_rows))
                count += len(event_rows)
        return count
    with sqlite3.connect(sa.make_url(database_url).database) as conn:
        for rows in runs:
            event_rows, label_rows = _sqlite_rows(rows)
            conn.executemany(f"INSERT INTO events ({COLUMNS}) VALUES ({', '.join('?' * 12)})", event_rows)
            conn.executemany(f"INSERT INTO gold_labels ({LABEL_COLUMNS}) VALUES ({', '.join('?' * 15)})", label_rows)
            count += len(event_rows)
    return count


def write_history(database_url: str, runs: int, last: tuple[list[tuple], list[list]]) -> int:
    """`runs` bulk runs (RUN_EVENTS events each, over ACCOUNTS), then the rows of `last`, into a freshly
    migrated database, with the read model that `goldtrail rebuild` would make; returns the events."""
    parts = os.cpu_count() or 2
    if sa.make_url(database_url).get_backend_name() == "postgresql":
        return write_history_postgres(database_url, runs, last, parts)
    return write_history_sqlite(database_url, runs, last, parts)
