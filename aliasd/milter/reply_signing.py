"""DKIM and SPF for the reverse-alias steps: verifying that the owner's mail is the
owner's (SPF of the envelope sender, DKIM of the message, through aliasd's one DNS
resolver) and signing what aliasd sends as an alias (the per-domain keys of
:mod:`aliasd.mailauth.keys`)."""

from __future__ import annotations

import dkim

from aliasd.config import Settings
from aliasd.mailauth.dns import DkimDns, spf_lookup
from aliasd.scanner.spf import check_spf


class TemporaryFailure(Exception):
    """DNS did not answer: the sender's authentication is unknown for now."""


def verify_sender(settings: Settings, client_addr: str | None, sender: str, helo: str | None,
                  message: bytes) -> tuple[bool, set[str]]:
    """(SPF passed for the envelope sender, the d= domains of DKIM signatures that verify)."""
    symbol = check_spf(client_addr, sender, helo, lookup=spf_lookup(settings),
                       timeout=settings.dns_timeout)
    spf_ok = symbol is not None and symbol.name == "R_SPF_ALLOW"
    domains: set[str] = set()
    dnsfunc = DkimDns(settings)
    verifier = dkim.DKIM(message)
    count = sum(1 for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                if line.lower().startswith(b"dkim-signature:"))
    for index in range(count):
        try:
            if verifier.verify(idx=index, dnsfunc=dnsfunc):
                domains.add(verifier.domain.decode("ascii", "replace").lower())
        except dkim.DKIMException:
            continue
    if not spf_ok and not domains and dnsfunc.temporary_failure:
        raise TemporaryFailure(dnsfunc.temporary_failure)
    if symbol is not None and symbol.name == "R_SPF_DNSFAIL" and not domains:
        raise TemporaryFailure("SPF: DNS failure")
    return spf_ok, domains


def sign(settings: Settings, domain: str, message: bytes, headers: list[str]
         ) -> tuple[str, str] | None:
    """The DKIM-Signature header (name, value) for ``message`` with ``domain``'s key, or
    None when the domain has no key."""
    from aliasd.mailauth.keys import dkim_sign

    line = dkim_sign(settings, domain, message, [h.encode() for h in headers])
    if not line:
        return None
    text = line.decode("ascii")
    name, _, value = text.partition(":")
    # One line for the milter: relaxed header canonicalisation ignores the folding.
    return name.strip(), " ".join(value.split())
