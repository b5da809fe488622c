"""SpamAssassin's header ``eval:`` tests that aliasd computes itself: its FreeMail plugin's
(``check_freemail_from``, ``check_freemail_header``, ``check_freemail_replyto``, with the
``freemail_domains`` its rule files list), HeaderEval's ``check_equal_from_domains`` and
``check_outlook_message_id``, and RelayEval's ``check_all_trusted`` and
``check_no_relays``. Semantics follow the Perl sources (``Mail/SpamAssassin/Plugin/*.pm``);
SpamAssassin's defaults for the plugins' settings. Each reads headers already decoded once
(rulefile.HeaderView), the relay chain (aliasd/scanner/relays.py) and a bounded prefix of
the body."""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aliasd.core.addresses import header_addresses
from aliasd.scanner.relays import public_address

if TYPE_CHECKING:
    from aliasd.scanner.message import ParsedMessage
    from aliasd.scanner.relays import Relay

BODY_EMAIL_SCAN = 50_000  # characters of text searched for addresses (as the body rules)
# FreeMail.pm's defaults: with more distinct addresses (freemail addresses) in the body
# than this, the body is not compared at all
MAX_BODY_EMAILS = 5
MAX_BODY_FREEMAILS = 3
_EMAIL = re.compile(r"(?<![\w.%+-])([a-z0-9](?:[a-z0-9._%+-]{0,62}[a-z0-9_%+-])?@"
                    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,8}[a-z]{2,24})\b", re.I)
# FreeMail.pm: addresses inside URLs, in <angle brackets> (not mailto:) or followed by a
# "wrote:"-like word are quotes of someone, not an address the sender asks to be written to
_URL_WITH_AT = re.compile(r"<?https?://\S{0,255}(?:@|%40)\S{0,255}", re.I)
_QUOTED_EMAIL = re.compile(
    r"<?(?<!mailto:)" + _EMAIL.pattern.replace("(?<![\\w.%+-])", "")
    + r"(?:>|\s{1,10}(?!(?:fa(?:x|csi)|tel|phone|e?-?mail))[a-z]{2,11}:)", re.I)
# FreeMail.pm's $skip_replyto_envfrom: bulk and list senders, skipped by the Reply-To test
_BULK_ENVFROM = re.compile(
    r"(?:^(?:post|host|domain)master|^double-bounce|^(?:sentto|owner|return|(?:gr)?bounced?)-.+"
    r"|-(?:request|bounces?|admin|owner)|\b(?:do[._-t]?)?no[._-t]?repl(?:y|ies)|.+=.+)@", re.I)
_OUTLOOK_ID = re.compile(r"^<[0-9a-f]{4}([0-9a-f]{8})\$[0-9a-f]{8}\$[0-9a-f]{8}@")
_RECEIVED_DATE = re.compile(r"(\s.?\d+ \S\S\S \d+ \d+:\d+:\d+ \S+)[^\n]*$")
_DOMAIN_CHARS = re.compile(r"^[a-z0-9.*?-]+$")
# Where an address or a link with one can be, around its "@" (or "%40"): a link holds up
# to 255 characters and its scheme before it (what a look-behind reads, 7 more); an
# address up to 64 before, a domain of at most 8 labels of 63 and a 24-letter ending
# after, then up to 23 of a "wrote:"-like word
_AT = re.compile(r"@|%40")
AT_BEFORE = 300
AT_AFTER = 600
# a mailto: link's address (FreeMail's body addresses and the rules' link list read it)
MAILTO_HREF = re.compile(r"""href\s{0,20}=\s{0,20}["']?\s{0,20}mailto:([^"'<>\s?]{1,200})""", re.I)
HTML_MAILTO_SCAN = 200_000


class Headers(Protocol):
    def value(self, spec: str) -> str | None: ...


