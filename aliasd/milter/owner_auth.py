"""The facts that prove mail comes from a user's own mail server, gathered from the
envelope and, only when nothing cheaper holds, from SPF and DKIM through aliasd's
resolver. The rule itself is ``aliasd.core.reply_auth.owner_proof``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from aliasd.config import Settings
from aliasd.core.addresses import domain_of
from aliasd.core.reply_auth import SenderFacts, owner_proof
from aliasd.core.reply_headers import first_address
from aliasd.milter import reply_signing

if TYPE_CHECKING:
    from aliasd.milter.processing import Envelope

TemporaryFailure = reply_signing.TemporaryFailure


def envelope_facts(envelope: Envelope) -> SenderFacts:
    """What the envelope and From: say, without any DNS."""
    raw_from = envelope.first_header("From")
    author = first_address(raw_from.decode("utf-8", "replace")) if raw_from else None
    return SenderFacts(
        envelope_sender=envelope.sender,
        from_address=author[1] if author else None,
        client_addr=envelope.client_addr,
        auth_authen=envelope.auth_authen,
    )


def with_dns_checks(settings: Settings, envelope: Envelope, facts: SenderFacts) -> SenderFacts:
    """``facts`` plus SPF of the envelope sender and the domains of verifying DKIM
    signatures; raises TemporaryFailure when DNS could not answer."""
    spf_ok, dkim_domains = reply_signing.verify_sender(
        settings, envelope.client_addr, envelope.sender, envelope.helo,
        envelope.raw_message(), envelope.first_header("From"))
    return SenderFacts(
        envelope_sender=facts.envelope_sender, from_address=facts.from_address,
        client_addr=facts.client_addr, auth_authen=facts.auth_authen,
        spf_pass_domain=domain_of(envelope.sender) if spf_ok else None,
        dkim_pass_domains=frozenset(dkim_domains),
    )


def proof(settings: Settings, envelope: Envelope, author: str | None = None) -> str | None:
    """How the message is proven to come from its sender's own mail server, or None;
    raises TemporaryFailure when only DNS could tell and it did not answer. ``author``:
    whose domain's DKIM signature counts, when not From:'s (a redirected message's
    Resent-From:)."""
    facts = envelope_facts(envelope)
    if author is not None:
        facts = dataclasses.replace(facts, from_address=author)
    found = owner_proof(facts, settings.reply_trusted_networks)
    if found is None:
        found = owner_proof(with_dns_checks(settings, envelope, facts),
                            settings.reply_trusted_networks)
    return found
