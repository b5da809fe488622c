"""The daily quarantine digest: one plain-text mail per owner listing what was held
since their last digest and is still waiting, with a link to the review page."""

from __future__ import annotations

import datetime as dt
import email.utils
from dataclasses import dataclass
from email.message import EmailMessage

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.models import HoldState, QuarantinedMessage, User, utcnow


@dataclass(frozen=True)
class Digest:
    message: EmailMessage
    held_ids: tuple[int, ...]  # the held messages it lists


def digests(session: Session, settings: Settings, *, hours: float | None = None,
            now: dt.datetime | None = None) -> list[Digest]:
    """One digest per owner of the messages still held that no digest listed yet (the
    daily run does not start exactly 24 hours after the one before); ``hours``: only
    those held within that many hours."""
    now = now or utcnow()
    query = select(QuarantinedMessage).where(
        QuarantinedMessage.state == HoldState.HELD.value,
        QuarantinedMessage.digested_at.is_(None), QuarantinedMessage.held_at <= now)
    if hours is not None:
        query = query.where(QuarantinedMessage.held_at >= now - dt.timedelta(hours=hours))
    rows = session.scalars(query.order_by(QuarantinedMessage.owner_id,
                                          QuarantinedMessage.held_at))
    by_owner: dict[int, list[QuarantinedMessage]] = {}
    for row in rows:
        by_owner.setdefault(row.owner_id, []).append(row)
    mails = []
    for owner_id, held in by_owner.items():
        user = session.get(User, owner_id)
        if user is None or not user.mailbox:
            continue
        lines = [f"{len(held)} message(s) to your aliases were held for review since your "
                 "last digest and are waiting:", ""]
        for row in held:
            lines.append(f"- {row.held_at:%Y-%m-%d %H:%M} UTC  {row.alias_address}")
            lines.append(f"  from {row.envelope_sender or '<>'}: {row.subject or '(no subject)'}"
                         f"  (score {row.score:.1f})")
        lines.append("")
        if settings.web_base_url:
            lines.append(f"Review them: {settings.web_base_url.rstrip('/')}/quarantine/")
        lines.append(f"Held messages are deleted after {settings.quarantine_keep_days} days.")
        msg = EmailMessage()
        # From this mail server: the owner's provider's domain would be an impersonation
        # its DMARC policy refuses (this host's sendmail neither signs for it nor is
        # in its SPF).
        msg["From"] = f"aliasd <postmaster@{settings.mail_host}>"
        msg["To"] = user.mailbox
        msg["Subject"] = f"aliasd: {len(held)} message(s) held for review"
        msg["Date"] = email.utils.format_datetime(now)
        msg["Message-ID"] = email.utils.make_msgid(domain="aliasd.invalid")
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
        msg.set_content("\n".join(lines))
        mails.append(Digest(msg, tuple(row.id for row in held)))
    return mails


def mark_sent(session: Session, digest: Digest, *, now: dt.datetime | None = None) -> None:
    """The digest was handed over: the next one does not list its messages again."""
    session.execute(update(QuarantinedMessage)
                    .where(QuarantinedMessage.id.in_(digest.held_ids))
                    .values(digested_at=now or utcnow()))

