"""The relay that handed a message to this side, read from its Received headers: the
topmost one whose connecting address is public (the hops above it are this side's own:
a local delivery, fetchmail, a relay on a private address), and the reverse-DNS name
the receiving MTA recorded for it ("" when it found none), as SpamAssassin's relay
parser reads it for RDNS_NONE.

Only the formats whose reverse-DNS part is unambiguous are read: Postfix and sendmail
(``from HELO (RDNS [IP])``, ``(unknown [IP])`` or ``([IP])`` without a name), Exim
(``from RDNS ([IP] helo=HELO)``, ``from [IP] (helo=HELO)``) and qmail
(``from RDNS (HELO HELO) (IP)``, ``unknown`` without a name). For any other (Microsoft's
servers record no name at all) the relay is not known, and no rule judges it."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
_EXIM = re.compile(r"\bwith\s+\S*\s*\(Exim\b|\(Exim\s+\d", re.I)
_MICROSOFT = re.compile(r"Microsoft\s+SMTP", re.I)


@dataclass(frozen=True)
class Relay:
    ip: str
    rdns: str | None  # the reverse-DNS name the receiving MTA recorded; "" for none,
    # None when the format records none either way (a local pick-up)
    helo: str


def _public(ip: str) -> bool | None:
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


def client_relay(client_addr: str | None, client_name: str | None, helo: str | None,
                 received: Callable[[], Iterable[str]]) -> Relay | None:
    """The relay that handed the message over: the SMTP client itself when it connected
    from a public address and the MTA named it (Postfix's client name, "unknown" when
    the address has no verified reverse-DNS name); otherwise, as for stored mail or a
    client on a private address (a local injection, an internal relay), the Received
    headers' (``received()``, read only then). A public client the MTA did not name:
    not known."""
    if client_addr:
        public = _public(client_addr)
        if public:
            if client_name is None:
                return None
            return Relay(client_addr, "" if _no_name(client_name) else client_name, helo or "")
    return handing_relay(received())


def handing_relay(received: Iterable[str]) -> Relay | None:
    """The topmost relay with a public address among the Received headers (top first);
    None when a header on the way is not understood or none is public."""
    for i, value in enumerate(received):
        if i >= MAX_RECEIVED:
            return None
        if value.lstrip()[:5].lower() != "from ":
            continue  # "(qmail 123 invoked by uid 0)", "by host with local": no relay
        relay = parse_received(value)
        if relay is None:
            return None
        public = _public(relay.ip)
        if public is None:
            return None
        if public:
            return relay if relay.rdns is not None else None
    return None
