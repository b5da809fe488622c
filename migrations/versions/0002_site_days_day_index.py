"""site_days covering index on day for the spam report's period filter across all users

Revision ID: 0002_site_days_day
Revises: 0001_initial
"""
from alembic import op

revision = "0002_site_days_day"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("site_days", schema=None) as batch_op:
        batch_op.create_index(
            "ix_site_days_day",
            ["day", "owner_id", "site", "spam", "total", "unrelated"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("site_days", schema=None) as batch_op:
        batch_op.drop_index("ix_site_days_day")
