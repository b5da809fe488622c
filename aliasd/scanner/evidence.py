"""URL and HTML evidence: tricks spam has used for twenty years and still uses, which
a word-counting Bayes learned on yesterday's mail does not see (link shorteners,
anchors that name another domain than they lead to, obfuscated hosts, text hidden from
the reader to feed the filter words).

Every pattern here is bounded (RE2, or Python ``re`` with bounded repeats and no two
adjacent parts that can match the same characters) and reads a bounded prefix of the
HTML."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from aliasd.core.addresses import registrable_domain
from aliasd.scanner.message import ParsedMessage
from aliasd.scanner.rules import sym

HTML_SCAN = 200_000  # characters of HTML markup looked at
MAX_ANCHORS = 300
MANY_DOMAINS = 12  # distinct registrable domains linked: more is a link farm
HIDDEN_WORDS = 30  # words hidden from the reader before it counts as padding

SHORTENERS = frozenset({
    "bit.ly", "bitly.com", "tinyurl.com", "goo.gl", "t.co", "ow.ly", "is.gd", "buff.ly",
    "rebrand.ly", "cutt.ly", "shorturl.at", "tiny.cc", "rb.gy", "t.ly", "v.gd", "x.co",
    "lnkd.in", "s.id", "bl.ink", "short.io", "tr.im", "shorte.st", "adf.ly", "qr.net",
    "1url.com", "snipurl.com", "u.to", "clck.ru", "urlz.fr", "t2m.io", "soo.gd",
})

# the href of an <a> tag (read from the tag only: at most MAX_TAG characters)
_HREF = re.compile(r"""\shref\s{0,20}=\s{0,20}["']?([^"'\s>]{1,1000})""", re.I)
MAX_TAG = 2000
MAX_ANCHOR_TEXT = 500
_TAG = re.compile(r"<[^<>]{0,2000}>")
# a host name or URL written as the anchor's text
_TEXT_HOST = re.compile(r"^(?:https?://)?((?:[a-z0-9-]{1,63}\.){1,10}[a-z]{2,24})(?:[/:?#]\S{0,500})?$", re.I)
# Python's re here: a literal, then one bounded class, cannot backtrack more than 300
# characters a match, and its finditer costs a fraction of the RE2 wrapper's per match.
# The class is RE2's \s spelled out, so it finds what the RE2 pattern found.
_URL_AUTH = re.compile(r"https?://([^/\t\n\f\r \"'<>?#]{1,300})", re.I)
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]{1,8}|\d{8,10}|0\d{1,3}(?:\.0?\d{1,3}){3})$", re.I)
@functools.lru_cache(maxsize=4096)
def _site(host: str) -> str:
    return registrable_domain(host) or host


def url_rules(pm: ParsedMessage) -> Iterator[object]:
    hosts = [h.rstrip(".") for h in pm.url_hosts if h]
    short = sorted({h for h in hosts if h in SHORTENERS or h.removeprefix("www.") in SHORTENERS})
    if short:
        yield sym("URL_SHORTENER", *short[:3])
    sites = {_site(h) for h in hosts if not _NUMERIC_HOST.match(h)}
    if len(sites) >= MANY_DOMAINS:
        yield sym("URL_MANY_DOMAINS", str(len(sites)))
    markup = pm.html_raw[:HTML_SCAN]
    odd = _obfuscated(markup) or _obfuscated(pm.text_plain[:HTML_SCAN])
    if odd:
        yield sym("URL_OBFUSCATED", odd)
    if markup:
        mismatch = _anchor_mismatch(markup)
        if mismatch:
            yield sym("URL_ANCHOR_MISMATCH", *mismatch)


def _obfuscated(text: str) -> str | None:
    for m in _URL_AUTH.finditer(text) if "://" in text else ():
        auth = m.group(1)
        if "@" in auth:
            return "userinfo " + auth.rpartition("@")[2][:60]
        host = auth.partition(":")[0]
        if "%" in host:
            return "escaped host " + host[:60]
        if _NUMERIC_HOST.match(host):
            return "numeric host " + host[:60]
    return None


def anchors(markup: str) -> Iterator[tuple[str, str]]:
    """(href, inner markup) of the first MAX_ANCHORS links: found with str.find, each
    tag and text read within a bounded window, so the cost is linear in the markup."""
    low = markup.lower()
    pos = 0
    for _ in range(MAX_ANCHORS):
        start = low.find("<a", pos)
        if start < 0:
            return
        pos = start + 2
        if pos >= len(low) or not low[pos].isspace():
            continue
        close = low.find(">", pos, pos + MAX_TAG)
        if close < 0:
            continue
        m = _HREF.search(markup, pos - 1, close)
        end = low.find("</a", close, close + MAX_ANCHOR_TEXT)
        if m and end >= 0:
            yield m.group(1), markup[close + 1 : end]
            pos = end


def _anchor_mismatch(markup: str) -> tuple[str, str] | None:
    """The first link whose text is a host name or URL of another site than it leads to."""
    for href, inner in anchors(markup):
        hm = _URL_AUTH.match(href)
        if not hm:
            continue
        text = _TAG.sub("", inner).strip()
        tm = _TEXT_HOST.match(text)
        if not tm:
            continue
        shown = tm.group(1).lower()
        target = hm.group(1).rpartition("@")[2].partition(":")[0].lower()
        if not target or "." not in shown:
            continue
        if _site(shown) != _site(target):
            return shown[:60], target[:60]
    return None


def html_rules(pm: ParsedMessage) -> Iterator[object]:
    if not pm.html_raw:
        return
    invisible = pm.invisible
    hidden = _words_in(pm.html_raw, invisible.styled)
    if hidden >= HIDDEN_WORDS:
        yield sym("HTML_HIDDEN_TEXT", f"{hidden} words")
    if invisible.white:
        yield sym("HTML_FONT_INVISIBLE")


def _words_in(markup: str, spans: list[tuple[int, int]]) -> int:
    return sum(len(_TAG.sub(" ", markup[start:end]).split()) for start, end in spans)
