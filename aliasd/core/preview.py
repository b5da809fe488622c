"""A safe plain-text preview of a message for review pages: text parts as they are,
HTML reduced to its text by nh3 (the maintained Ammonia sanitiser) with every tag
removed, so nothing a page shows can load remote content or run script."""

from __future__ import annotations

import email
import email.policy
import html
import re

import nh3

PREVIEW_CHARS = 2000


class _HeaderMemo:
    """The default policy's header factory, remembering what it made for one message:
    the parser and ``get_content`` read Content-Type again and again (the boundary, the
    type, the charset), each read a full parse; the same (name, value) always gives the
    same (immutable) header object."""

    __slots__ = ("_made",)

    def __init__(self) -> None:
        self._made: dict[tuple[str, str], object] = {}

    def __call__(self, name: str, value: str):
        key = (name, value)
        header = self._made.get(key)
        if header is None:
            header = self._made[key] = _HEADERS(name, value)
        return header


_HEADERS = email.policy.default.header_factory


def _html_text(markup: str) -> str:
    # Block-level ends become line breaks before the tags go.
    markup = re.sub(r"(?i)<\s*(br|/p|/div|/tr|/li|/h\d)\b[^>]*>", "\n", markup)
    text = nh3.clean(markup, tags=set(), clean_content_tags={"script", "style", "title", "head"})
    return html.unescape(text)


def text_preview(raw: bytes, limit: int = PREVIEW_CHARS) -> str:
    """The first ``limit`` characters of the message's readable text (never raises)."""
    try:
        policy = email.policy.default.clone(header_factory=_HeaderMemo())
        msg = email.message_from_bytes(raw, policy=policy)
        plain: str | None = None
        markup: str | None = None
        for part in msg.walk():
            if part.is_multipart() or part.get_content_disposition() == "attachment":
                continue
            ctype = part.get_content_type()
            if ctype == "text/plain" and plain is None:
                plain = part.get_content()
            elif ctype == "text/html" and markup is None:
                markup = part.get_content()
        text = plain if plain is not None else _html_text(markup or "")
    except Exception:  # a broken message still gets a (raw) preview
        text = raw.split(b"\r\n\r\n", 1)[-1].decode("utf-8", "replace")
        text = _html_text(text)
    # Cleaning only removes and shortens, so a head that is still longer than ``limit``
    # once cleaned starts the same as the whole text cleaned: long messages are not
    # walked character by character to the end for 2000 characters.
    head = _clean(text[: limit * 4]) if len(text) > limit * 4 else ""
    return (head if len(head) > limit else _clean(text))[:limit]


def _clean(text: str) -> str:
    # Mail text is printable but for its line ends, as a rule: checked at C speed, so
    # the filter character by character only runs over text with something else in it.
    if text.replace("\r", "").replace("\n", "").replace("\t", "").isprintable():
        text = text.replace("\r", "")
    else:
        text = "".join(c for c in text if c.isprintable() or c in "\n\t")
    return re.sub(r"\n{3,}", "\n\n", text).strip()
