"""Leak evidence and known senders: site_leaks (with per-site site_leak_summaries) and
site_known_senders replace
aliases.leaked_at; every leaked alias becomes evidence rows built from its unrelated
mail events (or one "unknown sender" row when its events are gone)

Revision ID: 0006_leak_evidence
Revises: 0004_sender_blocks
"""
import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0006_leak_evidence"
down_revision = "0004_sender_blocks"
branch_labels = None
depends_on = None

UNKNOWN_SENDER = "(unknown)"


def _utc(value):
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


def upgrade() -> None:
    op.create_table(
        "site_known_senders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=253), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner_id", "site", "domain"),
    )
    leaks = op.create_table(
        "site_leaks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=253), nullable=False),
        sa.Column("sender_domain", sa.String(length=253), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("spam", sa.Integer(), nullable=False),
        sa.Column("evidence_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evidence_sender", sa.String(length=320), nullable=True),
        sa.Column("evidence_from_domain", sa.String(length=253), nullable=True),
        sa.Column("evidence_subject", sa.String(length=500), nullable=True),
        sa.Column("evidence_score", sa.Float(), nullable=False),
        sa.Column("evidence_spam", sa.Boolean(), nullable=False),
        sa.Column("evidence_why", sa.String(length=500), nullable=False),
        sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner_id", "site", "sender_domain"),
    )
    summaries = op.create_table(
        "site_leak_summaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=253), nullable=False),
        sa.Column("senders", sa.Integer(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("evidence_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner_id", "site"),
    )
    _migrate_leaked_at(leaks)
    _summarise(summaries)
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.drop_column("leaked_at")


def _migrate_leaked_at(leaks: sa.Table) -> None:
    """One evidence row per (owner, site, registrable sender) of every leaked alias's
    unrelated events. Senders the new rules recognise as the site's (its own registrable
    domain, an affiliation, its name in clean mail) are kept, marked dismissed."""
    from aliasd.core import attribution
    from aliasd.core.addresses import registrable_domain

    bind = op.get_bind()
    affiliated = attribution.affiliations()
    leaked = bind.execute(sa.text(
        "SELECT id, owner_id, site, address, leaked_at FROM aliases WHERE leaked_at IS NOT NULL"
    )).all()  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    rows: dict[tuple[int, str, str], dict] = {}
    for alias_id, owner_id, site, address, leaked_at in leaked:
        key_site = site or address
        events = bind.execute(
            sa.text(
                "SELECT at, envelope_sender, sender_domain, from_domain, subject, score, "
                "is_spam FROM mail_events WHERE alias_id = :a AND related_sender = :f "
                "ORDER BY at, id"
            ),
            {"a": alias_id, "f": False},
        ).all()
        if not events:
            key = (owner_id, key_site, UNKNOWN_SENDER)
            row = rows.setdefault(key, _row(owner_id, key_site, UNKNOWN_SENDER, _utc(leaked_at),
                                            None, None, None, 0.0, False,
                                            "marked leaked before evidence was kept; its mail "
                                            "events are gone"))
            row["confirmed_at"] = row["first_at"]  # it stays leaked, as it was
            continue
        for at, env, env_domain, from_domain, subject, score, is_spam in events:
            at = _utc(at)
            sender = registrable_domain(from_domain or env_domain) or UNKNOWN_SENDER
            key = (owner_id, key_site, sender)
            row = rows.get(key)
            if row is None:
                recognised = site is not None and attribution.related_statically(
                    from_domain, env_domain, site, affiliated
                ) and not is_spam
                why = (
                    f"{sender} was not recognised as a sender of {key_site} "
                    "(recorded before evidence was kept)"
                )
                row = rows[key] = _row(owner_id, key_site, sender, at, env, from_domain,
                                       subject, score or 0.0, bool(is_spam), why)
                if recognised:
                    row["dismissed_at"] = now
                    row["evidence_why"] = (
                        f"{sender} is now recognised as a sender of {key_site}"
                    )
            row["total"] += 1
            row["spam"] += int(bool(is_spam))
            row["last_at"] = max(row["last_at"], at)
            if is_spam and not row["evidence_spam"]:
                row.update(evidence_at=at, evidence_sender=env, evidence_from_domain=from_domain,
                           evidence_subject=subject, evidence_score=score or 0.0,
                           evidence_spam=True)
    if rows:
        op.bulk_insert(leaks, list(rows.values()))


def _summarise(summaries: sa.Table) -> None:
    """Per site: undismissed senders, the first date, and the evidence a status quotes
    (confirmed first, then a mostly-spam sender, then the earliest)."""
    rows = op.get_bind().execute(sa.text(
        "SELECT id, owner_id, site, spam, total, first_at, confirmed_at FROM site_leaks "
        "WHERE dismissed_at IS NULL"
    )).all()  # fmt: skip
    by_site: dict[tuple[int, str], list] = {}
    for r in rows:
        by_site.setdefault((r.owner_id, r.site), []).append(r)

    def rank(r):
        spam_sender = r.spam > 0 and r.spam * 2 >= r.total
        return (r.confirmed_at is None, not spam_sender, _utc(r.first_at), r.id)

    out = [
        {"owner_id": o, "site": site, "senders": len(rs),
         "since": min(_utc(r.first_at) for r in rs), "evidence_id": min(rs, key=rank).id}
        for (o, site), rs in by_site.items()
    ]  # fmt: skip
    if out:
        op.bulk_insert(summaries, out)


def _row(owner_id, site, sender, at, env, from_domain, subject, score, spam, why) -> dict:
    return {
        "owner_id": owner_id, "site": site, "sender_domain": sender, "first_at": at,
        "last_at": at, "total": 0, "spam": 0, "evidence_at": at, "evidence_sender": env,
        "evidence_from_domain": from_domain, "evidence_subject": subject,
        "evidence_score": score, "evidence_spam": spam, "evidence_why": why[:500],
        "dismissed_at": None, "confirmed_at": None,
    }  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("aliases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("leaked_at", sa.DateTime(timezone=True), nullable=True))
    # Each site's earliest undismissed evidence becomes its aliases' leaked_at again.
    op.execute(
        "UPDATE aliases SET leaked_at = (SELECT MIN(l.first_at) FROM site_leaks l "
        "WHERE l.owner_id = aliases.owner_id AND l.site = COALESCE(aliases.site, "
        "aliases.address) AND l.dismissed_at IS NULL)"
    )
    op.drop_table("site_leak_summaries")
    op.drop_table("site_leaks")
    op.drop_table("site_known_senders")
