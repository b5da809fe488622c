"""Held messages counted through an index on their state

The milter counts the messages waiting in the hold queue (the quarantine cap) for every
message it holds; released and deleted rows pile up, and without this index the count
read them all.

Revision ID: 0012_quarantine_state_index
Revises: 0011_alias_held_count
"""
from alembic import op

revision = "0012_quarantine_state_index"
down_revision = "0011_alias_held_count"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_quarantined_state", "quarantined_messages", ["state"])


def downgrade() -> None:
    op.drop_index("ix_quarantined_state", table_name="quarantined_messages")