@dataclass
class FreemailDomains:
    """``freemail_domains`` as the rule files list them: names, and wildcards (``*``
    any characters but a dot, ``?`` one character)."""

    names: set[str] = field(default_factory=set)
    wildcards: list[str] = field(default_factory=list)
    _pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> list[str]:
        """Adds the domains of one directive; returns the entries not taken."""
        bad = []
        for item in value.split():
            low = item.lower()
            if not _DOMAIN_CHARS.match(low):
                bad.append(item)
            elif "*" in low or "?" in low:
                self.wildcards.append(low)
                self._pattern = None
            else:
                self.names.add(low)
        return bad

    def __contains__(self, address: str) -> bool:
        domain = address.rpartition("@")[2]
        if domain in self.names:
            return True
        if not self.wildcards:
            return False
        if self._pattern is None:
            alts = "|".join(re.escape(w).replace(r"\?", ".").replace(r"\*", "[^.]*") for w in self.wildcards)
            self._pattern = re.compile(r"@(?:" + alts + r")$")
        return self._pattern.search(address) is not None

    def __bool__(self) -> bool:
        return bool(self.names or self.wildcards)


@dataclass
class HeaderFacts:
    """What the header tests read of one message."""

    headers: Headers
    pm: ParsedMessage
    freemail: FreemailDomains
    relays: Callable[[], tuple[int, int, int]]  # (trusted, untrusted, unparseable) relays
    chain: Callable[[], list[Relay]] = list  # the relays outside this side, newest first
    _body_emails: list[str] | None = None
    _hotmail: str | None = None  # _hotmail_received's answer, asked by two tests
    _recipients: list[str] | None = None  # _recipients', asked by two tests

    def addr(self, spec: str) -> str:
        return (self.headers.value(spec) or "").strip().lower()

    def from_addrs(self) -> list[str]:
        """SpamAssassin's all_from_addrs: Resent-From when there is one, else From and
        the envelope-sender headers."""
        resent = self.headers.value("resent-from")
        if resent and resent.strip():
            return [a.lower() for _, a in header_addresses(resent) if a]
        found = [self.addr(s) for s in ("from:addr", "envelope-sender:addr", "resent-sender:addr",
                                        "x-envelope-from:addr")]
        found.append((self.headers.value("EnvelopeFrom") or "").strip("<> ").lower())
        return [re.sub(r"\.+", ".", a) for a in found if a]

    def body_freemails(self) -> list[str] | None:
        """The body's freemail addresses, or None when the body holds too many addresses
        to compare (FreeMail.pm's limits)."""
        if self._body_emails is None:
            self._body_emails = _body_emails(self.pm)
        count_all = count_fm = 0
        out = []
        for address in self._body_emails:
            count_all += 1
            if count_all == MAX_BODY_EMAILS:
                return None
            if address not in self.freemail:
                continue
            count_fm += 1
            if count_fm == MAX_BODY_FREEMAILS:
                return None
            out.append(address)
        return out


def _body_emails(pm: ParsedMessage) -> list[str]:
    seen: dict[str, None] = {}
    # mailto: links first, as FreeMail.pm takes them from the parsed links
    for m in MAILTO_HREF.finditer(pm.html_raw[:HTML_MAILTO_SCAN]):
        found = _EMAIL.search(m.group(1))
        if found:
            seen.setdefault(found.group(1).lower(), None)
        if len(seen) >= 20:
            break
    text = pm.text[:BODY_EMAIL_SCAN]
    if "@" not in text:
        return list(seen)
    for chunk in _address_stretches(text):
        chunk = _QUOTED_EMAIL.sub(" ", _URL_WITH_AT.sub(" ", chunk))
        for m in _EMAIL.finditer(chunk):
            seen.setdefault(m.group(1).lower(), None)
            if len(seen) >= 40:
                return list(seen)
    return list(seen)


