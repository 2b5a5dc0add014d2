"""The verifiable log: each account's events as an append-only Merkle tree with signed checkpoints.

- events.chain: how an event's chain hash covers its payload. 1 (every event before this migration):
  the payload bytes; 2 (every event after): the payload's SHA-256, so a payload can one day be erased
  without breaking a chain, a tree or a proof.
- log_leaves: an account's dense log index (0, 1, 2, ...) of each event, assigned after commit in feed order.
- log_tiles: the tree's complete nodes, 256 at a time (levels 0, 8, 16, ... of the tree): proofs read a few
  tiles at any size. The rightmost tile of a level grows as the log does.
- log_heads: each account's integrated tree size and root, and its last published checkpoint.
- log_checkpoints, log_cosignatures: every published checkpoint (a C2SP signed note), and witnesses'
  cosignatures of them.
- log_progress: how far the integrator has read the global feed (one row).

Leaves, checkpoints and cosignatures are append-only, like events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)
APPEND_ONLY = ("log_leaves", "log_checkpoints", "log_cosignatures")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("events", sa.Column("chain", sa.SmallInteger, nullable=False, server_default="1"))

    op.create_table(
        "log_leaves",
        sa.Column("account_id", sa.String(255), primary_key=True),
        sa.Column("log_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("position", sa.BigInteger, nullable=False),
    )
    op.create_index("uq_log_leaves_position", "log_leaves", ["account_id", "position"], unique=True)
    op.create_table(
        "log_tiles",
        sa.Column("account_id", sa.String(255), primary_key=True),
        sa.Column("level", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("tile_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hashes", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "log_heads",
        sa.Column("account_id", sa.String(255), primary_key=True),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("checkpoint_size", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("checkpoint_at", UTC_TIME, nullable=True),
    )
    op.create_index(
        "ix_log_heads_unpublished",
        "log_heads",
        ["checkpoint_at"],
        postgresql_where=sa.text("tree_size > checkpoint_size"),
        sqlite_where=sa.text("tree_size > checkpoint_size"),
    )
    op.create_table(
        "log_checkpoints",
        sa.Column("account_id", sa.String(255), primary_key=True),
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("signed_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "log_cosignatures",
        sa.Column("account_id", sa.String(255), primary_key=True),
        sa.Column("tree_size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("witness", sa.String(300), primary_key=True),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("signed_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "log_progress",
        sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("tx_id", sa.BigInteger, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_log_progress_one_row"),
    )
    op.execute("INSERT INTO log_progress (id, tx_id, position) VALUES (1, 0, 0)")

    if postgres:
        op.execute(
            """
            CREATE FUNCTION goldtrail_refuse_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'goldtrail % is append-only: % refused', TG_TABLE_NAME, TG_OP
                    USING ERRCODE = 'restrict_violation';
            END $$
            """
        )
    for table in APPEND_ONLY:
        if postgres:
            op.execute(
                f"CREATE TRIGGER {table}_refuse_update_delete BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION goldtrail_refuse_log_change()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_refuse_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION goldtrail_refuse_log_change()"
            )
        else:
            for operation in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_refuse_{operation.lower()} BEFORE {operation} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'goldtrail {table} is append-only: {operation} refused'); END"
                )


def downgrade() -> None:
    raise NotImplementedError("the verifiable log is part of the audit trail: it is never dropped")
