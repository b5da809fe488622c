"""mail_events.auth: SPF/DKIM/DMARC/ARC results of the incoming message in one line

Revision ID: 0008_mail_auth
Revises: 0007_user_display_name
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_mail_auth"
down_revision = "0007_user_display_name"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("mail_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auth", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mail_events", schema=None) as batch_op:
        batch_op.drop_column("auth")
