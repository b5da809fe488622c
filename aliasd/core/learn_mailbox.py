"""Learning from the mailbox: an owner forwards a missed spam as an attachment
(message/rfc822), or bounces (redirects) it, to ``spam@<domain>`` (or a wrongly
caught message to ``ham@<domain>``) and the filter learns it.

Who may: the mail must come from a user's own mailbox address (envelope sender, and
as author: From:, or Resent-From: of a bounced message) for a domain they own or have
aliases in, and be authenticated by the rule replies from an alias follow
(``aliasd.core.reply_auth.owner_proof``, whose DKIM proof is the author's domain).
Anyone else is refused.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from aliasd.core.addresses import AddressError, normalize_address
from aliasd.core.reply_headers import first_address
from aliasd.models import Alias, Domain, User

LEARN_LOCALS = {"spam": True, "ham": False}
MAX_ATTACHMENTS = 50


@dataclass(frozen=True)
class LearnAddress:
    is_spam: bool
    domain: str


def learn_address(address: str) -> LearnAddress | None:
    """``spam@domain`` / ``ham@domain`` (any case, no extension), else None."""
    local, _, domain = address.strip().lower().rpartition("@")
    if local in LEARN_LOCALS and domain:
        return LearnAddress(LEARN_LOCALS[local], domain)
    return None


def author_of(from_value: str | None, resent_from: str | None) -> str | None:
    """Who wrote to spam@/ham@: the newest Resent-From: of a bounced (redirected)
    message, whose From: is still the spammer's; else From:. Its domain is the one
    whose DKIM signature proves the mail (a spammer's own signature proves nothing)."""
    found = first_address(resent_from) if resent_from else first_address(from_value)
    return found[1] if found else None


def owner_for(session: Session, sender: str, author: str | None, domain: str) -> User | None:
    """The user whose mailbox sent this, as envelope sender and as author
    (:func:`author_of`), and who has a stake in ``domain``."""
    try:
        mailbox = normalize_address(sender)
        if normalize_address(author or "") != mailbox:
            return None
    except AddressError:
        return None
    for user in session.scalars(select(User).where(User.mailbox == mailbox)):
        dom = session.scalar(select(Domain).where(Domain.name == domain))
        if dom is None:
            return None
        if user.is_admin or dom.owner_id == user.id or session.scalar(
                select(Alias.id).where(Alias.owner_id == user.id, Alias.domain_id == dom.id)
                .limit(1)):
            return user
    return None


@dataclass
class Extracted:
    messages: list[bytes] = field(default_factory=list)
    problem: str | None = None


def extract(raw: bytes) -> Extracted:
    """The messages to learn: every message/rfc822 attachment, or, for a bounced
    (redirected, ``Resent-From``) message, the message itself."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:
        return Extracted(problem="the message could not be read")
    found: list[bytes] = []
    broken = 0
    for part in msg.walk():
        if part.get_content_type() != "message/rfc822":
            continue
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if part.get("Content-Transfer-Encoding", "").strip().lower() in ("base64",
                                                                         "quoted-printable"):
            # Not allowed for message/rfc822 (RFC 2046), but some clients send it.
            import base64
            import quopri

            text = inner.as_bytes().split(b"\n\n", 1)[-1] if inner is not None else b""
            try:
                decoded = (base64.b64decode(text) if "base64" in part["Content-Transfer-Encoding"]
                           .lower() else quopri.decodestring(text))
                inner = email.message_from_bytes(decoded, policy=email.policy.compat32)
            except Exception:
                inner = None
        body = inner.get_payload() if inner is not None else None
        if inner is None or not inner.keys() or not body or (isinstance(body, str)
                                                              and not body.strip()):
            broken += 1
            continue
        data = inner.as_bytes()
        found.append(data)
        if len(found) >= MAX_ATTACHMENTS:
            break
    if found:
        return Extracted(messages=found)
    if broken:
        return Extracted(problem="the attached message is empty or broken; "
                                 "attach the original message (message/rfc822)")
    if msg.get("Resent-From") or msg.get("Resent-Sender"):
        return Extracted(messages=[raw])
    return Extracted(problem="no message attached: forward the message as an attachment "
                             "(message/rfc822) or bounce (redirect) it")
