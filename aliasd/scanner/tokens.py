"""Bayes tokens: words of the subject, sender and body, combined OSB-style (orthogonal
sparse bigrams: each word paired with the words that follow it inside a window, the
distance part of the pair's hash) and hashed to signed 64-bit integers, the key of
``bayes_tokens``."""

from __future__ import annotations

import hashlib
import re

import numpy as np

from aliasd.scanner.markup import html_to_text, split_invisible
from aliasd.scanner.message import ParsedMessage, decode_header_value, header_items

# A word and the one that follows it. rspamd's OSB tokenizer pairs each word with the
# next four; here that was worse: every telling phrase then fills up to nine of the
# tokens the chi-square combines (which assumes independent evidence), so one quoted
# list footer or one pitch sentence decided alone. With a window of 2, 5-fold
# cross-validation inside the benchmark's learn set missed half as much spam at the
# same false-positive rate. Distance-1 pairs hash as they did with the wider window,
# so statistics learned before keep their meaning.
WINDOW = 2
MAX_WORDS = 1500  # body words tokenized per message: enough to classify, bounded cost
MAX_LEN = 24
HIDDEN_PREFIX = "hidden:"  # words of text the reader does not see (single words, not pairs)
MAX_HIDDEN_WORDS = 300

# A word of two characters or more (single letters say nothing), or a currency sign or
# "!": the pattern leaves out what used to be found and then dropped.
_WORD = re.compile(r"[^\W_][\w$€£%'.-]*[^\W_]|[$€£!]", re.UNICODE)
_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xC2B2AE3D27D4EB4F)
_C3 = np.uint64(0x165667B19E3779F9)

# Words whose hashes are kept. A mail stream's vocabulary never stops growing (names,
# codes, misspellings), so the cache is emptied when full: about 140 bytes a word, 28 MB
# at most per process (500,000 held 70 MB in each milter worker once a server had seen
# enough mail). The corpus's 6,046 messages use 112,558 distinct words.
WORD_HASH_CACHE = 200_000
_word_hashes: dict[str, int] = {}


def _hashes(ws: list[str]) -> np.ndarray:
    get = _word_hashes.get
    try:  # map: the lookups run in C, straight into the array
        return np.fromiter(map(get, ws), dtype=np.uint64, count=len(ws))
    except TypeError:  # words not seen before (None; most new messages have some): hash those
        return np.fromiter([get(w) or _h(w) for w in ws], dtype=np.uint64, count=len(ws))


def _h(word: str) -> int:
    # blake2b is stable across processes and hosts (unlike hash()); memoised because
    # the same words recur in every message.
    value = _word_hashes.get(word)
    if value is None:
        if len(_word_hashes) >= WORD_HASH_CACHE:
            _word_hashes.clear()
        value = int.from_bytes(hashlib.blake2b(word.encode("utf-8", "replace"), digest_size=8).digest(), "little")
        _word_hashes[word] = value
    return value


def words(text: str, limit: int = MAX_WORDS) -> list[str]:
    """Lower-cased words; over-long runs (base64, hashes) become one shape token."""
    # words average well under 16 characters: no need to scan further than this
    found = _WORD.findall(text[: limit * 16].lower())[:limit]
    if found and max(map(len, found)) > MAX_LEN:
        return [w if len(w) <= MAX_LEN else "long:" + w[:4] for w in found]
    return found


def _many_digits(word: str) -> bool:
    """More than three digits: a serial, queue id or date, not a word. (A word of
    letters only, the most common, has none; no need to count.)"""
    return len(word) > 3 and not word.isalpha() and len(_DIGITS.findall(word)) > 3


def _osb(hashes: np.ndarray) -> np.ndarray:
    """Unigrams plus pairs (w[i], w[i+k]) for k = 1..WINDOW-1, k part of the hash."""
    parts = [hashes]
    with np.errstate(over="ignore"):
        for k in range(1, WINDOW):
            if len(hashes) <= k:
                break
            a = hashes[:-k] * _C1
            b = (hashes[k:] + np.uint64(k) * _C3) * _C2
            parts.append(a ^ (b >> np.uint64(7)) ^ b)
    return np.concatenate(parts)


def _meta(pm: ParsedMessage) -> list[str]:
    """Structure tokens: things Bayes learns from beyond words. Each piece of evidence
    enters once: the subject, From, X-Mailer, Reply-To and the top content type are
    already header words (``name:word``), so they get no token of their own here
    (counted twice, one fact would fill two of the combined tokens)."""
    meta: list[str] = []
    if pm.attachments:
        meta.extend("att:" + a for a in pm.attachments[:10])
    # Message.get_charsets(), from the charsets _fill already read
    for charset in {str(c).lower() for c in map(pm.charset, pm.msg.walk()) if c}:
        meta.append("charset:" + charset)
    for host, path in zip(pm.url_hosts[:50], pm.url_paths[:50], strict=False):
        labels = host.split(".")
        meta.append("url:" + ".".join(labels[-2:]))
        meta.append("urlhost:" + host)
        meta.append("urltld:" + labels[-1])
        # path words ('remove', 'cgi-bin', 'unsubscribe'), not ids: digits-heavy parts dropped
        meta.extend("urlpath:" + w for w in words(path, 8) if not _many_digits(w))
    # How the HTML was written, and the MIME layout with transfer encodings (the
    # layout once; the leaf part types, which the layout string does not split out)
    meta.extend("html:" + t for t in sorted(pm.html_tags)[:200])
    meta.append("mime:" + ",".join(pm.part_types[:8]))
    meta.extend({"part:" + t for t in pm.part_types[:20] if not t.startswith("multipart/")})
    if pm.to_raw is None:
        meta.append("to:none")
    # Which headers are present says much about the software that wrote the message
    # (SpamAssassin's Bayes and SpamBayes tokenize headers the same way).
    meta.extend({"hn:" + n for n in pm.header_names if len(n) <= 40})
    mid = pm.message_id or ""
    if "@" in mid:
        right = mid.rpartition("@")[2].strip("> ").lower()
        meta.append("mid:" + ".".join(right.split(".")[-2:]))
    meta.append("midshape:" + _shape(mid.partition("@")[0]))
    if pm.date_raw:
        meta.append("dateshape:" + _shape(pm.date_raw))
    return meta


