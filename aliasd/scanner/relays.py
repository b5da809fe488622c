"""The relays a message passed before it reached this side, newest first, read from its
Received headers: from the topmost one whose connecting address is public (the hops above
it are this side's own: a local delivery, a relay on a private address; a mail fetcher's
hand-over is no hop at all, as for SpamAssassin) down,
each with the reverse-DNS name the receiving MTA recorded for it ("" when it found none),
as SpamAssassin's relay parser reads them: the first is the relay that handed the message
over (RDNS_NONE), and the chain is SpamAssassin's ``X-Spam-Relays-External`` pseudo-header
that its header rules read (dynamic-looking names, HELO forms).

Only the formats whose reverse-DNS part is unambiguous are read: Postfix and sendmail
(``from HELO (RDNS [IP])``, ``(unknown [IP])`` or ``([IP])`` without a name), Exim
(``from RDNS ([IP] helo=HELO)``, ``from [IP] (helo=HELO)``) and qmail
(``from RDNS (HELO HELO) (IP)``, ``unknown`` without a name). For any other (Microsoft's
servers record no name at all) the relay is not known, and no rule judges it."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

MAX_RECEIVED = 20  # Received headers read from the top
MAX_RECEIVED_TEXT = 2000  # characters of one read
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_IP = r"(?:" + _IPV4 + r"|(?:IPv6:)?[0-9a-fA-F:]{2,39}(?::" + _IPV4 + r")?)"
# from HELO (RDNS [IP]) / (ident@RDNS [IP]) / ([IP]): Postfix and sendmail
_BRACKETED = re.compile(r"^from\s+(\S{1,255})\s+\((?:[^()\[\]@\s]{1,64}@)?([^\s()\[\]]{0,255})\s*\[(" + _IP + r")\]",
                        re.I)
# Exim: from RDNS ([IP] helo=HELO) / from RDNS ([IP]:port) / from [IP] (port=N helo=HELO)
_EXIM_NAMED = re.compile(r"^from\s+([^\s\[\]()]{1,255})\s+\(\[(" + _IP + r")\][^()]{0,300}\)", re.I)
_EXIM_BARE = re.compile(r"^from\s+\[(" + _IP + r")\](?::\d{1,5})?\s+\([^()]{0,300}\)", re.I)
_EXIM_HELO = re.compile(r"\bhelo=([^\s()]{1,255})", re.I)
# qmail: from RDNS (HELO HELO) (IP) / from RDNS (IP) / from unknown (HELO x) (IP)
_QMAIL = re.compile(r"^from\s+(\S{1,255})\s+(?:\(HELO\s+(\S{1,255})\)\s+)?\((?:[^()@\s]{1,64}@)?(" + _IPV4 + r")\)",
                    re.I)
# fetchmail and other local pick-ups: from NAME [IP] (no reverse-DNS name recorded)
_PICKUP = re.compile(r"^from\s+(\S{1,255})\s+\[(" + _IP + r")\]\s", re.I)
# a mail fetcher's hand-over (fetchmail, getmail: "by localhost with IMAP"): not a relay
# the message passed, and SpamAssassin's Received.pm skips it the same way
_MAIL_FETCHER = re.compile(r"with (?:POP3|IMAP)")
_EXIM = re.compile(r"\bwith\s+\S*\s*\(Exim\b|\(Exim\s+\d", re.I)
_MICROSOFT = re.compile(r"Microsoft\s+SMTP", re.I)
# SpamAssassin's Received.pm: an authenticated hop says so in its protocol, or Postfix
# names the authenticated sender
_AUTH_PROTOCOL = re.compile(r"\bwith\s+(ESMTPA|ESMTPSA|LMTPA|LMTPSA|ASMTP|HTTPA)\b", re.I)
_AUTH_HINT = re.compile(r"tpa|tpsa|asmtp")  # in each of _AUTH_PROTOCOL's names, lower-cased
_POSTFIX_AUTH = re.compile(r"\(Authenticated sender:\s*[^()\s]{1,300}\)\s+by\s+\S+\s+\(Postfix\)", re.I)


class Relay(NamedTuple):  # a tuple: made for each Received header, cheaper than a dataclass
    ip: str
    rdns: str | None  # the reverse-DNS name the receiving MTA recorded; "" for none,
    # None when the format records none either way (a local pick-up)
    helo: str
    auth: str = ""  # how the relay authenticated to the receiving MTA ("" when it did not)


@functools.lru_cache(maxsize=4096)
def public_address(ip: str) -> bool | None:
    """Whether an address is public (globally routable); None when it is no address."""
    try:
        addr = ipaddress.ip_address(ip.removeprefix("IPv6:"))
    except ValueError:
        return None
    return addr.is_global


def _no_name(name: str) -> bool:
    return not name or name.lower() == "unknown" or name.startswith("[")


def parse_received(value: str) -> Relay | None:
    """The connecting relay of one Received header (unfolded), or None when its format
    is not one read here or it names no address."""
    text = " ".join(value[:MAX_RECEIVED_TEXT].split())
    low = text.lower()
    relay = _connecting(text, low)
    if relay is None or "with" not in low:
        return relay
    # the patterns only where their words are (most hops are not authenticated)
    m = _AUTH_PROTOCOL.search(text) if _AUTH_HINT.search(low) else None
    if m is None and ("authenticated" not in low or _POSTFIX_AUTH.search(text) is None):
        return relay
    return Relay(relay.ip, relay.rdns, relay.helo, m.group(1) if m else "Postfix")


def _connecting(text: str, low: str) -> Relay | None:
    if not low.startswith("from ") or ("microsoft" in low and _MICROSOFT.search(text)):
        return None
    if "exim" in low and _EXIM.search(text):
        m = _EXIM_BARE.match(text) or _EXIM_NAMED.match(text)
        if m is None:
            return None
        helo = _EXIM_HELO.search(m.group(0))
        if m.re is _EXIM_BARE:
            return Relay(m.group(1), "", helo.group(1) if helo else "")
        return Relay(m.group(2), m.group(1), helo.group(1) if helo else m.group(1))
    m = _BRACKETED.match(text)
    if m:
        helo, rdns, ip = m.groups()
        return Relay(ip, "" if _no_name(rdns) else rdns, helo)
    m = _QMAIL.match(text)
    if m:
        rdns, helo, ip = m.groups()
        return Relay(ip, "" if _no_name(rdns) else rdns, helo or rdns)
    m = _PICKUP.match(text)
    if m:
        return Relay(m.group(2), None, m.group(1))
    return None


Hop = tuple[Relay | None, bool | None]  # a Received "from" header: its relay, and whether public


def iter_hops(received: Iterable[object]) -> Iterator[Hop]:
    """The first MAX_RECEIVED Received headers (top first) that name a connecting relay
    ("from ..."), each read when it is reached: its relay (None: a format not read here)
    and whether its address is public (None: not an address). Lines without one
    ("(qmail 123 invoked by uid 0)", "by host with local") and a mail fetcher's
    hand-overs are left out."""
    for i, value in enumerate(received):
        if i >= MAX_RECEIVED:
            break
        text = value if isinstance(value, str) else str(value)  # 8-bit ones come as Header objects
        if text.lstrip()[:5].lower() != "from " or _MAIL_FETCHER.search(text[:MAX_RECEIVED_TEXT]):
            continue
        relay = parse_received(text)
        yield relay, public_address(relay.ip) if relay is not None else None


def read_hops(received: Iterable[object]) -> list[Hop]:
    """All of iter_hops, read once (for the whole chain and its counts)."""
    return list(iter_hops(received))


def _chain_start(client_addr: str | None, client_name: str | None, helo: str | None,
                 hops: Callable[[], Iterable[Hop]]) -> tuple[Relay | None, Iterable[Hop]]:
    """The relay that handed the message over (None: not known) and the hops below it,
    read no further than needed to find it."""
    if client_addr and public_address(client_addr):
        if client_name is None:
            return None, ()
        return Relay(client_addr, "" if _no_name(client_name) else client_name, helo or ""), hops()
    found = iter(hops())
    for relay, public in found:
        if relay is None or public is None:
            return None, ()
        if public:
            return (relay, found) if relay.rdns is not None else (None, ())
    return None, ()


def external_relays(client_addr: str | None, client_name: str | None, helo: str | None,
                    hops: Callable[[], Iterable[Hop]]) -> list[Relay]:
    """The relays outside this side, newest first; the first handed the message over.

    The SMTP client itself comes first when it connected from a public address and the
    MTA named it (Postfix's client name, "unknown" when the address has no verified
    reverse-DNS name), followed by the hops its message's Received headers record
    (``hops()``, see iter_hops). Otherwise, as for stored mail or a client on a private
    address (a local injection, an internal relay), the chain starts at the topmost
    Received header with a public address. Empty when the first relay is not known: a
    public client the MTA did not name, a header on the way in a format not read here.
    Later hops in such a format are left out, as SpamAssassin leaves out the Received
    headers it cannot parse."""
    first, below = _chain_start(client_addr, client_name, helo, hops)
    return [first, *_older(below)] if first is not None else []


def first_external_relay(client_addr: str | None, client_name: str | None, helo: str | None,
                         hops: Callable[[], Iterable[Hop]]) -> Relay | None:
    """external_relays' first relay, without reading the Received headers below it."""
    return _chain_start(client_addr, client_name, helo, hops)[0]


