"""Aliases count the messages held for review apart from forwarded and rejected ones

Revision ID: 0011_alias_held_count
Revises: 0010_quarantine
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_alias_held_count"
down_revision = "0010_quarantine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("held_count", sa.Integer(), nullable=False,
                                      server_default="0"))
    # Messages held before this revision were counted as rejected: move them over.
    op.execute(
        "UPDATE aliases SET held_count = (SELECT count(*) FROM quarantined_messages q "
        "WHERE q.alias_id = aliases.id AND q.state = 'held'), "
        "rejected_count = rejected_count - (SELECT count(*) FROM quarantined_messages q "
        "WHERE q.alias_id = aliases.id AND q.state = 'held')"
    )


def downgrade() -> None:
    op.execute("UPDATE aliases SET rejected_count = rejected_count + held_count")
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.drop_column("held_count")
