"""Record the writing transaction's id on every event, so the feed can read below the commit horizon.

PostgreSQL hands out positions before commit, so a reader can see position 11 while 10 is still
in flight. Ordering the feed by (transaction id, position) and reading only transactions older than
every one still running makes the feed final: nothing can later appear before a cursor. SQLite has
one writer at a time, so there positions are already in commit order and tx_id is 0.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE events ADD COLUMN tx_id xid8 NOT NULL DEFAULT pg_current_xact_id()")
    else:
        op.execute("ALTER TABLE events ADD COLUMN tx_id INTEGER NOT NULL DEFAULT 0")
    op.create_index("ix_events_feed", "events", ["tx_id", "position"])
    op.create_index("ix_events_account_feed", "events", ["account_id", "tx_id", "position"])


def downgrade() -> None:
    op.drop_index("ix_events_account_feed", "events")
    op.drop_index("ix_events_feed", "events")
    op.drop_column("events", "tx_id")
