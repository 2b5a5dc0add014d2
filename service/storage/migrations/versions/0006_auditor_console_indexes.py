"""Indexes for the auditor console's reads (DESIGN.md §3.2), so its pages cost a page's worth of work however
big the account:

- ix_events_account_time: an account's events by time (newest first, with the label and version as tie
  breakers): the activity page, its time range and its exports; with the actor, so the chart of changes per
  day by actor reads the index alone.
- ix_gold_labels_account_output: an account's labels by output resource name, deleted ones included: finding
  the runs of a name typed into the runs page's search. On PostgreSQL with text_pattern_ops, so a prefix
  search (LIKE 'name%') can use it whatever the database's collation.

The runs listing itself needs no new index: it walks ix_events_account_run one run at a time.

Building them reads the whole table and holds writes back meanwhile (as every migration does): on a large
deployment, run `goldtrail migrate` at a quiet time.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_account_time", "events", ["account_id", "recorded_at", "stream_id", "version", "actor"])
    op.create_index(
        "ix_gold_labels_account_output",
        "gold_labels",
        ["account_id", "output_resource_name"],
        postgresql_ops={"output_resource_name": "text_pattern_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_gold_labels_account_output", "gold_labels")
    op.drop_index("ix_events_account_time", "events")
