"""Quarantine (held messages), recent message samples for learning, per-user
quarantine score and per-user Bayes counts

Revision ID: 0010_quarantine
Revises: 0009_reverse_aliases
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_quarantine"
down_revision = "0009_reverse_aliases"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quarantine_score", sa.Float(), nullable=True))
    op.create_table(
        "message_samples",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("alias_id", sa.Integer(), sa.ForeignKey("aliases.id", ondelete="SET NULL"),
                  nullable=True),
        sa.Column("alias_address", sa.String(320), nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=True),
        sa.Column("envelope_sender", sa.String(320), nullable=False),
        sa.Column("from_header", sa.String(500), nullable=True),
        sa.Column("subject", sa.String(500), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("symbols", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("learned_as", sa.String(8), nullable=True),
    )
    op.create_index("ix_message_samples_alias_at", "message_samples", ["alias_id", "at"])
    op.create_index("ix_message_samples_at", "message_samples", ["at"])
    op.create_index("ix_message_samples_owner_id", "message_samples", ["owner_id"])
    op.create_table(
        "quarantined_messages",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("queue_id", sa.String(64), nullable=False),
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("alias_id", sa.Integer(), sa.ForeignKey("aliases.id", ondelete="SET NULL"),
                  nullable=True),
        sa.Column("alias_address", sa.String(320), nullable=False),
        sa.Column("envelope_sender", sa.String(320), nullable=False),
        sa.Column("from_header", sa.String(500), nullable=True),
        sa.Column("subject", sa.String(500), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("symbols", sa.Text(), nullable=False),
        sa.Column("preview", sa.Text(), nullable=False),
        sa.Column("sample_id", _ID, sa.ForeignKey("message_samples.id", ondelete="SET NULL"),
                  nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested", sa.String(16), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(255), nullable=True),
    )
    op.create_index("ix_quarantined_owner_state", "quarantined_messages", ["owner_id", "state"])
    op.create_index("ix_quarantined_messages_held_at", "quarantined_messages", ["held_at"])
    op.create_table(
        "user_bayes_tokens",
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("token", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("spam", sa.Integer(), nullable=False),
        sa.Column("ham", sa.Integer(), nullable=False),
    )
    op.create_table(
        "user_bayes_learned",
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("is_spam", sa.Boolean(), nullable=False),
        sa.Column("learned_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("user_bayes_learned")
    op.drop_table("user_bayes_tokens")
    op.drop_table("quarantined_messages")
    op.drop_table("message_samples")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("quarantine_score")
