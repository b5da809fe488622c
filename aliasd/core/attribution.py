"""Is this sender the site? The one owner of that rule.

A site's senders are the registrable domains (Public Suffix List) that belong to it:

- its own registrable domain (``mail.github.com`` is ``github.com``);
- *affiliated* domains from the shipped data file plus the administrator's
  (``twitter.com`` ↔ ``x.com``, parent companies, rebrands);
- *name match*: the site's brand label inside the sender's registrable domain
  (``stackoverflow.email``, ``facebookmail.com``), never for mail scored as spam, where a
  look-alike name (``paypal-account-verify.com``) is the strongest leak evidence;
- stored per (owner, site) in ``site_known_senders``: *learned* (the first mail to a newly
  given address, clean, within a window after the alias was created, unless it comes
  from a large mail provider such as gmail.com that anyone writes from), *authenticated*
  (the same, with a DKIM signature verifying for the From: domain), and *user*
  (confirmed on the site or alias page, the API, or by dismissing a leak).

The From: domain is the sender's identity; the envelope domain counts as well when it
is the site's (a site's own bounce domain), but a mailing service's bounce domain
(sendgrid.net, amazonses.com) never makes mail unrelated, since the From: decides.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from aliasd.core.addresses import registrable_domain

SOURCE_SITE = "site"
SOURCE_AFFILIATION = "affiliation"
SOURCE_NAME = "name"
SOURCE_LEARNED = "learned"
SOURCE_AUTHENTICATED = "authenticated"
SOURCE_USER = "user"
SOURCES = (
    SOURCE_SITE, SOURCE_AFFILIATION, SOURCE_NAME, SOURCE_LEARNED, SOURCE_AUTHENTICATED,
    SOURCE_USER,
)  # fmt: skip
SOURCE_LABELS = {
    SOURCE_SITE: "the site's own domain",
    SOURCE_AFFILIATION: "affiliated domain (shipped or admin list)",
    SOURCE_NAME: "carries the site's name",
    SOURCE_LEARNED: "learned from the first mail",
    SOURCE_AUTHENTICATED: "learned from the first mail, DKIM-verified",
    SOURCE_USER: "confirmed by you",
}

# A brand shorter than this must equal the sender's label: "max" inside "maxbet" or
# "ing" inside "shopping" says nothing.
MIN_BRAND_IN_NAME = 4
# What may surround the brand in a mail domain's label ("facebookmail", "microsoftonline"):
# a short run of letters. Longer or digit-bearing remainders
# ("paypalaccountverify", "amazon2refund") are not the brand's mail domain.
_AFFIX = re.compile(r"^[a-z]{0,8}$")


@dataclass(frozen=True)
class Attribution:
    """The verdict on one message's sender for one site."""

    related: bool
    sender: str | None  # the registrable identity judged (From: first, else envelope)
    source: str | None  # why related: one of SOURCES, or None when unrelated / unknown
    learn: str | None = None  # a source to store for ``sender`` (it is new to the site)
    why: str = ""  # one line for people


def brand_label(registrable: str) -> str:
    """The label before the public suffix: ``stackoverflow`` for ``stackoverflow.com``,
    ``shop`` for ``shop.co.uk``."""
    return registrable.split(".", 1)[0]


def name_matches(sender: str, site: str) -> bool:
    """The site's brand inside the sender's registrable domain, as mail domains carry it:
    the same label under another suffix (``paypal.de``) or the brand joined to a short
    word (``redditmail.com``, ``microsoftonline.com``). Hyphenated joins
    (``secure-paypal.com``, ``paypal-account-verify.com``) are how look-alikes are
    named, and brands rarely mail from them: never a match."""
    s_label, brand = brand_label(sender), brand_label(site)
    if s_label == brand:
        return True
    if len(brand) < MIN_BRAND_IN_NAME or brand not in s_label or "-" in s_label.replace(brand, ""):
        return False
    return bool(_AFFIX.match(s_label.replace(brand, "", 1)))


def tenant_host(host: str, site: str) -> bool:
    """A host named after the site under someone else's domain: ``brand.zendesk.com``,
    ``brand.mail.platform.net`` for the site ``brand.com``."""
    reg = registrable_domain(host)
    if not reg or reg == host:
        return False
    return brand_label(site) in host.lower().removesuffix("." + reg).split(".")


def imitates(sender: str, site: str) -> bool:
    """The sender's registrable domain carries the site's brand somewhere (look-alikes
    like ``paypal-account-verify.com`` included)."""
    brand = brand_label(site)
    return brand_label(sender) == brand or (
        len(brand) >= MIN_BRAND_IN_NAME and brand in brand_label(sender)
    )


def _parse_groups(text: str) -> list[frozenset[str]]:
    groups = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        domains = {registrable_domain(d) for d in line.split()}
        domains.discard(None)
        if len(domains) > 1:
            groups.append(frozenset(domains))
    return groups


