"""DMARC (RFC 7489) of one message from SPF and DKIM results already computed: the
policy record (at the From: domain, else its organisational domain from the Public
Suffix List), identifier alignment, and the result. The record syntax is a handful of
tag=value pairs, parsed here; the organisational domain comes from the shared
``registrable_domain`` rule."""

from __future__ import annotations

from dataclasses import dataclass

from aliasd.config import Settings
from aliasd.core.addresses import registrable_domain
from aliasd.mailauth.dns import DnsTemporaryError, txt

POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class DmarcRecord:
    policy: str  # p=
    subdomain_policy: str  # sp= (defaults to p=)
    adkim: str = "r"
    aspf: str = "r"


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass | fail | none | temperror | permerror
    from_domain: str | None
    policy: str | None = None  # the policy that applies to this From: domain
    reason: str = ""


def parse_record(text: str) -> DmarcRecord | None:
    """A ``v=DMARC1`` record, or None when the text is not one (or has no usable p=)."""
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, eq, value = part.partition("=")
        if eq:
            tags.setdefault(key.strip().lower(), value.strip())
    if tags.get("v") != "DMARC1" or not text.lstrip().startswith("v"):
        return None
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        # RFC 7489 6.6.3: a record with rua= but a bad p= is treated as p=none
        if "rua" not in tags:
            return None
        policy = "none"
    sub = tags.get("sp", "").lower()
    return DmarcRecord(
        policy=policy,
        subdomain_policy=sub if sub in POLICIES else policy,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
    )


def _record_at(settings: Settings, domain: str) -> DmarcRecord | None:
    records = [r for r in (parse_record(t.decode("utf-8", "replace"))
                           for t in txt(settings, f"_dmarc.{domain}")) if r]  # fmt: skip
    # More than one record: RFC 7489 6.6.3 says none applies.
    return records[0] if len(records) == 1 else None


def aligned(identifier: str | None, from_domain: str, mode: str) -> bool:
    if not identifier:
        return False
    identifier = identifier.lower().rstrip(".")
    if mode == "s":
        return identifier == from_domain
    return registrable_domain(identifier) == registrable_domain(from_domain)


def evaluate(settings: Settings, from_domain: str | None, spf_result: str,
             spf_domain: str | None, dkim_passes: list[str]) -> DmarcResult:  # fmt: skip
    """DMARC for a From: domain given SPF (result + domain checked) and the d= domains
    of the DKIM signatures that passed."""
    if not from_domain:
        return DmarcResult("none", None, reason="no single From: domain")
    org = registrable_domain(from_domain) or from_domain
    try:
        record = _record_at(settings, from_domain)
        policy_domain = from_domain
        if record is None and org != from_domain:
            record = _record_at(settings, org)
            policy_domain = org
    except DnsTemporaryError as exc:
        return DmarcResult("temperror", from_domain, reason="DNS lookup failed: " + (
            "timeout" if "Timeout" in str(exc) else "no answer"))
    if record is None:
        return DmarcResult("none", from_domain)
    policy = record.policy if policy_domain == from_domain else record.subdomain_policy
    dkim_ok = any(aligned(d, from_domain, record.adkim) for d in dkim_passes)
    spf_ok = spf_result == "pass" and aligned(spf_domain, from_domain, record.aspf)
    if dkim_ok or spf_ok:
        return DmarcResult("pass", from_domain, policy)
    return DmarcResult("fail", from_domain, policy, reason="no aligned SPF or DKIM pass")
