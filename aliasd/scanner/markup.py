"""HTML as the scanner reads it: its text without tags, style and script blocks.

One forward pass with ``str.find`` and memoised look-aheads (tags: one regex pass where
no tag holds a second ``<``, as in almost all HTML), so the time is linear in the markup
whatever it holds: unclosed ``<style>`` tags, a ``<`` without ``>``, comments
that never end. (A backreference regex such as ``<(style|script)\\b.*?</\\1\\s*>`` searches
to the end of the text from every unclosed tag: quadratic, minutes of CPU for 600 KB.)

What counts as a tag is what the scanner has always used, so verdicts stay the same:
a ``<style>``/``<script>`` block runs to the first ``</style\\s*>`` (``</script\\s*>``)
after it and is dropped whole; an unclosed one loses only its tag. Any other ``<`` starts
a tag when a ``>`` follows within ``MAX_TAG`` characters."""

from __future__ import annotations

import html
import re
from typing import NamedTuple

import re2

MAX_TAG = 2000  # characters between '<' and '>' for the pair to be a tag
_BLOCKS = ("style", "script")
# ASCII-only lower-casing keeps every index valid ('İ'.lower() is two characters).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# Numeric character references of 8 digits or more: html.unescape builds an int of all
# the digits (and raises past 4,300 of them); they are shortened to the same value first.
_LONG_CHARREF = re2.compile(r"&#(?:([xX])([0-9a-fA-F]{8,})|([0-9]{8,}))")
_WS_RUN = re.compile(r"\s*")
# A '<' followed by another before any '>' (possessive: each character read once).
_LT_TWICE = re.compile(r"<[^<>]*+<")
# A tag without '<' inside: the characters it may hold stop at the next '<', so each is
# read once whether or not a '>' follows within MAX_TAG.
_TAG = re.compile(r"<[^<>]{0," + str(MAX_TAG) + "}+>")


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class _NextFinder:
    """``text.find(needle, start)`` for non-decreasing ``start``, each character read
    about once: the last answer is reused while it still lies ahead."""

    __slots__ = ("_text", "_needle", "_found")

    def __init__(self, text: str, needle: str) -> None:
        self._text, self._needle, self._found = text, needle, -2

    def find(self, start: int) -> int:
        if self._found == -1:
            return -1
        if self._found < start:
            self._found = self._text.find(self._needle, start)
        return self._found


def _close_end(low: str, name: str, closer: _NextFinder, start: int) -> int:
    """End of the first ``</name\\s*>`` at or after ``start``, or -1."""
    n = len(name) + 2
    while True:
        q = closer.find(start)
        if q < 0:
            return -1
        i = _WS_RUN.match(low, q + n).end()
        if i < len(low) and low[i] == ">":
            return i + 1
        start = q + 1


def strip_blocks(markup: str) -> str:
    """Replace each ``<style>…</style>`` and ``<script>…</script>`` block with a space."""
    low = markup.translate(_ASCII_LOWER)
    openers = {name: _NextFinder(low, "<" + name) for name in _BLOCKS}
    closers = {name: _NextFinder(low, "</" + name) for name in _BLOCKS}
    unclosed: set[str] = set()  # no closing tag after some point: none after any later one
    out: list[str] = []
    emitted = pos = 0
    while True:
        candidates = [
            (p, name) for name in _BLOCKS if name not in unclosed
            for p in (openers[name].find(pos),) if p >= 0
        ]
        if not candidates:
            break
        p, name = min(candidates)
        after = p + 1 + len(name)
        if after < len(low) and _is_word(low[after]):
            pos = p + 1
            continue
        end = _close_end(low, name, closers[name], after)
        if end < 0:
            unclosed.add(name)
            pos = p + 1
            continue
        out.append(markup[emitted:p])
        out.append(" ")
        emitted = pos = end
    if not out:
        return markup
    out.append(markup[emitted:])
    return "".join(out)


def strip_tags(text: str) -> str:
    """Replace each tag (``<`` … ``>`` within ``MAX_TAG`` characters) with a space."""
    # Almost all HTML has no '<' between a '<' and its '>': then every tag is a '<', no
    # other '<' and a '>' within MAX_TAG, and one regex pass finds them. When no '<' is
    # left after it, there was none.
    stripped = _TAG.sub(" ", text)
    if "<" not in stripped or _LT_TWICE.search(text) is None:
        return stripped
    out: list[str] = []
    gt = _NextFinder(text, ">")
    emitted = pos = 0
    while True:
        p = text.find("<", pos)
        if p < 0:
            break
        g = gt.find(p + 1)
        if g < 0:
            break  # no '>' anywhere after: no more tags
        if g - p - 1 > MAX_TAG:
            pos = p + 1
            continue
        out.append(text[emitted:p])
        out.append(" ")
        emitted = pos = g + 1
    if not out:
        return text
    out.append(text[emitted:])
    return "".join(out)