@functools.lru_cache(maxsize=8)
def affiliations(extra_file: str = "") -> dict[str, frozenset[str]]:
    """Registrable domain → every domain affiliated with it (itself included), from the
    shipped list and the administrator's file. An unreadable admin file is an error
    at start-up (Settings validation reads it), not a silent empty list."""
    text = resources.files("aliasd.data").joinpath("affiliations.txt").read_text("utf-8")
    groups = _parse_groups(text)
    if extra_file:
        groups += _parse_groups(Path(extra_file).read_text("utf-8"))
    out: dict[str, set[str]] = {}
    for group in groups:
        members = set(group)
        for d in group:
            members |= out.get(d, set())
        for d in members:
            out[d] = members
    return {d: frozenset(m) for d, m in out.items()}


def static_relation(
    sender: str, site: str, affiliated: dict[str, frozenset[str]], *, spam: bool
) -> str | None:
    """Why ``sender`` is ``site``'s without any per-user knowledge (both registrable),
    or None."""
    if sender == site:
        return SOURCE_SITE
    if sender in affiliated.get(site, ()):
        return SOURCE_AFFILIATION
    if not spam and name_matches(sender, site):
        return SOURCE_NAME
    return None


def sender_identities(from_domain: str | None, envelope_domain: str | None) -> list[str]:
    """Registrable sender domains of one message, the From: domain first."""
    out: list[str] = []
    for d in (from_domain, envelope_domain):
        reg = registrable_domain(d)
        if reg and reg not in out:
            out.append(reg)
    return out


def attribute(
    *,
    site: str | None,
    from_domain: str | None,
    envelope_domain: str | None,
    is_spam: bool,
    known: dict[str, str],
    affiliated: dict[str, frozenset[str]],
    learn_eligible: bool = False,
    dkim_pass_domains: tuple[str, ...] = (),
    dkim_checked: bool = False,
    shared_providers: frozenset[str] = frozenset(),
) -> Attribution:
    """Decide whether one message comes from ``site``.

    ``known`` maps the (owner, site)'s stored sender domains to their source;
    ``learn_eligible`` says the alias is newly given and has had no mail yet;
    ``dkim_checked``/``dkim_pass_domains`` are the DKIM verifier's result (d= domains
    whose signatures verified), when one ran; ``shared_providers`` are the large mailbox
    providers (registrable domains) that anyone writes from."""
    site_reg = registrable_domain(site)
    if not site_reg:
        return Attribution(True, None, None, why="the alias is not tied to a site")
    identities = sender_identities(from_domain, envelope_domain)
    if not identities:
        return Attribution(True, None, None, why="no sender domain (a bounce or no From:)")
    primary = identities[0]
    verified = {registrable_domain(d) for d in dkim_pass_domains}
    authenticated = primary in verified

    for sender in identities:
        source = static_relation(sender, site_reg, affiliated, spam=is_spam) or known.get(sender)
        if source is None:
            continue
        if dkim_checked and is_spam and sender == primary and not authenticated:
            # Spam claiming the site's own From: without a verifying signature: forged.
            return Attribution(
                False, primary, None,
                why=f"spam claiming to be {primary} without a valid DKIM signature (forged)",
            )  # fmt: skip
        # Name and affiliation matches of the From: domain are stored too, so the site's
        # senders can be listed with a date and protected from blocks.
        new = source in (SOURCE_NAME, SOURCE_AFFILIATION) and sender == primary
        learn = source if new else None
        if learn == SOURCE_NAME and authenticated:
            learn = SOURCE_AUTHENTICATED
        return Attribution(True, sender, source, learn, why=SOURCE_LABELS[source])

    if not is_spam and tenant_host(from_domain or "", site_reg):
        # brand.zendesk.com: the platform gave the site a host of its own; the platform's
        # domain is not stored, since it is shared by every other tenant.
        return Attribution(True, primary, SOURCE_NAME, None, why=SOURCE_LABELS[SOURCE_NAME])

    if learn_eligible and not is_spam:
        if primary in shared_providers:
            # Everyone writes from gmail.com: learned as the site's sender, it would turn
            # every later message from there, spam included, into the site's own mail.
            # This first message is no leak evidence either; the user may confirm it.
            return Attribution(
                True, primary, None,
                why=f"{primary} is a large mail provider anyone writes from: not learned as "
                    f"{site_reg}'s sender",
            )  # fmt: skip
        source = SOURCE_AUTHENTICATED if authenticated else SOURCE_LEARNED
        return Attribution(True, primary, source, source, why=SOURCE_LABELS[source])

    if is_spam and imitates(primary, site_reg):
        why = f"{primary} imitates the name of {site_reg} and was scored as spam (look-alike)"
    else:
        why = (
            f"{primary} is not {site_reg}, nor a sender it is known to use"
            + (" (scored as spam)" if is_spam else "")
        )
    return Attribution(False, primary, None, why=why)


def related_statically(
    from_domain: str | None, envelope_domain: str | None, site: str | None,
    affiliated: dict[str, frozenset[str]],
) -> bool:
    """Without per-user knowledge (the scanner's view): does either sender domain belong
    to ``site`` by its name, its own domain or an affiliation? Unknown counts as
    related: no evidence."""
    site_reg = registrable_domain(site)
    identities = sender_identities(from_domain, envelope_domain)
    if not site_reg or not identities:
        return True
    return any(static_relation(d, site_reg, affiliated, spam=False) for d in identities)
