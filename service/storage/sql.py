"""Every SQL statement goldtrail runs that both databases spell the same way, and the reads and writes
built on them. A backend module (postgres, sqlite) subclasses these with its driver calls and with what
its SQL spells differently; nothing above storage sees SQL.

Statements take `:name` parameters. Schema and migrations are SQLAlchemy Core and Alembic (see schema.py
and migrations/); everything goldtrail runs at request time or in an operator job is written here, on
the driver connection (SQLAlchemy's execution path costs more CPU than the database does for these).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from typing import Any

import msgspec

from events.chain import CHAIN_FORMAT, seal
from events.feed import START, FeedPoint
from events.types import PendingEvent, RecordedEvent, SealedEvent
from projections.fold import LabelState
from projections.replay import EventRow
from service.storage.rows import EVENT_FIELDS, LABEL_FIELDS, Row, event_from_row, label_from_row, label_params

_LABEL_COLUMNS = ", ".join(LABEL_FIELDS)
_EVENT_COLUMNS = ", ".join(EVENT_FIELDS)

APPEND = (
    "INSERT INTO events (account_id, stream_id, version, run_id, type, data, actor, recorded_at, request_id,"
    " reason, prev_hash, hash, chain) VALUES (:account_id, :stream_id, :version, :run_id, :type, :data, :actor,"
    " :recorded_at, :request_id, :reason, :prev_hash, :hash, :chain)"
)
LABEL = f"SELECT {_LABEL_COLUMNS} FROM gold_labels WHERE account_id = :account_id AND id = :id"
INSERT_LABEL = f"INSERT INTO gold_labels ({_LABEL_COLUMNS}) VALUES ({', '.join(':' + f for f in LABEL_FIELDS)})"
MOVE_LABEL_ON = (
    "UPDATE gold_labels SET text_value = :text_value, object_value = :object_value,"
    " object_value_is_partial = :object_value_is_partial, updated_by = :updated_by, updated_at = :updated_at,"
    " deleted_by = :deleted_by, deleted_at = :deleted_at, version = :version, hash = :hash"
    " WHERE account_id = :account_id AND id = :id AND version = :previous"
)
LIVE_LABELS = (
    f"SELECT {_LABEL_COLUMNS} FROM gold_labels WHERE account_id = :account_id AND run_id = :run_id"
    " AND deleted_at IS NULL ORDER BY created_at, id"
)
LIVE_LABELS_AFTER = (
    f"SELECT {_LABEL_COLUMNS} FROM gold_labels WHERE account_id = :account_id AND run_id = :run_id"
    " AND deleted_at IS NULL AND (created_at, id) > (:after_created_at, :after_id) ORDER BY created_at, id"
)
RUN_IS_KNOWN = "SELECT 1 FROM gold_labels WHERE account_id = :account_id AND run_id = :run_id LIMIT 1"
LIVE_LABEL_NAMED = (
    "SELECT id FROM gold_labels WHERE account_id = :account_id AND run_id = :run_id"
    " AND output_resource_name = :name AND deleted_at IS NULL"
)
STREAM = (
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE account_id = :account_id AND stream_id = :stream_id ORDER BY version"
)
# Operators may leave out the account: label ids are UUIDs.
STREAM_OF_ANY_ACCOUNT = f"SELECT {_EVENT_COLUMNS} FROM events WHERE stream_id = :stream_id ORDER BY version"
EVENT_HASH = "SELECT hash FROM events WHERE account_id = :account_id AND stream_id = :stream_id AND version = :version"
RUN_EVENTS_UNTIL = (
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE account_id = :account_id AND run_id = :run_id"
    " AND recorded_at <= :at ORDER BY position"
)
COUNT_EVENTS = "SELECT count(*) FROM events"
READ_MODEL = f"SELECT {_LABEL_COLUMNS} FROM gold_labels"
DELETE_READ_MODEL = "DELETE FROM gold_labels"

CLAIM_KEY = (
    "INSERT INTO idempotency_keys (account_id, key, fingerprint, created_at)"
    " VALUES (:account_id, :key, :fingerprint, :created_at) ON CONFLICT DO NOTHING RETURNING key"
)
EARLIER_CLAIM = (
    "SELECT fingerprint, created_at, status, body, headers FROM idempotency_keys"
    " WHERE account_id = :account_id AND key = :key"
)
RECLAIM_KEY = (
    "UPDATE idempotency_keys SET fingerprint = :fingerprint, created_at = :created_at, status = NULL, body = NULL,"
    " headers = NULL WHERE account_id = :account_id AND key = :key"
)
REMEMBER_ANSWER = (
    "UPDATE idempotency_keys SET status = :status, body = :body, headers = :headers"
    " WHERE account_id = :account_id AND key = :key"
)


# The verifiable log (migration 0005) ------------------------------------------------------------------

LOG_HEAD = "SELECT tree_size, root FROM log_heads WHERE account_id = :account_id"
LATEST_CHECKPOINT = (
    "SELECT tree_size, note FROM log_checkpoints WHERE account_id = :account_id ORDER BY tree_size DESC LIMIT 1"
)
CHECKPOINT_OF_SIZE = "SELECT tree_size, note FROM log_checkpoints WHERE account_id = :account_id AND tree_size = :size"
COSIGNATURES = (
    "SELECT signature FROM log_cosignatures WHERE account_id = :account_id AND tree_size = :size ORDER BY witness"
)
LOG_INDEX_OF = "SELECT log_index FROM log_leaves WHERE account_id = :account_id AND position = :position"
_LOGGED_EVENT_COLUMNS = ", ".join(f"e.{name}" for name in EVENT_FIELDS)
LOG_PAGE = (
    f"SELECT {_LOGGED_EVENT_COLUMNS}, l.log_index FROM log_leaves l"
    " JOIN events e ON e.position = l.position"
    " WHERE l.account_id = :account_id AND l.log_index >= :start ORDER BY l.log_index"
)
STREAM_WITH_INDEX = (
    f"SELECT {_LOGGED_EVENT_COLUMNS}, l.log_index FROM events e"
    " LEFT JOIN log_leaves l ON l.account_id = e.account_id AND l.position = e.position"
    " WHERE e.account_id = :account_id AND e.stream_id = :stream_id ORDER BY e.version"
)
PUT_TILE = (
    "INSERT INTO log_tiles (account_id, level, tile_index, hashes) VALUES (:account_id, :level, :tile_index, :hashes)"
    " ON CONFLICT (account_id, level, tile_index) DO UPDATE SET hashes = excluded.hashes"
)
PUT_HEAD = (
    "INSERT INTO log_heads (account_id, tree_size, root) VALUES (:account_id, :tree_size, :root)"
    " ON CONFLICT (account_id) DO UPDATE SET tree_size = excluded.tree_size, root = excluded.root"
)
ADD_LEAF = "INSERT INTO log_leaves (account_id, log_index, position) VALUES (:account_id, :log_index, :position)"
PROGRESS = "SELECT tx_id, position FROM log_progress WHERE id = 1"
SET_PROGRESS = "UPDATE log_progress SET tx_id = :tx_id, position = :position WHERE id = 1"
UNPUBLISHED = (
    "SELECT account_id, tree_size, root FROM log_heads WHERE tree_size > checkpoint_size"
    " AND (checkpoint_at IS NULL OR checkpoint_at <= :before) ORDER BY checkpoint_at LIMIT :limit"
)
ADD_CHECKPOINT = (
    "INSERT INTO log_checkpoints (account_id, tree_size, root, note, signed_at)"
    " VALUES (:account_id, :tree_size, :root, :note, :signed_at)"
)
MARK_PUBLISHED = (
    "UPDATE log_heads SET checkpoint_size = :tree_size, checkpoint_at = :signed_at WHERE account_id = :account_id"
)
ADD_COSIGNATURE = (
    "INSERT INTO log_cosignatures (account_id, tree_size, witness, signature, signed_at)"
    " VALUES (:account_id, :tree_size, :witness, :signature, :signed_at) ON CONFLICT DO NOTHING"
)


# The auditor console ---------------------------------------------------------------------------------

# Every run of an account with the position of its newest event, walking ix_events_account_run one run at a
# time from the largest run id down (a GROUP BY would read every event of the account). Each step finds the
# next run and its newest event with one index probe, handing both on as one text: run ids are canonical
# UUIDs, 36 characters, so the position follows at character 37.
RUNS_WALK = """(WITH RECURSIVE walk(found) AS (
  SELECT (SELECT run_id || position FROM events WHERE account_id = :account_id
          ORDER BY run_id DESC, position DESC LIMIT 1)
  UNION ALL
  SELECT (SELECT e.run_id || e.position FROM events e
          WHERE e.account_id = :account_id AND e.run_id < substr(w.found, 1, 36)
          ORDER BY e.run_id DESC, e.position DESC LIMIT 1)
  FROM walk w WHERE w.found IS NOT NULL
) SELECT substr(found, 1, 36) AS run_id, CAST(substr(found, 37) AS BIGINT) AS newest FROM walk
  WHERE found IS NOT NULL) AS runs"""
# The runs that ever held a label of a name (ix_gold_labels_account_output), each with its newest event.
RUNS_NAMED = (
    "SELECT named.run_id, (SELECT max(e.position) FROM events e WHERE e.account_id = :account_id"
    " AND e.run_id = named.run_id) AS newest"
    " FROM (SELECT DISTINCT run_id FROM gold_labels WHERE account_id = :account_id AND {name_prefix}) AS named"
)
NEWEST_OF_RUN = "SELECT max(position) FROM events WHERE account_id = :account_id AND run_id = :run_id"
RUN_TOTALS = (
    "SELECT run_id, count(*), sum(CASE WHEN deleted_at IS NULL THEN 1 ELSE 0 END), sum(version) FROM gold_labels"
    " WHERE account_id = :account_id AND run_id IN ({runs}) GROUP BY run_id"
)
LABELS_OF_RUN = f"SELECT {_LABEL_COLUMNS} FROM gold_labels WHERE account_id = :account_id AND run_id = :run_id"
# A label is live at a moment when it was created by then and not deleted by then: a deleted label's row keeps
# when it was deleted, and a label's events never go back in time.
LIVE_AT = "created_at <= :at AND (deleted_at IS NULL OR deleted_at > :at)"
STREAM_VERSIONS = STREAM_WITH_INDEX.replace(" ORDER BY", " AND e.version BETWEEN :first AND :last ORDER BY")
# Each event with its log index and its label's output resource name.
_FILTERED_EVENTS = (
    f"SELECT {_LOGGED_EVENT_COLUMNS}, l.log_index, g.output_resource_name FROM events e"
    " LEFT JOIN log_leaves l ON l.account_id = e.account_id AND l.position = e.position"
    " LEFT JOIN gold_labels g ON g.account_id = e.account_id AND g.id = e.stream_id"
)
_EVENT_FILTERS = {
    "actor": "e.actor = :actor",
    "type": "e.type = :type",
    "run_id": "e.run_id = :run_id",
    "since": "e.recorded_at >= :since",
    "until": "e.recorded_at < :until",
}


class EventFilter(msgspec.Struct, frozen=True):
    """Which of an account's events the activity page shows: each given field must match (times: since
    inclusive, until exclusive)."""

    actor: str | None = None
    type: str | None = None
    run_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _marks(prefix: str, values: list) -> tuple[str, dict[str, Any]]:
    """`:p0, :p1, ...` and their parameters, for an IN list."""
    return ", ".join(f":{prefix}{n}" for n in range(len(values))), {f"{prefix}{n}": v for n, v in enumerate(values)}


class EarlierClaim(msgspec.Struct, frozen=True):
    """What an Idempotency-Key already holds: the request it was claimed for, when, and its answer."""

    fingerprint: str
    claimed_at: datetime
    status: int | None
    body: str | None
    headers: str | None


class Reads:
    """Every read goldtrail makes, on one connection. A backend supplies `_one`, `_all`, `_batches`,
    `time`, and its spelling of the feed (`FEED_TX`, `TX_PARAM`, `HORIZON`)."""

    # The feed (events.feed): the transaction id as an integer, a cursor's transaction id as a parameter,
    # and the condition that keeps the feed below the commit horizon (None where every commit is in order).
    FEED_TX = "tx_id"
    TX_PARAM = ":tx_id"
    PROGRESS_TX = "p.tx_id"  # the integrator's progress (log_progress p) as a transaction id
    EVENT_TX = "e.tx_id"  # the transaction id of events e, as an integer
    HORIZON: str | None = None

    async def _one(self, sql: str, params: dict[str, Any]) -> Row | None:
        raise NotImplementedError

    async def _all(self, sql: str, params: dict[str, Any]) -> list[Row]:
        raise NotImplementedError

    def _batches(self, sql: str, params: dict[str, Any], size: int) -> AsyncIterator[list[Row]]:
        """The rows of a long query, `size` at a time, without holding them all."""
        raise NotImplementedError

    def time(self, value: Any) -> datetime:
        """A stored time as an aware UTC datetime."""
        raise NotImplementedError

    async def writable(self) -> bool:
        """Whether the database takes writes (a hot standby does not)."""
        return True

    # Labels ---------------------------------------------------------------------------------------

    async def label(self, account_id: str, label_id: str) -> LabelState | None:
        """One label, deleted ones included."""
        row = await self._one(LABEL, {"account_id": account_id, "id": label_id})
        return None if row is None else label_from_row(row, self.time)

    async def live_labels(self, account_id: str, run_id: str) -> list[LabelState]:
        """A run's live labels, oldest first."""
        rows = await self._all(LIVE_LABELS, {"account_id": account_id, "run_id": run_id})
        return [label_from_row(row, self.time) for row in rows]

    async def live_labels_page(
        self, account_id: str, run_id: str, after: tuple[datetime, str] | None, limit: int
    ) -> list[LabelState]:
        """Up to `limit` live labels of a run, oldest first, after (created_at, id) when given."""
        params: dict[str, Any] = {"account_id": account_id, "run_id": run_id, "limit": limit}
        if after is None:
            rows = await self._all(LIVE_LABELS + " LIMIT :limit", params)
        else:
            params["after_created_at"], params["after_id"] = after
            rows = await self._all(LIVE_LABELS_AFTER + " LIMIT :limit", params)
        return [label_from_row(row, self.time) for row in rows]

    async def live_labels_batches(
        self, account_id: str, run_id: str, batch_size: int
    ) -> AsyncIterator[list[LabelState]]:
        """A run's live labels, oldest first, `batch_size` at a time: a run of any size in flat memory."""
        params = {"account_id": account_id, "run_id": run_id}
        async for batch in self._batches(LIVE_LABELS, params, batch_size):
            yield [label_from_row(row, self.time) for row in batch]

    async def run_is_known(self, account_id: str, run_id: str) -> bool:
        return await self._one(RUN_IS_KNOWN, {"account_id": account_id, "run_id": run_id}) is not None

    async def live_label_named(self, account_id: str, run_id: str, name: str) -> str | None:
        """The id of the live label of this output resource, if there is one."""
        row = await self._one(LIVE_LABEL_NAMED, {"account_id": account_id, "run_id": run_id, "name": name})
        return None if row is None else row[0]

    # Events ---------------------------------------------------------------------------------------

    async def stream(self, account_id: str | None, label_id: str) -> list[RecordedEvent]:
        """Every event of one label, oldest first."""
        if account_id is None:
            rows = await self._all(STREAM_OF_ANY_ACCOUNT, {"stream_id": label_id})
        else:
            rows = await self._all(STREAM, {"account_id": account_id, "stream_id": label_id})
        return [event_from_row(row, self.time) for row in rows]

    async def has_events(self, sealed: Iterable[SealedEvent]) -> bool:
        """Whether these very events (same label, version and hash) are in the log: how a write whose COMMIT
        answer was lost learns whether it committed."""
        for event in sealed:
            key = {"account_id": event.account_id, "stream_id": event.stream_id, "version": event.version}
            row = await self._one(EVENT_HASH, key)
            if row is None or row[0] != event.hash:
                return False
        return True

    async def run_events_until(self, account_id: str, run_id: str, at: datetime) -> AsyncIterator[RecordedEvent]:
        """Every event of a run recorded at or before `at`, in position order."""
        params = {"account_id": account_id, "run_id": run_id, "at": at}
        async for batch in self._batches(RUN_EVENTS_UNTIL, params, 5000):
            for row in batch:
                yield event_from_row(row, self.time)

    async def count_events(self) -> int:
        row = await self._one(COUNT_EVENTS, {})
        return row[0]

    # The feed, ordered by (transaction id, position): see events.feed ------------------------------

    def _feed_sql(self, account_id: str | None, after: FeedPoint, columns: str, *, upto: bool = False) -> str:
        where = []
        if account_id is not None:
            where.append("account_id = :account_id")
        if upto:
            where.append(f"(tx_id, position) <= ({self.TX_PARAM}, :position)")
        elif after != FeedPoint.parse(START):
            where.append(f"(tx_id, position) > ({self.TX_PARAM}, :position)")
        if self.HORIZON:
            where.append(self.HORIZON)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        return f"SELECT {columns} FROM events{condition} ORDER BY tx_id, position"

    def _feed_params(self, account_id: str | None, point: FeedPoint) -> dict[str, Any]:
        return {"account_id": account_id, "tx_id": self._tx_id(point.tx_id), "position": point.position}

    def _tx_id(self, tx_id: int) -> Any:
        """A cursor's transaction id as this backend's driver takes it."""
        return tx_id

    async def feed_page(
        self, account_id: str | None, after: FeedPoint, limit: int
    ) -> list[tuple[FeedPoint, RecordedEvent]]:
        """Up to `limit` events after the cursor, in feed order, each with its own feed point."""
        sql = self._feed_sql(account_id, after, f"{_EVENT_COLUMNS}, {self.FEED_TX}") + " LIMIT :limit"
        rows = await self._all(sql, {**self._feed_params(account_id, after), "limit": limit})
        return [(FeedPoint(row[13], row[0]), event_from_row(row, self.time)) for row in rows]

    async def feed(
        self, account_id: str | None, after: FeedPoint, batch_size: int = 2000
    ) -> AsyncIterator[tuple[FeedPoint, RecordedEvent]]:
        """Every event after the cursor, in feed order, read in batches so memory stays flat."""
        sql = self._feed_sql(account_id, after, f"{_EVENT_COLUMNS}, {self.FEED_TX}")
        async for batch in self._batches(sql, self._feed_params(account_id, after), batch_size):
            for row in batch:
                yield FeedPoint(row[13], row[0]), event_from_row(row, self.time)

    async def newest_point(self, account_id: str | None) -> FeedPoint | None:
        """The last event of the feed that is final (below the commit horizon)."""
        start = FeedPoint.parse(START)
        sql = self._feed_sql(account_id, start, f"position, {self.FEED_TX}").replace(
            "ORDER BY tx_id, position", "ORDER BY tx_id DESC, position DESC LIMIT 1"
        )
        row = await self._one(sql, self._feed_params(account_id, start))
        return None if row is None else FeedPoint(row[1], row[0])

    async def point_of(self, account_id: str | None, position: int) -> FeedPoint | None:
        """The feed point of the event at this position (of this account, when one is named)."""
        sql = f"SELECT {self.FEED_TX} FROM events WHERE position = :position"
        if account_id is not None:
            sql += " AND account_id = :account_id"
        row = await self._one(sql, {"position": position, "account_id": account_id})
        return None if row is None else FeedPoint(row[0], position)

    async def feed_hashes(self, account_id: str | None, upto: FeedPoint) -> AsyncIterator[tuple[int, str]]:
        """(position, hash) of every event up to `upto`, in feed order: what a digest covers."""
        sql = self._feed_sql(account_id, upto, "position, hash", upto=True)
        async for batch in self._batches(sql, self._feed_params(account_id, upto), 5000):
            for position, event_hash in batch:
                yield position, event_hash

    # Whole-log scans for operators -----------------------------------------------------------------

    # The time as the hash has it, spelled out by the database: formatting a datetime in Python costs more
    # than the rest of an event's hash. The text is only trusted for events whose hash it matches, and then
    # it is exactly what was hashed when the event was written.
    TIME_TEXT = "recorded_at"

    def event_rows(self, batch_size: int) -> AsyncIterator[list[EventRow]]:
        """Every event as a replay checks it (EventRow), in position order, `batch_size` at a time."""
        sql = (
            "SELECT position, account_id, stream_id, version, run_id, type, data, actor, "
            f"{self.TIME_TEXT}, request_id, reason, prev_hash, hash, {self.FEED_TX}, chain"
            " FROM events ORDER BY position"
        )
        return self._batches(sql, {}, batch_size)

    async def read_model(self, batch_size: int) -> AsyncIterator[list[LabelState]]:
        """Every read-model row, `batch_size` at a time."""
        async for batch in self._batches(READ_MODEL, {}, batch_size):
            yield [label_from_row(row, self.time) for row in batch]

    # The verifiable log -----------------------------------------------------------------------------

    async def log_head(self, account_id: str) -> tuple[int, bytes] | None:
        row = await self._one(LOG_HEAD, {"account_id": account_id})
        return None if row is None else (row[0], bytes(row[1]))

    async def tiles(self, account_id: str, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The stored tiles among `keys` ((tile level, tile index) pairs); missing ones are left out."""
        keys = sorted(set(keys))
        if not keys:
            return {}
        wanted = " OR ".join(f"(level = :l{n} AND tile_index = :t{n})" for n in range(len(keys)))
        params: dict[str, Any] = {"account_id": account_id}
        for n, (level, index) in enumerate(keys):
            params[f"l{n}"], params[f"t{n}"] = level, index
        rows = await self._all(
            f"SELECT level, tile_index, hashes FROM log_tiles WHERE account_id = :account_id AND ({wanted})", params
        )
        return {(level, index): bytes(hashes) for level, index, hashes in rows}

    async def checkpoint(self, account_id: str, size: int | None = None) -> tuple[int, str] | None:
        """The latest published checkpoint, or the one of this tree size: (size, signed note)."""
        if size is None:
            row = await self._one(LATEST_CHECKPOINT, {"account_id": account_id})
        else:
            row = await self._one(CHECKPOINT_OF_SIZE, {"account_id": account_id, "size": size})
        return None if row is None else (row[0], row[1])

    async def cosignatures(self, account_id: str, size: int) -> list[str]:
        rows = await self._all(COSIGNATURES, {"account_id": account_id, "size": size})
        return [row[0] for row in rows]

    async def log_index_of(self, account_id: str, position: int) -> int | None:
        row = await self._one(LOG_INDEX_OF, {"account_id": account_id, "position": position})
        return None if row is None else row[0]

    async def log_page(self, account_id: str, start: int, limit: int) -> list[RecordedEvent]:
        """Up to `limit` integrated events of the account's log from index `start`, in log order."""
        rows = await self._all(LOG_PAGE + " LIMIT :limit", {"account_id": account_id, "start": start, "limit": limit})
        return [event_from_row(row, self.time, row[13]) for row in rows]

    async def log_events(self, account_id: str, start: int, batch_size: int = 2000) -> AsyncIterator[RecordedEvent]:
        """Every integrated event of the account's log from index `start`, in log order, in batches."""
        async for batch in self._batches(LOG_PAGE, {"account_id": account_id, "start": start}, batch_size):
            for row in batch:
                yield event_from_row(row, self.time, row[13])

    async def stream_with_index(self, account_id: str, label_id: str) -> list[RecordedEvent]:
        """Every event of one label, oldest first, each with its log index once integrated."""
        rows = await self._all(STREAM_WITH_INDEX, {"account_id": account_id, "stream_id": label_id})
        return [event_from_row(row, self.time, row[13]) for row in rows]

    async def first_index_after(self, account_id: str, after: FeedPoint) -> int:
        """The log index of the account's first integrated event after an old feed cursor, or the log's size
        when none is (old cursors keep working: the log is in feed order)."""
        sql = (
            "SELECT min(l.log_index) FROM log_leaves l JOIN events e ON e.position = l.position"
            f" WHERE l.account_id = :account_id AND (e.tx_id, e.position) > ({self.TX_PARAM}, :position)"
        )
        row = await self._one(sql, self._feed_params(account_id, after))
        if row is not None and row[0] is not None:
            return row[0]
        head = await self.log_head(account_id)
        return 0 if head is None else head[0]

    # Whole-log checks of the verifiable log, for `goldtrail verify` ------------------------------------

    def log_rows(self, batch_size: int) -> AsyncIterator[list[Row]]:
        """Every log entry with what it points to: (account, log index, the event's chain hash or None when the
        event is gone, its feed point's transaction id and position), by account and index."""
        sql = (
            f"SELECT l.account_id, l.log_index, e.hash, {self.EVENT_TX}, e.position"
            " FROM log_leaves l LEFT JOIN events e ON e.position = l.position AND e.account_id = l.account_id"
            " ORDER BY l.account_id, l.log_index"
        )
        return self._batches(sql, {}, batch_size)

    async def all_heads(self) -> dict[str, tuple[int, bytes]]:
        rows = await self._all("SELECT account_id, tree_size, root FROM log_heads", {})
        return {account_id: (size, bytes(root)) for account_id, size, root in rows}

    async def all_checkpoints(self) -> dict[str, list[tuple[int, bytes, str]]]:
        """Every published checkpoint: account -> [(tree size, root, signed note)], smallest first."""
        found: dict[str, list[tuple[int, bytes, str]]] = {}
        rows = await self._all("SELECT account_id, tree_size, root, note FROM log_checkpoints ORDER BY tree_size", {})
        for account_id, size, root, signed in rows:
            found.setdefault(account_id, []).append((size, bytes(root), signed))
        return found

    async def account_tiles(self, account_id: str) -> dict[tuple[int, int], bytes]:
        rows = await self._all(
            "SELECT level, tile_index, hashes FROM log_tiles WHERE account_id = :account_id", {"account_id": account_id}
        )
        return {(level, index): bytes(hashes) for level, index, hashes in rows}

    async def never_integrated(self, limit: int = 100) -> list[tuple[str, int]]:
        """Events the integrator has passed (at or before its progress) that no log entry holds."""
        sql = (
            "SELECT e.account_id, e.position FROM events e, log_progress p"
            " WHERE NOT EXISTS"
            " (SELECT 1 FROM log_leaves l WHERE l.account_id = e.account_id AND l.position = e.position)"
            f" AND (e.tx_id, e.position) <= ({self.PROGRESS_TX}, p.position)"
            " ORDER BY e.position LIMIT :limit"
        )
        return [(account_id, position) for account_id, position in await self._all(sql, {"limit": limit})]

    # The auditor console (DESIGN.md §3.2): a page's worth of work, however big the account -----------

    # `DAY` is a backend's spelling of an event's UTC day (a date, or its 'YYYY-MM-DD' text), `NAME_PREFIX` its
    # case-sensitive prefix match of output resource names (standard LIKE here).
    DAY: str
    NAME_PREFIX = "output_resource_name LIKE :name_pattern ESCAPE '\\'"

    @staticmethod
    def name_pattern(prefix: str) -> str:
        """The NAME_PREFIX parameter that matches names starting with `prefix`."""
        return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

    async def newest_runs(
        self, account_id: str, before: int | None, limit: int, run_prefix: str | None = None, name: str | None = None
    ) -> list[tuple[str, int]]:
        """Up to `limit` runs of the account, the most recently changed first: (run id, position of its newest
        event), those whose newest event is before `before` when given. With `run_prefix` and/or `name`, only
        runs whose id starts with it or that ever held a label whose output resource name starts with it."""
        params: dict[str, Any] = {"account_id": account_id, "before": before, "limit": limit}
        found = []
        if run_prefix is not None or name is None:
            params["run_pattern"] = f"{run_prefix or ''}%"
            found.append(f"SELECT run_id, newest FROM {RUNS_WALK} WHERE run_id LIKE :run_pattern")
        if name is not None:
            params["name_pattern"] = self.name_pattern(name)
            found.append(RUNS_NAMED.format(name_prefix=self.NAME_PREFIX))
        before_clause = "" if before is None else " WHERE newest < :before"
        sql = (
            f"SELECT run_id, newest FROM ({' UNION '.join(found)}) AS found{before_clause}"
            " ORDER BY newest DESC LIMIT :limit"
        )
        return [(run_id, newest) for run_id, newest in await self._all(sql, params)]

    async def newest_position(self, account_id: str, run_id: str) -> int | None:
        """The position of the run's newest event (None for a run the account never had)."""
        row = await self._one(NEWEST_OF_RUN, {"account_id": account_id, "run_id": run_id})
        return None if row is None else row[0]

    async def run_totals(self, account_id: str, run_ids: list[str]) -> dict[str, tuple[int, int, int]]:
        """(labels ever created, live labels, events) of each run: a label's version counts its events."""
        if not run_ids:
            return {}
        marks, params = _marks("r", run_ids)
        sql = RUN_TOTALS.format(runs=marks)
        rows = await self._all(sql, {"account_id": account_id, **params})
        return {run_id: (labels, live, events) for run_id, labels, live, events in rows}

    async def events_at(self, account_id: str, positions: list[int]) -> dict[int, RecordedEvent]:
        """The account's events at these positions, by position."""
        if not positions:
            return {}
        marks, params = _marks("p", positions)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events WHERE account_id = :account_id AND position IN ({marks})"
        rows = await self._all(sql, {"account_id": account_id, **params})
        return {row[0]: event_from_row(row, self.time) for row in rows}

    async def labels_live_at(
        self, account_id: str, run_id: str, at: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[LabelState]:
        """Up to `limit` of the run's labels that were live at `at` (created by then and not yet deleted), in
        list order, after (created_at, id) when given; as the read model holds them now."""
        params: dict[str, Any] = {"account_id": account_id, "run_id": run_id, "at": at, "limit": limit}
        where = LIVE_AT
        if after is not None:
            params["after_created_at"], params["after_id"] = after
            where += " AND (created_at, id) > (:after_created_at, :after_id)"
        rows = await self._all(f"{LABELS_OF_RUN} AND {where} ORDER BY created_at, id LIMIT :limit", params)
        return [label_from_row(row, self.time) for row in rows]

    async def count_live_at(self, account_id: str, run_id: str, at: datetime) -> int:
        """How many of the run's labels were live at `at`."""
        params = {"account_id": account_id, "run_id": run_id, "at": at}
        row = await self._one(LABELS_OF_RUN.replace(_LABEL_COLUMNS, "count(*)", 1) + f" AND {LIVE_AT}", params)
        return row[0]

    async def labels_changed_between(
        self,
        account_id: str,
        run_id: str,
        start: datetime,
        end: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[LabelState]:
        """Up to `limit` of the run's labels, in list order after (created_at, id), that may differ between
        `start` and `end`: created by `end`, and changed (or deleted) after `start`."""
        params: dict[str, Any] = {"account_id": account_id, "run_id": run_id, "start": start, "end": end}
        where = "created_at <= :end AND coalesce(deleted_at, updated_at) > :start"
        if after is not None:
            params["after_created_at"], params["after_id"] = after
            where += " AND (created_at, id) > (:after_created_at, :after_id)"
        sql = f"{LABELS_OF_RUN} AND {where} ORDER BY created_at, id LIMIT :limit"
        rows = await self._all(sql, {**params, "limit": limit})
        return [label_from_row(row, self.time) for row in rows]

    async def streams_until(self, account_id: str, label_ids: list[str], at: datetime) -> list[RecordedEvent]:
        """The events of these labels recorded at or before `at`, label by label, each in version order."""
        if not label_ids:
            return []
        marks, params = _marks("s", label_ids)
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE account_id = :account_id AND stream_id IN ({marks})"
            " AND recorded_at <= :at ORDER BY stream_id, version"
        )
        rows = await self._all(sql, {"account_id": account_id, "at": at, **params})
        return [event_from_row(row, self.time) for row in rows]

    async def stream_versions(self, account_id: str, label_id: str, first: int, last: int) -> list[RecordedEvent]:
        """The label's events of versions `first` to `last`, in version order, each with its log index."""
        params = {"account_id": account_id, "stream_id": label_id, "first": first, "last": last}
        rows = await self._all(STREAM_VERSIONS, params)
        return [event_from_row(row, self.time, row[13]) for row in rows]

    def _events_where(self, account_id: str, chosen: EventFilter) -> tuple[str, dict[str, Any]]:
        where, params = ["e.account_id = :account_id"], {"account_id": account_id}
        for name, condition in _EVENT_FILTERS.items():
            value = getattr(chosen, name)
            if value is not None:
                where.append(condition)
                params[name] = value
        return " AND ".join(where), params

    async def events_page(
        self, account_id: str, chosen: EventFilter, before: tuple[datetime, str, int] | None, limit: int
    ) -> list[tuple[RecordedEvent, str]]:
        """Up to `limit` of the account's events that the filter keeps, newest first (by time, then label and
        version), older than `before` (recorded_at, label id, version) when given; each with its log index, and
        its label's output resource name."""
        where, params = self._events_where(account_id, chosen)
        if before is not None:
            where += " AND (e.recorded_at, e.stream_id, e.version) < (:before_at, :before_stream, :before_version)"
            params["before_at"], params["before_stream"], params["before_version"] = before
        sql = (
            f"{_FILTERED_EVENTS} WHERE {where}"
            " ORDER BY e.recorded_at DESC, e.stream_id DESC, e.version DESC LIMIT :limit"
        )
        rows = await self._all(sql, {**params, "limit": limit})
        return [(event_from_row(row, self.time, row[13]), row[14]) for row in rows]

    async def filtered_events(
        self, account_id: str, chosen: EventFilter, batch_size: int = 2000
    ) -> AsyncIterator[tuple[RecordedEvent, str]]:
        """Every event of the account that the filter keeps, oldest first (the activity page's order reversed),
        in batches: an export of any size in flat memory."""
        where, params = self._events_where(account_id, chosen)
        sql = f"{_FILTERED_EVENTS} WHERE {where} ORDER BY e.recorded_at, e.stream_id, e.version"
        async for batch in self._batches(sql, params, batch_size):
            for row in batch:
                yield event_from_row(row, self.time, row[13]), row[14]

    async def changes_per_day(self, account_id: str, chosen: EventFilter) -> list[tuple[str, str, int]]:
        """(UTC day 'YYYY-MM-DD', actor, events) of the events the filter keeps (give it a time range)."""
        where, params = self._events_where(account_id, chosen)
        sql = f"SELECT {self.DAY} AS day, e.actor, count(*) FROM events e WHERE {where} GROUP BY day, e.actor"
        return [(str(day), actor, count) for day, actor, count in await self._all(sql, params)]


class Maintenance(Reads):
    """An operator's long transaction over the whole read model (rebuild)."""

    async def lock_read_model(self) -> None:
        """Make writers wait until this transaction ends; readers go on. Every write changes its label's row
        in the same transaction as its event, so with this taken before the events are read, no event can
        commit unseen between the read and the end of the transaction."""
        raise NotImplementedError

    async def replace_read_model(self, states: Iterable[LabelState]) -> int:
        """Delete every read-model row and write one per state; returns how many were written."""
        raise NotImplementedError


class LabelWrites:
    """One write transaction of a request. A backend supplies `fetchone`, `execute`, `execute_one` and `queue`.

    Feed order (DESIGN.md §2): on PostgreSQL the feed is ordered by transaction id, which a transaction
    takes at its first write or row lock. A write therefore reads the label it builds on (`current_label`)
    before it writes anything, and its row only moves on from the version read (`save_label`): then its id
    is newer than that of the write it follows, and a label's versions come in order on the feed. Waiting
    for the label's other writers (`queue`) takes no transaction id.
    """

    committing = False  # from here on, a lost connection may or may not have committed

    def __init__(self) -> None:
        self.appended: list[SealedEvent] = []

    async def fetchone(self, sql: str, params: dict[str, Any]) -> Row | None:
        """Run a statement and wait for its first row (errors of statements queued before it surface here)."""
        raise NotImplementedError

    async def execute(self, sql: str, params: dict[str, Any]) -> None:
        """Run a statement whose result is not needed; PostgreSQL sends it with the next one that waits."""
        raise NotImplementedError

    async def execute_one(self, sql: str, params: dict[str, Any]) -> None:
        """Like `execute`, for an UPDATE that must change exactly one row, or the whole transaction fails
        with LostRace (and nothing of it is committed)."""
        raise NotImplementedError

    async def queue(self, account_id: str, label_id: str) -> None:
        """Wait until the label's other queued writers are done, where this kind of transaction queues."""

    def time(self, value: Any) -> datetime:
        raise NotImplementedError

    async def queue_many(self, account_id: str, label_ids: list[str]) -> None:
        """Like `queue`, for every label of a batch at once."""

    async def live_labels_named(self, account_id: str, run_id: str, names: list[str]) -> dict[str, LabelState]:
        """The run's live labels of these output resources, by name, read before this write writes anything."""
        found: dict[str, LabelState] = {}
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            marks = ", ".join(f":n{n}" for n in range(len(chunk)))
            params = {"account_id": account_id, "run_id": run_id, **{f"n{n}": name for n, name in enumerate(chunk)}}
            sql = LIVE_LABELS.replace(" ORDER BY", f" AND output_resource_name IN ({marks}) ORDER BY")
            for row in await self.fetchall(sql, params):
                state = label_from_row(row, self.time)
                found[state.output_resource_name] = state
        return found

    async def fetchall(self, sql: str, params: dict[str, Any]) -> list[Row]:
        """Run a statement and wait for all its rows."""
        raise NotImplementedError

    async def current_label(self, account_id: str, label_id: str) -> LabelState | None:
        """One label, deleted ones included, as this write finds it (after the writers queued before it)."""
        await self.queue(account_id, label_id)
        row = await self.fetchone(LABEL, {"account_id": account_id, "id": label_id})
        return None if row is None else label_from_row(row, self.time)

    def _sealed(self, event: PendingEvent) -> tuple[dict[str, Any], SealedEvent]:
        data, digest = seal(event)
        row = {
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
            "chain": CHAIN_FORMAT,
        }
        sealed = SealedEvent(**msgspec.structs.asdict(event), hash=digest)
        self.appended.append(sealed)
        return row, sealed

    async def append(self, event: PendingEvent) -> SealedEvent:
        """Append one event (sent with the transaction's next waiting statement). A clash on (label, version)
        fails the transaction with LostRace before it can commit."""
        row, sealed = self._sealed(event)
        await self.execute(APPEND, row)
        return sealed

    async def append_many(self, events: list[PendingEvent]) -> list[SealedEvent]:
        """Append many events, each as `append` would (a backend may send them in fewer statements)."""
        return [await self.append(event) for event in events]

    async def save_labels(self, states: list[LabelState]) -> None:
        """`save_label` for many labels (a backend may send them in fewer statements)."""
        for state in states:
            await self.save_label(state)

    async def save_label(self, state: LabelState) -> None:
        """Write the state folded from one more event: insert it on version 1, else move the row on from the
        version before, or fail the whole transaction with LostRace."""
        if state.version == 1:
            await self.execute(INSERT_LABEL, label_params(state))
        else:
            await self.execute_one(MOVE_LABEL_ON, {**label_params(state), "previous": state.version - 1})

    async def claim_key(self, account_id: str, key: str, fingerprint: str, now: datetime) -> EarlierClaim | None:
        """Take an Idempotency-Key for this request: None when it was free, else what it already holds (locked
        until this transaction ends). A concurrent claim of the same key waits here for the first one."""
        params = {"account_id": account_id, "key": key}
        if await self.fetchone(CLAIM_KEY, {**params, "fingerprint": fingerprint, "created_at": now}):
            return None
        fingerprint, created_at, status, body, headers = await self.fetchone(self.for_update(EARLIER_CLAIM), params)
        return EarlierClaim(fingerprint, self.time(created_at), status, body, headers)

    async def reclaim_key(self, account_id: str, key: str, fingerprint: str, now: datetime) -> None:
        """Take over a key whose earlier claim has expired."""
        params = {"account_id": account_id, "key": key, "fingerprint": fingerprint, "created_at": now}
        await self.execute(RECLAIM_KEY, params)

    async def remember_answer(self, account_id: str, key: str, status: int, body: str, headers: str) -> None:
        params = {"account_id": account_id, "key": key, "status": status, "body": body, "headers": headers}
        await self.execute(REMEMBER_ANSWER, params)

    def for_update(self, sql: str) -> str:
        """A SELECT that also locks its rows, where the backend needs that."""
        return sql


class Integration(Reads):
    """The integrator's transaction: it appends the next committed events, in feed order, to their accounts'
    logs. One at a time (see `take_turn`); a crash rolls the whole batch back, so every event is integrated
    exactly once. A backend supplies `take_turn`, `_execute`, `_execute_many` and the feed's spelling."""

    async def take_turn(self) -> bool:
        """True when no other integrator is at work; else this one should leave it for now."""
        return True

    async def _execute(self, sql: str, params: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _execute_many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    async def progress(self) -> FeedPoint:
        tx_id, position = await self._one(PROGRESS, {})
        return FeedPoint(tx_id, position)

    async def set_progress(self, point: FeedPoint) -> None:
        await self._execute(SET_PROGRESS, {"tx_id": point.tx_id, "position": point.position})

    async def committed_after(self, after: FeedPoint, limit: int) -> list[tuple[FeedPoint, str, bytes]]:
        """The next final events of the feed: (feed point, account, chain hash)."""
        sql = self._feed_sql(None, after, f"position, {self.FEED_TX}, account_id, hash") + " LIMIT :limit"
        rows = await self._all(sql, {**self._feed_params(None, after), "limit": limit})
        return [
            (FeedPoint(tx_id, position), account_id, bytes.fromhex(digest))
            for position, tx_id, account_id, digest in rows
        ]

    async def heads(self, accounts: list[str]) -> dict[str, int]:
        """Each account's integrated tree size (0 for an account whose log is empty)."""
        sizes = dict.fromkeys(accounts, 0)
        for account_id in accounts:
            head = await self.log_head(account_id)
            if head is not None:
                sizes[account_id] = head[0]
        return sizes

    async def add_leaves(self, leaves: list[tuple[str, int, int]]) -> None:
        """(account, log index, position) of each newly integrated event."""
        await self._execute_many(
            ADD_LEAF, [{"account_id": a, "log_index": index, "position": position} for a, index, position in leaves]
        )

    async def put_tiles(self, tiles: list[tuple[str, int, int, bytes]]) -> None:
        """Insert or replace (account, tile level, tile index, hashes)."""
        rows = [{"account_id": a, "level": level, "tile_index": index, "hashes": h} for a, level, index, h in tiles]
        await self._execute_many(PUT_TILE, rows)

    async def put_heads(self, heads: list[tuple[str, int, bytes]]) -> None:
        """Insert or replace (account, tree size, root)."""
        await self._execute_many(PUT_HEAD, [{"account_id": a, "tree_size": n, "root": r} for a, n, r in heads])

    async def unpublished(self, before: datetime, limit: int) -> list[tuple[str, int, bytes]]:
        """Accounts whose tree grew since their last checkpoint, published before `before`: (account, size, root)."""
        rows = await self._all(UNPUBLISHED, {"before": before, "limit": limit})
        return [(account_id, size, bytes(root)) for account_id, size, root in rows]

    async def publish(self, account_id: str, size: int, root: bytes, note: str, signed_at: datetime) -> None:
        params = {"account_id": account_id, "tree_size": size, "root": root, "note": note, "signed_at": signed_at}
        await self._execute(ADD_CHECKPOINT, params)
        await self._execute(MARK_PUBLISHED, {"account_id": account_id, "tree_size": size, "signed_at": signed_at})

    async def add_cosignature(self, account_id: str, size: int, witness: str, signature: str, at: datetime) -> None:
        params = {"account_id": account_id, "tree_size": size, "witness": witness, "signature": signature}
        await self._execute(ADD_COSIGNATURE, {**params, "signed_at": at})