def _older(hops: Iterable[Hop]) -> list[Relay]:
    """The hops recorded below the first external relay, those parsed here."""
    return [relay for relay, public in hops
            if relay is not None and relay.rdns is not None and public is not None]


def spamassassin_relays(relays: list[Relay]) -> str:
    """The chain as SpamAssassin's ``X-Spam-Relays-External`` pseudo-header writes it,
    the form its header rules match (``rdns=`` empty in the first bracket: the relay
    that handed the message over has no name). Fields aliasd does not know (by, ident, envfrom, id) are empty."""
    return " ".join(
        f"[ ip={r.ip.removeprefix('IPv6:')} rdns={r.rdns or ''} helo={r.helo} by= ident= envfrom= "
        f"intl=0 id= auth={r.auth} msa=0 ]"
        for r in relays)


def relay_counts(client_addr: str | None, hops: Callable[[], list[Hop]]) -> tuple[int, int, int]:
    """(trusted, untrusted, unparseable) relays as SpamAssassin counts them without
    trusted_networks set: hops on private addresses above the first public one are this
    side's own (trusted); from that one down, untrusted. A public SMTP client is the
    first untrusted relay itself."""
    trusted = untrusted = unparseable = 0
    outside = bool(client_addr) and bool(public_address(client_addr or ""))
    untrusted += outside
    for _, public in hops():
        if public is None:
            unparseable += 1
        elif outside or public:
            outside = True
            untrusted += 1
        else:
            trusted += 1
    return trusted, untrusted, unparseable