def _address_stretches(text: str) -> list[str]:
    """The stretches of ``text`` around its "@" (and a link's "%40"), merged where they
    overlap. Every match of the three patterns holds one and lies within AT_BEFORE
    before it and AT_AFTER after it, look-behinds included, so reading the stretches
    finds what reading the whole text finds, without trying the patterns at each of a
    long body's positions."""
    spans: list[list[int]] = []
    for m in _AT.finditer(text):
        start, end = max(0, m.start() - AT_BEFORE), m.end() + AT_AFTER
        if spans and start <= spans[-1][1]:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [text[start:end] for start, end in spans]


def _check_freemail_from(f: HeaderFacts, pattern: re.Pattern[str] | None = None) -> bool:
    return any(a in f.freemail and (pattern is None or pattern.search(a))
               for a in dict.fromkeys(f.from_addrs()))


def _check_freemail_header(f: HeaderFacts, header: str, pattern: re.Pattern[str] | None = None) -> bool:
    spec = "EnvelopeFrom" if header == "EnvelopeFrom" else header.lower() + ":addr"
    address = (f.headers.value(spec) or "").strip("<> ").lower()
    return bool(address) and address in f.freemail and (pattern is None or pattern.search(address) is not None)


def _check_freemail_replyto(f: HeaderFacts, what: str) -> bool:
    envfrom = (f.headers.value("EnvelopeFrom") or "").strip("<> ")
    if envfrom and _BULK_ENVFROM.search(envfrom):
        return False
    sender = f.addr("from:addr")
    replyto = f.addr("reply-to:addr")
    from_fm = bool(sender) and sender in f.freemail
    replyto_fm = bool(replyto) and replyto in f.freemail
    if from_fm and replyto_fm and sender != replyto:
        return True
    if what == "replyto":
        if not replyto_fm:
            return False
    elif replyto and not replyto_fm or not from_fm:
        return False
    body = f.body_freemails()
    if not body:
        return False
    reply = replyto if (what == "replyto" or replyto_fm) else sender
    return any(b != reply for b in body)


def _second_level(address: str) -> str:
    m = re.search(r"@([^@]*)\Z", address)
    domain = m.group(1) if m else ""
    return re.sub(r"^.+\.([^.]+\.[^.]+)$", r"\1", domain).lower()


def _check_equal_from_domains(f: HeaderFacts) -> bool:
    """HEADER_FROM_DIFFERENT_DOMAINS: From's and the envelope sender's last two labels
    differ."""
    from_domain = _second_level(f.addr("from:addr"))
    env_domain = _second_level((f.headers.value("EnvelopeFrom") or "").strip("<> "))
    return bool(from_domain) and bool(env_domain) and from_domain != env_domain


