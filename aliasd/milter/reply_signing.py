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
         ) -> list[tuple[str, str]]:
    """The DKIM-Signature headers (name, value), one per key of ``domain``, for
    ``message``; [] when the domain has no key."""
    from aliasd.mailauth.keys import dkim_sign

    lines = dkim_sign(settings, domain, message, headers)
    if not lines:
        return []
    out: list[tuple[str, str]] = []
    for line in lines.decode("ascii").replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and out:
            name, value = out[-1]
            out[-1] = (name, value + " " + line.strip())  # relaxed canonicalisation unfolds
        elif line.strip():
            name, _, value = line.partition(":")
            out.append((name.strip(), value.strip()))
    return out