def _short_charref(m) -> str:
    hex_mark, hex_digits, dec_digits = m.group(1), m.group(2), m.group(3)
    digits = (hex_digits or dec_digits).lstrip("0") or "0"
    if len(digits) > 7:  # beyond U+10FFFF either way: html.unescape gives U+FFFD
        digits = "110000" if hex_mark else "1114112"
    return "&#" + (hex_mark or "") + digits


def unescape(text: str) -> str:
    """``html.unescape`` that stays linear on absurd numeric references."""
    if "&#" in text:
        text = _LONG_CHARREF.sub(_short_charref, text)
    return html.unescape(text)


def html_to_text(markup: str) -> str:
    """The readable text of an HTML part: blocks and tags become spaces, entities are
    decoded."""
    return unescape(strip_tags(strip_blocks(markup)))


# Text the reader does not see. Styled away: display:none, visibility:hidden, a font of
# 0-2 px (<font size=1> is tiny but legible: not counted). Or white text where nothing in
# the markup gives a dark background. Spam pads itself with such text to feed word
# counters ordinary words; the rules and Bayes both ask this one place.
HIDDEN_SCAN = 200_000  # characters of markup looked at
MAX_HIDDEN_ELEMENTS = 200
_HIDDEN_REACH = 20_000  # an element's text runs to its closing tag at most this far
_HIDDEN_UNCLOSED = 2_000  # and this far when no closing tag follows
_HIDDEN_OPEN = re2.compile(
    r"(?i)<(?:div|span|p|font|td|table)\b[^>]*?style\s*=\s*[\"'][^\"']*?"
    r"(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*[0-2](?:\.\d+)?\s*(?:px|pt)\b|"
    r"font-size\s*:\s*0\b)[^>]*>"
)
_WHITE_FONT = re2.compile(r"(?i)<font\b[^>]{0,500}?color\s*=\s*[\"']?\s*(?:#?f{6}|#fff\b|white)[^>]{0,500}>")
_DARK_BG = re2.compile(
    r"(?i)bgcolor\s*=\s*[\"']?\s*(?:#?(?:[0-7][0-9a-f]){3}\b|black|navy)|background(?:-color)?\s*:\s*(?:#[0-7]|black)"
)
_TAG_NAME = re.compile(r"<(\w+)")

Span = tuple[int, int]


class Invisible(NamedTuple):
    """Where a markup's invisible text lies: (start, end) of each hidden element's
    content, and whether it has white text (only that: Bayes keeps white text's words,
    see tokens.py, so where it lies is never needed)."""

    styled: list[Span]  # display:none, visibility:hidden, 0-2 px fonts
    white: bool  # white fonts, no dark background anywhere


def invisible(markup: str) -> Invisible:
    """The invisible elements among the first ``HIDDEN_SCAN`` characters of ``markup``."""
    markup = markup[:HIDDEN_SCAN]
    low = markup.lower()
    if len(low) != len(markup):  # 'İ' and a few others lengthen: keep the indices valid
        low = markup.translate(_ASCII_LOWER)
    styled: list[Span] = []
    if "display" in low or "visibility" in low or "font-size" in low:
        styled = _element_spans(_HIDDEN_OPEN.finditer(markup), low)
    white = "color" in low and _WHITE_FONT.search(markup) is not None and not _DARK_BG.search(markup)
    return Invisible(styled, white)


def _element_spans(openers, low: str) -> list[Span]:
    spans: list[Span] = []
    for i, m in enumerate(openers):
        if i >= MAX_HIDDEN_ELEMENTS:
            break
        tag = _TAG_NAME.match(m.group(0))
        name = tag.group(1).lower() if tag else "div"
        end = low.find("</" + name, m.end(), m.end() + _HIDDEN_REACH)
        spans.append((m.end(), end if end >= 0 else min(len(low), m.end() + _HIDDEN_UNCLOSED)))
    return spans


def split_invisible(markup: str, spans: list[Span]) -> tuple[str, str]:
    """(the markup without the spans, the spans' markup); spans may overlap (an
    element hidden inside another)."""
    visible: list[str] = []
    hidden: list[str] = []
    pos = 0
    for start, end in sorted(spans):
        if end <= pos:
            continue
        start = max(start, pos)
        visible.append(markup[pos:start])
        hidden.append(markup[start:end])
        pos = end
    visible.append(markup[pos:])
    return " ".join(visible), " ".join(hidden)
