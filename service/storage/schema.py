"""The tables, as SQLAlchemy Core declares them: what the migrations build (tests hold the two together).

- `events`: the only source of truth, append-only by database triggers (migration 0001).
- `gold_labels`: the read model, one row per label (deleted ones kept as tombstones, so ids are never
  reused and a run stays known), written only by folding events.
- `idempotency_keys`: one row per (account, key), holding the first answer to replay on a retry.

Times are DateTime(timezone=True): timestamptz on PostgreSQL, the fixed-width UTC text on SQLite.
Every table's key starts with account_id, so they can be distributed by account.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
UTC_TIME = sa.DateTime(timezone=True)


class XID8(sa.types.UserDefinedType):
    """PostgreSQL's 64-bit transaction id."""

    cache_ok = True

    def get_col_spec(self, **_kw) -> str:
        return "XID8"


# SQLite only auto-assigns an INTEGER PRIMARY KEY, so the 64-bit position is INTEGER there.
Position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# The writing transaction (PostgreSQL); always 0 on SQLite, whose single writer commits in position order.
TransactionId = sa.Integer().with_variant(XID8(), "postgresql")

events = sa.Table(
    "events",
    metadata,
    sa.Column("position", Position, sa.Identity(), primary_key=True),
    sa.Column("account_id", sa.String(255), nullable=False),
    sa.Column("stream_id", sa.String(36), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("actor", sa.String(255), nullable=False),
    sa.Column("recorded_at", UTC_TIME, nullable=False),
    sa.Column("request_id", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    # Filled by the database's default (see migration 0002); never written by goldtrail.
    sa.Column("tx_id", TransactionId, nullable=False),
    # The arbiter of optimistic concurrency: one event per (stream, version).
    sa.UniqueConstraint("account_id", "stream_id", "version", name="uq_events_stream_version"),
    sa.Index("ix_events_account_position", "account_id", "position"),
    sa.Index("ix_events_account_run", "account_id", "run_id", "position"),
    sa.Index("ix_events_feed", "tx_id", "position"),
    sa.Index("ix_events_account_feed", "account_id", "tx_id", "position"),
)

gold_labels = sa.Table(
    "gold_labels",
    metadata,
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("output_resource_name", sa.Text, nullable=False),
    sa.Column("text_value", sa.Text, nullable=True),
    # The exact JSON text of the object value; a JSON column type would reorder keys or round numbers.
    sa.Column("object_value", sa.Text, nullable=True),
    sa.Column("object_value_is_partial", sa.Boolean, nullable=True),
    sa.Column("created_by", sa.String(255), nullable=False),
    sa.Column("created_at", UTC_TIME, nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False),
    sa.Column("updated_at", UTC_TIME, nullable=False),
    sa.Column("deleted_by", sa.String(255), nullable=True),
    sa.Column("deleted_at", UTC_TIME, nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_gold_labels_run_order", "account_id", "run_id", "created_at", "id"),
    # One live label per output resource of a run; deleted labels free the name.
    sa.Index(
        "uq_gold_labels_live_output",
        "account_id",
        "run_id",
        "output_resource_name",
        unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"),
        postgresql_where=sa.text("deleted_at IS NULL"),
    ),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("created_at", UTC_TIME, nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("body", sa.Text, nullable=True),
    sa.Column("headers", sa.Text, nullable=True),
)
