"""Mail to ``spam@<domain>`` / ``ham@<domain>`` of a managed domain: learned from the
owner's authenticated mailbox, refused (550, so the owner gets a clear bounce) for
anyone else or without a usable attachment, deferred (451) when the database or the
filter is down. A learned message is discarded: it was addressed to the filter."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from aliasd.core import learn_mailbox
from aliasd.milter import owner_auth
from aliasd.models import Domain
from aliasd.scanner.user_bayes import learner_for

if TYPE_CHECKING:
    from aliasd.milter.processing import Envelope, MailPath, Verdict

log = logging.getLogger(__name__)

DISCARD = "discard"


def _verdict(status: str, reply: tuple[str, str, str] | None = None) -> Verdict:
    from aliasd.milter.processing import Verdict

    return Verdict(status=status, reply=reply, scanned=False)


def _refuse(text: str) -> Verdict:
    return _verdict("reject", ("550", "5.7.1", text))


def handle(path: MailPath, envelope: Envelope) -> Verdict | None:
    """A verdict for learning mail, or None when the message is not addressed to
    spam@/ham@ of a managed domain (the ordinary mail path goes on)."""
    wanted = [learn_mailbox.learn_address(r) for r in envelope.recipients]
    if not any(wanted):
        return None
    author = learn_mailbox.author_of(*(
        value.decode("utf-8", "replace") if value is not None else None
        for value in (envelope.first_header("From"), envelope.first_header("Resent-From"))))
    try:
        with path.database.session() as session:
            domains = {w.domain for w in wanted if w}
            managed = set(session.scalars(select(Domain.name).where(Domain.name.in_(domains))))
            if not managed:
                return None  # spam@ of someone else's domain: ordinary (outgoing) mail
            if not all(wanted) or len({w.is_spam for w in wanted}) != 1:
                return _refuse("Send mail for the spam filter to spam@ or ham@ alone")
            owner_id = None
            for domain in domains:
                owner = learn_mailbox.owner_for(session, envelope.sender, author, domain)
                if owner is None:
                    return _refuse(f"Only the owner of {domain} may write to spam@ and ham@, "
                                   "from the mailbox aliasd forwards to")
                owner_id = owner.id
    except Exception as exc:
        log.warning("learning mail: database unavailable: %s", exc)
        return _verdict("tempfail", ("451", "4.3.0", "Database unavailable; try again later"))
    try:  # the same proof as for replies from an alias
        proven = owner_auth.proof(path.settings, envelope, author)
    except owner_auth.TemporaryFailure as exc:
        log.warning("learning mail: sender authentication deferred: %s", exc)
        return _verdict("tempfail", ("451", "4.7.0", "Cannot check the sender's "
                                     "authentication now, try again later"))
    if proven is None:
        return _refuse("Only the owner's authenticated mailbox may write to spam@ and ham@ "
                       "(SMTP AUTH on this server, reply_trusted_networks, SPF or DKIM)")
    if envelope.truncated:
        return _verdict("reject", ("552", "5.3.4", "Message too big to learn; "
                                   f"the limit is {path.settings.max_scan_size} bytes"))
    extracted = learn_mailbox.extract(envelope.raw_message())
    if extracted.problem:
        return _verdict("reject", ("550", "5.6.0", f"Nothing learned: {extracted.problem}"))
    is_spam = wanted[0].is_spam
    try:
        scanner = path.scanner()
        many = getattr(scanner, "learn_many", None)
        if path.settings.bayes_per_user:  # the owner's own counts
            teach = learner_for(path.settings, path.database, owner_id, scanner.learn)
            outcomes = [teach(m, is_spam) for m in extracted.messages]
        else:
            outcomes = (many(extracted.messages, is_spam) if many
                        else [scanner.learn(m, is_spam) for m in extracted.messages])
    except Exception as exc:
        log.warning("learning mail: the filter failed: %s", exc)
        return _verdict("tempfail", ("451", "4.3.0", "The spam filter could not learn now; "
                                     "try again later"))
    log.info("learned %d message(s) as %s from %s (%s; queue id %s): %s", len(outcomes),
             "spam" if is_spam else "ham", envelope.sender, proven, envelope.queue_id,
             ", ".join(str(o) for o in outcomes))
    return _verdict(DISCARD)
