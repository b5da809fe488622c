"""users.session_epoch: web sessions made before a bump (sign out everywhere, password
change) are no longer honoured

Revision ID: 0003_session_epoch
Revises: 0002_site_days_day
"""
import sqlalchemy as sa
from alembic import op

revision = "0003_session_epoch"
down_revision = "0002_site_days_day"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_epoch", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("session_epoch")
