"""users.directory_checked_at, users.directory_missing_since: directory (LDAP) users
are re-checked against the directory every few minutes, and one whose entry is gone
loses their sessions and API tokens

Revision ID: 0013_users_directory_check
Revises: 0012_quarantine_state_index
"""
import sqlalchemy as sa
from alembic import op

revision = "0013_users_directory_check"
down_revision = "0012_quarantine_state_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("directory_checked_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("directory_missing_since", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("directory_missing_since")
        batch_op.drop_column("directory_checked_at")