_MARKUP = re.compile(r"<(?:html|body|font|table|td|div|p|br)\b[^<>]{0,200}>(?:[^<]{0,2000}<(?:html|body|font|table|td|tr|div|p|br)\b){2}", re.I)
_SHAPE_SUB = re.compile(r"[a-z]+|[A-Z]+|\d+")


def _shape(text: str) -> str:
    """'20020822.ABC123@x' -> 'd.Ad': the pattern of a header, not its value."""
    def repl(m: re.Match) -> str:
        c = m.group()[0]
        return "d" if c.isdigit() else ("A" if c.isupper() else "a")

    return _SHAPE_SUB.sub(repl, text.strip())[:30]


# Headers that say nothing about the sender's software or path, or that carry our own
# (or another filter's) verdict: learning those would teach Bayes its own opinion back.
_SKIP_HEADERS = frozenset({
    # the subject's words are tokens of their own (s:, paired); the content type is the
    # MIME layout token; the date and Message-ID are shape tokens
    "subject", "content-type", "date", "delivery-date", "message-id", "received", "return-path",
    "x-loop", "errors-to", "sender", "delivered-to", "x-original-to", "content-length", "lines",
    "status", "x-status", "x-keywords", "x-uid",
})
# Mailing-list software's headers name the list, and a list known from learned ham made
# spam sent through it look like ham (part of the newer spam came through lists learned
# as ham). Their words are no tokens; that the headers are there still is (hn:). On the
# validation halves: leave-spam-2-out 380 -> 391 of 560, time-shifted 497 -> 518 of 560,
# no more easy ham flagged (--logo, --time, SpamAssassin's rules on).
_SKIP_PREFIXES = ("x-spam", "x-aliasd", "x-rspamd", "x-virus", "list-", "x-beenthere", "x-mailman",
                  "precedence", "x-mailing-list", "mailing-list")
_DIGITS = re.compile(r"\d")


def header_words(pm: ParsedMessage) -> list[str]:
    """``name:word`` for the words of each header (SpamAssassin's Bayes and SpamBayes
    tokenize headers the same way). Received lines lose their time stamp, and words
    with many digits (queue ids, serials) are dropped: unique per message, they only
    bloat the table."""
    out: list[str] = []
    for name, value in header_items(pm.msg, 60):
        n = name.lower()
        if n in _SKIP_HEADERS or n.startswith(_SKIP_PREFIXES) or len(n) > 40:
            continue
        text = decode_header_value(value)
        if n == "received":
            text = text.rpartition(";")[0] or text
        for w in words(text, 20):
            if "." not in w and _many_digits(w):
                continue
            out.append(n + ":" + w)
    return out


def _visible_and_hidden_text(pm: ParsedMessage) -> tuple[str, str]:
    """The body text Bayes reads as words, and the HTML's text styled away from the
    reader. Padding the reader never sees (ordinary words in hidden elements, to pull a
    word counter to ham) is learned apart, as SpamAssassin's Bayes does: its words are
    tokens of their own, never the visible words' statistics. White text is not set
    apart: on the validation halves that lost spam (the white text of the corpus's
    spam, footers and filler on coloured cells, is spam's own words)."""
    text = pm.text
    if not pm.html_raw or text is not pm.text_html:
        return text, ""
    spans = pm.invisible.styled
    if not spans:
        return text, ""
    visible, hidden = split_invisible(pm.html_raw, spans)
    return html_to_text(visible), html_to_text(hidden)


def message_tokens(pm: ParsedMessage) -> np.ndarray:
    """Unique signed 64-bit token ids of one message (may be empty)."""
    groups: list[np.ndarray] = []
    subject = pm.subject or ""
    if subject:
        sw = ["s:" + w for w in words(subject, 40)]
        groups.append(_osb(_hashes(sw)))
    text, hidden = _visible_and_hidden_text(pm)
    if _MARKUP.search(text[:5000]):
        # HTML sent as text/plain (or without MIME): the words, not the tag names
        text = html_to_text(text)
    body = words(text)
    if body:
        groups.append(_osb(_hashes(body)))
    if hidden:
        groups.append(_hashes([HIDDEN_PREFIX + w for w in words(hidden, MAX_HIDDEN_WORDS)]))
    meta = _meta(pm)
    meta.extend(header_words(pm))
    if meta:
        groups.append(_hashes(meta))
    if not groups:
        return np.empty(0, dtype=np.int64)
    # sort + neighbour compare: the same result as np.unique, several times faster
    ids = np.sort(np.concatenate(groups).view(np.int64))
    keep = np.empty(len(ids), dtype=bool)
    keep[0] = True
    np.not_equal(ids[1:], ids[:-1], out=keep[1:])
    return ids[keep]
