"""The daily quarantine digest: one plain-text mail per owner listing what was held
in the last day and is still waiting, with a link to the review page."""

from __future__ import annotations

import datetime as dt
import email.utils
from email.message import EmailMessage

from sqlalchemy import select
from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.models import HoldState, QuarantinedMessage, User, utcnow


def digests(session: Session, settings: Settings, *, hours: float = 24.0,
            now: dt.datetime | None = None) -> list[EmailMessage]:
    now = now or utcnow()
    since = now - dt.timedelta(hours=hours)
    rows = session.scalars(select(QuarantinedMessage).where(
        QuarantinedMessage.state == HoldState.HELD.value,
        QuarantinedMessage.held_at >= since).order_by(QuarantinedMessage.owner_id,
                                                      QuarantinedMessage.held_at))
    by_owner: dict[int, list[QuarantinedMessage]] = {}
    for row in rows:
        by_owner.setdefault(row.owner_id, []).append(row)
    mails = []
    for owner_id, held in by_owner.items():
        user = session.get(User, owner_id)
        if user is None or not user.mailbox:
            continue
        lines = [f"{len(held)} message(s) to your aliases were held for review in the "
                 f"last {hours:g} hours and are waiting:", ""]
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
        mails.append(msg)
    return mails

