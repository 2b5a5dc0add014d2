"""A write's last check, in the database: its guarded row moved exactly one version on, and it runs before
the request's deadline.

The deadline matters when the database hangs: a statement already sent waits in the server's socket while
goldtrail answers 503; when the server resumes, the statement must refuse to commit, or a write answered
503 would be applied after all. The check runs after every other part of the statement or transaction, just
before it commits, and reads the server's clock at that moment (`clock_timestamp()`, not the statement's
start). The SQLSTATEs are goldtrail's own (class GT), so the caller tells the two refusals apart.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite runs in goldtrail's own process: its writes check both in Python
    op.execute(
        """
        CREATE FUNCTION goldtrail_write_check(deadline timestamptz, row_moved_on boolean) RETURNS integer
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            IF NOT row_moved_on THEN
                RAISE EXCEPTION 'goldtrail: the label moved on before this write' USING ERRCODE = 'GT001';
            END IF;
            IF deadline IS NOT NULL AND clock_timestamp() > deadline THEN
                RAISE EXCEPTION 'goldtrail: this write reached the database after its deadline'
                    USING ERRCODE = 'GT002';
            END IF;
            RETURN 1;
        END $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION goldtrail_write_check(timestamptz, boolean)")
