"""users.display_name: the name the web app shows for a user (empty: the user name)

Revision ID: 0007_user_display_name
Revises: 0006_leak_evidence
"""
import sqlalchemy as sa
from alembic import op

revision = "0007_user_display_name"
down_revision = "0006_leak_evidence"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("display_name", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("display_name")
