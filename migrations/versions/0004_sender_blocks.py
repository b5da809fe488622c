"""sender_blocks: senders refused for one user's aliases or one alias (enforced by the
milter only, never written to Postfix's tables)

Revision ID: 0004_sender_blocks
Revises: 0003_session_epoch
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_sender_blocks"
down_revision = "0003_session_epoch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sender_blocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("alias_id", sa.Integer(), nullable=True),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_hit_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["alias_id"], ["aliases.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sender_blocks", schema=None) as batch_op:
        batch_op.create_index("ix_sender_blocks_owner", ["owner_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sender_blocks", schema=None) as batch_op:
        batch_op.drop_index("ix_sender_blocks_owner")
    op.drop_table("sender_blocks")
