"""The events table: the only source of truth, append-only by database triggers (see migrations)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

metadata = sa.MetaData()


class UTCDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes on every backend (SQLite has no time zone type and returns naive values)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def stored_time(value: datetime | str | None) -> datetime | None:
    """A timestamp as a driver returns it: aware already (psycopg), or the UTC text SQLite stores."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


class XID8(sa.types.UserDefinedType):
    """PostgreSQL's 64-bit transaction id; sent and read as text, exposed as int."""

    cache_ok = True

    def get_col_spec(self, **_kw) -> str:
        return "XID8"

    def bind_expression(self, bindvalue):
        return sa.cast(bindvalue, sa.Text).op("::")(sa.literal_column("xid8"))

    def bind_processor(self, dialect):
        return lambda value: None if value is None else str(value)

    def result_processor(self, dialect, coltype):
        return lambda value: None if value is None else int(value)


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
    sa.Column("recorded_at", UTCDateTime, nullable=False),
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
