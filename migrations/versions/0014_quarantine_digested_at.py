"""Held messages remember the digest that listed them

The daily digest listed what was held in the 24 hours before it ran; the timer starts it
at a random time within an hour (and at boot after a missed day), so messages held
between two runs less or more than 24 hours apart were listed twice or never. Now each
digest lists the waiting messages no digest listed yet. Messages held before the upgrade
count as listed, except those of the last 24 hours (what the old digest would list next).

Revision ID: 0014_quarantine_digested_at
Revises: 0013_users_directory_check
"""
import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0014_quarantine_digested_at"
down_revision = "0013_users_directory_check"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("quarantined_messages",
                  sa.Column("digested_at", sa.DateTime(timezone=True), nullable=True))
    now = dt.datetime.now(dt.UTC)
    table = sa.table("quarantined_messages", sa.column("held_at", sa.DateTime(timezone=True)),
                     sa.column("digested_at", sa.DateTime(timezone=True)))
    op.execute(table.update().where(table.c.held_at < now - dt.timedelta(hours=24))
               .values(digested_at=now))


def downgrade() -> None:
    with op.batch_alter_table("quarantined_messages") as batch:
        batch.drop_column("digested_at")
