"""Who may send through a reverse alias: the alias's owner, from their own mailbox, and
proven so. One function decides; the milter gathers the facts."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from aliasd.core.reverse_aliases import ReverseTarget


@dataclass(frozen=True)
class SenderFacts:
    """What the mail path knows about who is sending."""

    envelope_sender: str  # "" for the null sender
    from_address: str | None  # the From: header's address
    client_addr: str | None = None
    auth_authen: str | None = None  # the SMTP AUTH login Postfix saw ({auth_authen})
    spf_pass_domain: str | None = None  # the envelope sender's domain when SPF passed
    dkim_pass_domains: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class SendDecision:
    allowed: bool
    how: str  # why it is allowed (for the log), or why not (the 5xx text)


def in_networks(client_addr: str | None, networks: list[str]) -> bool:
    if not client_addr or not networks:
        return False
    try:
        addr = ipaddress.ip_address(client_addr.strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return False
    for net in networks:
        network = ipaddress.ip_network(net, strict=False)
        if addr.version == network.version and addr in network:
            return True
    return False


def owner_proof(facts: SenderFacts, trusted_networks: list[str]) -> str | None:
    """How the mail is proven to come from the owner's mail server (for the log), or
    None: SMTP AUTH on this Postfix, a trusted client network, SPF of the envelope
    sender's domain, or DKIM of the From: domain. Replies through reverse aliases and
    mail to spam@/ham@ are judged by this one rule."""
    sender = (facts.envelope_sender or "").lower()
    author = (facts.from_address or "").lower()
    if facts.auth_authen:
        return f"SMTP AUTH as {facts.auth_authen}"
    if in_networks(facts.client_addr, trusted_networks):
        return f"client {facts.client_addr} in reply_trusted_networks"
    sender_domain = sender.rpartition("@")[2]
    if facts.spf_pass_domain and facts.spf_pass_domain.lower() == sender_domain:
        return f"SPF pass for {sender_domain}"
    author_domain = author.rpartition("@")[2]
    if author_domain and author_domain in {d.lower() for d in facts.dkim_pass_domains}:
        return f"DKIM pass for {author_domain}"
    return None


def may_send(target: ReverseTarget, facts: SenderFacts, trusted_networks: list[str]
             ) -> SendDecision:
    """Allowed when the envelope sender and From: are the owner's (their mailbox or the
    alias's destinations) and one proof holds: SMTP AUTH on this Postfix, a trusted
    client network, SPF of the envelope sender's domain, or DKIM of the From: domain."""
    if not target.live:
        why = "disabled" if not target.enabled else target.alias_state
        return SendDecision(False, f"this address is {why}")
    owner = {a.lower() for a in target.owner_addresses()}
    sender = (facts.envelope_sender or "").lower()
    author = (facts.from_address or "").lower()
    if sender not in owner or author not in owner:
        return SendDecision(False, "only the alias's owner may write to this address")
    proof = owner_proof(facts, trusted_networks)
    if proof is not None:
        return SendDecision(True, proof)
    return SendDecision(False, "the owner's mail must be authenticated (SMTP AUTH, SPF or DKIM)")