def _epoch(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return 0.0


def _check_outlook_message_id(f: HeaderFacts) -> bool:
    """MSGID_OUTLOOK_INVALID: an Outlook Express form of Message-ID whose time token
    matches neither the Date nor the first Received header's time."""
    m = _OUTLOOK_ID.match(f.headers.value("MESSAGEID") or "")
    if not m:
        return False
    token = int(m.group(1), 16)

    def off(epoch: float) -> bool:
        return abs(token - int(epoch * 0.0023283064365387 + 27111902.8329849)) >= 250

    if not off(_epoch(f.headers.value("date"))):
        return False
    received = (f.headers.value("received") or "").split("\n")[0]
    date = _RECEIVED_DATE.search(received)
    return off(_epoch(date.group(1) if date else None))


def _check_all_trusted(f: HeaderFacts) -> bool:
    trusted, untrusted, unparseable = f.relays()
    return bool(trusted) and not untrusted and not unparseable


def _check_no_relays(f: HeaderFacts) -> bool:
    return f.relays() == (0, 0, 0)


_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
# RelayEval's big dot-coms, which do not HELO from hosts without reverse DNS
_DOTCOM_HELO = re.compile(r"(?:\.|^)(?:lycos\.com|lycos\.co\.uk|hotmail\.com|localhost\.com|excite\.com"
                          r"|caramail\.com|cs\.com|aol\.com|msn\.com|yahoo\.com|drizzle\.com)$", re.I)


def _helo_ip_mismatch(f: HeaderFacts) -> bool:
    """RelayEval's helo_ip_mismatch: a relay said HELO with a public IPv4 address that
    is not its own, nor in its /24."""
    return any(
        relay.helo != relay.ip and _IPV4.match(relay.helo) and _IPV4.match(relay.ip)
        and public_address(relay.helo) and public_address(relay.ip)
        and not relay.ip.startswith(relay.helo.rsplit(".", 1)[0] + ".")
        for relay in f.chain())


def _no_rdns_dotcom_helo(f: HeaderFacts) -> bool:
    """RelayEval's check_for_no_rdns_dotcom_helo: a relay on a public address without a
    reverse-DNS name said HELO as a big dot-com. As in RelayEval, the last relay on a
    public address (the oldest) decides."""
    found = False
    for relay in f.chain():
        if public_address(relay.ip):
            found = bool(relay.helo) and not relay.rdns and _DOTCOM_HELO.search(relay.helo) is not None
    return found


_IP_ADDRESS = r"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F:]{2,39})"
# HeaderEval's known ways Yahoo! and Hotmail hand over their own users' mail
_YAHOO_OWN = re.compile(
    r"by web\S+\.mail\S*\.yahoo\.com via HTTP|by sonic\S+\.consmr\.mail\S*\.yahoo\.com with HTTP"
    r"|by smtp\S+\.yahoo\.com with SMTP|from \[" + _IP_ADDRESS + r"\] by \S+\.(?:groups|scd|dcn)\.yahoo\.com with NNFMP"
    r"|by \w+\.\w+\.yahoo\.com \(\d+\.\d+\.\d+/\d+\.\d+\.\d+\)(?: with ESMTP)? id \w+")
_HOTMAIL_OWN_WITH_IP = re.compile(
    r"from (?:\S*\.)?hotmail.com \(\S+\.hotmail(?:\.msn)?\.com[ )]|from \S*\.hotmail.com \(\[" + _IP_ADDRESS
    + r"\][ ):]|from \S+ by \S+\.hotmail(?:\.msn)?\.com with HTTP;|from \[66\.218.\S+\] by \S+\.yahoo\.com")
_HOTMAIL_OWN_WITH_ORG = re.compile(
    r"from \S*\.outbound\.protection\.outlook\.com \(\S+\.outbound\.protection\.outlook\.com[ )]"
    r"|from \S*\.(?:eur|nam)prd\d+\.prod\.outlook\.com \(" + _IP_ADDRESS + r"\)")


def _received_text(f: HeaderFacts) -> str:
    return " ".join((f.headers.value("received") or "")[:50_000].split())


def _gated_through_received_remover(f: HeaderFacts, received: str) -> bool:
    """HeaderEval: an ezmlm list or MSN Groups took the Received headers away (or there
    are none): the forgery tests cannot judge."""
    listing = f.headers.value("mailing-list") or ""
    if re.search(r"(?m)^contact \S+@\S+; run by ezmlm$", listing) \
            and re.search(r"(?m)^mailing list \S+@\S+", f.headers.value("delivered-to") or "") \
            and re.search(r"qmail \d+ invoked (?:from network|by .{3,20})\); \d+ ... \d+", received):
        return True
    return f.headers.value("received") is None or "from groups.msn.com (" in received \
        and re.search(r"from groups\.msn\.com \(\S+\.msn\.com ", received) is not None


def _forged_yahoo_received(f: HeaderFacts) -> bool:
    """HeaderEval's check_for_forged_yahoo_received_headers: From is at yahoo.com, yet
    no Received header shows Yahoo! handing the message over."""
    sender = f.addr("from:addr")
    if not re.search(r"\byahoo\.com$", sender, re.I):
        return False
    received = all_received = _received_text(f)
    if (f.headers.value("resent-from") or "").strip() and (f.headers.value("resent-to") or "").strip():
        received = " ".join((f.headers.value("x-received") or "").split()) or received
    if _gated_through_received_remover(f, all_received):
        return False
    chain = f.chain()
    if chain and re.search(r"\S\.yahoo\.com$", chain[0].rdns or ""):  # handed over by Yahoo! itself
        return False
    if _YAHOO_OWN.search(received):
        return False
    return not (re.search(r"\bmailer\d+\.bulk\.scd\.yahoo\.com\b", received)
                and re.search(r"@reply\.yahoo\.com$", sender, re.I))


def _hotmail_received(f: HeaderFacts) -> str:
    """HeaderEval's reading of a Hotmail claim: "forged" (the Received headers HELO as
    hotmail.com without being Hotmail's), "missing" (From is at hotmail.com but no
    Received header is Hotmail's) or ""."""
    sender = f.addr("from:addr")
    if "hotmail" not in (f.headers.value("received") or "")[:50_000].lower() and not sender.endswith("hotmail.com"):
        return ""  # most mail: neither claim is made
    received = _received_text(f)
    if "from mail pickup service by hotmail.com with Microsoft SMTPSVC;" in received:
        return ""
    if _msn_groups(f, received) or _gated_through_received_remover(f, received):
        return ""
    with_ip = re.search(_IP_ADDRESS, f.headers.value("x-originating-ip") or "") is not None
    with_org = re.search(r"hotmail\.com|msonline-outlook", f.headers.value("x-originatororg") or "") is not None
    if (with_ip and _HOTMAIL_OWN_WITH_IP.search(received)) or (with_org and _HOTMAIL_OWN_WITH_ORG.search(received)):
        return ""
    if re.search(r"(?:from |HELO |helo=)\S*hotmail\.com\b", received):
        return "forged"
    return "missing" if re.search(r"\bhotmail\.com$", sender, re.I) else ""


def _msn_groups(f: HeaderFacts, received: str) -> bool:
    m = re.search(r"<(\S+)@groups\.msn\.com>", f.headers.value("to") or "", re.I)
    server = re.search(r"from mail pickup service by ((?:p\d\d\.)groups\.msn\.com)\b", received)
    if m is None or server is None:
        return False
    listname, message_id = m.group(1), (f.headers.value("message-id") or "").strip()
    if listname == "notifications":
        return re.match(r"<\S+@" + re.escape(server.group(1)) + ">", message_id) is not None
    return (re.match(r"<" + re.escape(listname) + r"-\S+@groups\.msn\.com>", message_id) is not None
            and (listname + "-bounce@groups.msn.com") in (f.headers.value("EnvelopeFrom") or "").lower())


def _hotmail_claim(f: HeaderFacts) -> str:
    if f._hotmail is None:
        f._hotmail = _hotmail_received(f)
    return f._hotmail


def _forged_hotmail_received(f: HeaderFacts) -> bool:
    return _hotmail_claim(f) == "forged"


def _no_hotmail_received(f: HeaderFacts) -> bool:
    return _hotmail_claim(f) == "missing"


# HeaderEval's "best experimentally derived values"
TOCC_SORTED_COUNT = 7
TOCC_SIMILAR_COUNT = 5
TOCC_SIMILAR_LENGTH = 2
MAX_RECIPIENTS = 256


def _recipients(f: HeaderFacts) -> list[str]:
    """HeaderEval's recipient list: To and Cc's addresses (Bcc's too while fewer than
    TOCC_SIMILAR_COUNT), a repeat of the one before dropped. Empty when there are fewer
    than TOCC_SIMILAR_COUNT "@" (neither test then judges)."""
    if f._recipients is None:
        values = [f.headers.value("ToCc") or "", f.headers.value("bcc") or ""]
        f._recipients = _read_recipients(f) if sum(v.count("@") for v in values) >= TOCC_SIMILAR_COUNT else []
    return f._recipients


def _read_recipients(f: HeaderFacts) -> list[str]:
    inputs: list[str] = []
    for spec in ("ToCc", "bcc"):
        value = f.headers.value(spec)
        if value:
            inputs += [a for _, a in header_addresses(value[:20_000]) if a]
        if len(inputs) >= TOCC_SIMILAR_COUNT:
            break
    out: list[str] = []
    previous = ""
    for current in inputs:
        if current.lower() != previous.lower():
            out.append(current)
            previous = current
            if len(out) == MAX_RECIPIENTS:
                break
    return out


def _sorted_recipients(f: HeaderFacts) -> bool:
    found = _recipients(f)
    return len(found) >= TOCC_SORTED_COUNT and found == sorted(found)


def _similar_recipients(f: HeaderFacts, low: float | None, high: float | None) -> bool:
    """HeaderEval's similar_recipients: of all pairs of recipients, the share whose local
    parts start alike, or whose hosts start alike without being the same host."""
    found = _recipients(f)
    similar = 0.0
    if len(found) >= TOCC_SIMILAR_COUNT:
        user = [a[:TOCC_SIMILAR_LENGTH] for a in found]
        # as HeaderEval's map: an address without "@" has no host, and the ones after
        # it shift up a place
        fqhn = [a.split("@", 1)[1] for a in found if "@" in a]
        host = [h[:TOCC_SIMILAR_LENGTH] for h in fqhn]
        hits = combinations = 0
        for i in range(len(found)):
            for j in range(i + 1, len(found)):
                hits += user[i] == user[j]
                host_i, host_j = (host[k] if k < len(host) else "" for k in (i, j))
                fqhn_i, fqhn_j = (fqhn[k] if k < len(fqhn) else "" for k in (i, j))
                hits += host_i == host_j and fqhn_i != fqhn_j
                combinations += 1
        similar = hits / combinations
    return (low is None or similar >= low) and (high is None or similar < high)


def _missing_to_header(f: HeaderFacts) -> bool:
    return not (f.headers.value("to") or f.headers.value("apparently-to") or "").strip()


def _bound(value: str) -> float | None:
    return None if value == "undef" else float(value)


def _regex_arg(value: str) -> re.Pattern[str] | None:
    return re.compile(value)


_WITHOUT_ARGUMENTS: dict[str, Callable[[HeaderFacts], bool]] = {
    "check_equal_from_domains": _check_equal_from_domains,
    "check_outlook_message_id": _check_outlook_message_id,
    "check_all_trusted": _check_all_trusted,
    "check_no_relays": _check_no_relays,
    "sorted_recipients": _sorted_recipients,
    "check_for_missing_to_header": _missing_to_header,
    "check_for_forged_yahoo_received_headers": _forged_yahoo_received,
    "check_for_forged_hotmail_received_headers": _forged_hotmail_received,
    "check_for_no_hotmail_received_headers": _no_hotmail_received,
    "helo_ip_mismatch": _helo_ip_mismatch,
    "check_for_no_rdns_dotcom_helo": _no_rdns_dotcom_helo,
}


def prepare(name: str, args: list[str]) -> tuple[Callable[..., bool], tuple] | None:
    """A header test and its checked arguments, or None where not implemented."""
    n = len(args)
    if name == "check_freemail_from" and n <= 1:
        return _check_freemail_from, tuple(_regex_arg(a) for a in args)
    if name == "check_freemail_header" and n in (1, 2) and re.fullmatch(r"[\w-]{1,60}", args[0]):
        return _check_freemail_header, (args[0], *(_regex_arg(a) for a in args[1:]))
    if name == "check_freemail_replyto" and n <= 1 and (args or ["replyto"])[0] in ("replyto", "reply"):
        return _check_freemail_replyto, ((args or ["replyto"])[0],)
    if n == 0 and name in _WITHOUT_ARGUMENTS:
        return _WITHOUT_ARGUMENTS[name], ()
    if name == "similar_recipients" and n == 2 and all(
            a == "undef" or re.fullmatch(r"\d{0,3}(?:\.\d{1,6})?", a) and a for a in args):
        return _similar_recipients, (_bound(args[0]), _bound(args[1]))
    return None
