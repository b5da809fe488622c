"""DKIM and SPF for the reverse-alias steps: verifying that the owner's mail is the
owner's (SPF of the envelope sender, DKIM of the message, through aliasd's one DNS
resolver) and signing what aliasd sends as an alias (the per-domain keys of
:mod:`aliasd.mailauth.keys`)."""

from __future__ import annotations

from aliasd.config import Settings
from aliasd.mailauth.verify import authenticate


class TemporaryFailure(Exception):
    """DNS did not answer: the sender's authentication is unknown for now."""


def verify_sender(settings: Settings, client_addr: str | None, sender: str, helo: str | None,
                  message: bytes, from_header: bytes | None = None) -> tuple[bool, set[str]]:
    """(SPF passed for the envelope sender, the d= domains of DKIM signatures that
    verify), from the same checks the milter runs on all incoming mail."""
    results = authenticate(settings, message=message, sender=sender, client_addr=client_addr,
                           helo=helo, from_header=from_header)
    spf_ok = results.spf == "pass"
    domains = {d.domain.lower() for d in results.dkim if d.result == "pass" and d.domain}
    temporary = results.spf == "temperror" or any(d.result == "temperror" for d in results.dkim)
    if not spf_ok and not domains and temporary:
        raise TemporaryFailure("SPF or DKIM lookups did not answer")
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
