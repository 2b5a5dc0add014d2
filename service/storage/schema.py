"""The tables, as SQLAlchemy Core declares them: what the migrations build (tests hold the two together).

- `events`: the only source of truth, append-only by database triggers (migration 0001).
- `gold_labels`: the read model, one row per label (deleted ones kept as tombstones, so ids are never
  reused and a run stays known), written only by folding events.
- `idempotency_keys`: one row per (account, key), holding the first answer to replay on a retry.
- `log_*`: each account's verifiable log (migration 0005): leaves, tiles of the Merkle tree, heads,
  signed checkpoints and witnesses' cosignatures, and the integrator's progress through the feed.

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
    # How the chain hash covers the payload: 1, its bytes; 2, its SHA-256 (see migration 0005).
    sa.Column("chain", sa.SmallInteger, nullable=False, server_default="1"),
    # The arbiter of optimistic concurrency: one event per (stream, version).
    sa.UniqueConstraint("account_id", "stream_id", "version", name="uq_events_stream_version"),
    sa.Index("ix_events_account_position", "account_id", "position"),
    sa.Index("ix_events_account_run", "account_id", "run_id", "position"),
    sa.Index("ix_events_feed", "tx_id", "position"),
    sa.Index("ix_events_account_feed", "account_id", "tx_id", "position"),
    # The console's activity page and exports: an account's events by time (migration 0006).
    sa.Index("ix_events_account_time", "account_id", "recorded_at", "stream_id", "version", "actor"),
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
    # The console's search by output resource name, deleted labels included (migration 0006).
    sa.Index(
        "ix_gold_labels_account_output",
        "account_id",
        "output_resource_name",
        postgresql_ops={"output_resource_name": "text_pattern_ops"},
    ),
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

log_leaves = sa.Table(
    "log_leaves",
    metadata,
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("log_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Index("uq_log_leaves_position", "account_id", "position", unique=True),
)

log_tiles = sa.Table(
    "log_tiles",
    metadata,
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("tile_index", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hashes", sa.LargeBinary, nullable=False),
)

log_heads = sa.Table(
    "log_heads",
    metadata,
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("tree_size", sa.BigInteger, nullable=False),
    sa.Column("root", sa.LargeBinary, nullable=False),
    sa.Column("checkpoint_size", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("checkpoint_at", UTC_TIME, nullable=True),
    sa.Index(
        "ix_log_heads_unpublished",
        "checkpoint_at",
        postgresql_where=sa.text("tree_size > checkpoint_size"),
        sqlite_where=sa.text("tree_size > checkpoint_size"),
    ),
)

log_checkpoints = sa.Table(
    "log_checkpoints",
    metadata,
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root", sa.LargeBinary, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("signed_at", UTC_TIME, nullable=False),
)

log_cosignatures = sa.Table(
    "log_cosignatures",
    metadata,
    sa.Column("account_id", sa.String(255), primary_key=True),
    sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("witness", sa.String(300), primary_key=True),
    sa.Column("signature", sa.Text, nullable=False),
    sa.Column("signed_at", UTC_TIME, nullable=False),
)

log_progress = sa.Table(
    "log_progress",
    metadata,
    sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
    sa.Column("tx_id", sa.BigInteger, nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.CheckConstraint("id = 1", name="ck_log_progress_one_row"),
)
