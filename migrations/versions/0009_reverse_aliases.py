"""reverse_aliases: one address per (alias, outside correspondent) through which the
owner replies as the alias; reply mode per domain and per alias; reply display name

Revision ID: 0009_reverse_aliases
Revises: 0008_mail_auth
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_reverse_aliases"
down_revision = "0008_mail_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reverse_aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("alias_id", sa.Integer(), nullable=False),
        sa.Column("correspondent", sa.String(length=320), nullable=False),
        sa.Column("correspondent_name", sa.String(length=200), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("forwarded_count", sa.Integer(), nullable=False),
        sa.Column("sent_count", sa.Integer(), nullable=False),
        sa.Column("refused_count", sa.Integer(), nullable=False),
        sa.Column("last_refused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_refused_sender", sa.String(length=320), nullable=True),
        sa.ForeignKeyConstraint(["alias_id"], ["aliases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address"),
    )
    with op.batch_alter_table("reverse_aliases", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reverse_aliases_alias_correspondent", ["alias_id", "correspondent"], unique=False
        )
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reply_mode", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("reply_name", sa.String(length=100), nullable=True))
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reply_mode", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.drop_column("reply_mode")
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.drop_column("reply_name")
        batch_op.drop_column("reply_mode")
    with op.batch_alter_table("reverse_aliases", schema=None) as batch_op:
        batch_op.drop_index("ix_reverse_aliases_alias_correspondent")
    op.drop_table("reverse_aliases")
