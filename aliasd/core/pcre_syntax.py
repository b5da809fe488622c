"""PCRE syntax for header_checks rules aliasd builds from data: escaping, the pattern
that blocks a sender domain, and recognising such a pattern in an imported rule.

User data never becomes regex syntax: every character that is not a letter or digit is
escaped, and only printable ASCII is accepted (Postfix reads the table byte by byte)."""

from __future__ import annotations

import re

from aliasd.core.errors import AliasdError

# The headers that name who sent a message. To:/Cc: are left out (they hold the user's own
# alias), and so are Received: lines (relays and the recipient's own host appear there):
# matching those would refuse mail that merely passed near a blocked domain. The envelope
# sender is refused earlier, at MAIL FROM, by the access map.
SENDER_HEADERS = ("From", "Reply-To", "Sender", "Return-Path")
# After the domain: no further host-name character, and no ".label" (so massnews.gr blocks
# news.massnews.gr but not massnews.gr.example.com or massnews.gr-shop.com).
DOMAIN_END = r"(?![\w-]|\.[\w-])"
# An imported /massnews\.gr/-style body: dot-separated labels, dots escaped, nothing else.
ESCAPED_DOMAIN_BODY = re.compile(r"^(?:[a-z0-9-]+\\\.)+[a-z0-9-]+$", re.I)
PCRE_FLAGS = frozenset("imsxAEUX")  # what Postfix's dict_pcre accepts after the delimiter


class PatternError(AliasdError):
    """Text that cannot be put into a header_checks pattern."""


def pcre_escape(value: str) -> str:
    """Escape every character that is not a letter or digit. In PCRE a backslash before
    a non-alphanumeric character always means that literal character, so the result
    matches ``value`` exactly and cannot contain the ``/`` delimiter unescaped."""
    if any(ord(c) < 32 or ord(c) > 126 for c in value):
        raise PatternError("only printable ASCII can be put into a header_checks rule")
    return "".join(c if c.isalnum() or c == "-" else "\\" + c for c in value)


def domain_pattern(domain: str) -> str:
    """The anchored pcre pattern refusing mail whose sender headers name ``domain`` (or a
    subdomain). Postfix's pcre defaults are case-insensitive and dot-matches-newline, so
    folded headers match too; no flags needed."""
    headers = "|".join(SENDER_HEADERS)
    return f"/^({headers}):.*[@.]{pcre_escape(domain)}{DOMAIN_END}/"


def escaped_domain(body: str) -> str | None:
    """``massnews.gr`` for the body ``massnews\\.gr``; None for any other pattern."""
    if ESCAPED_DOMAIN_BODY.match(body or ""):
        return body.replace("\\.", ".").lower()
    return None


def python_flags(flags: str) -> int:
    """Python ``re`` flags reading a pattern as Postfix does: case-insensitive and
    dot-matches-newline by default, each toggled off by the i and s flags (pcre_table(5))."""
    result = 0 if "i" in flags else re.I
    if "s" not in flags:
        result |= re.S
    if "x" in flags:
        result |= re.X
    if "m" in flags:
        result |= re.M
    return result


def split_rule_pattern(pattern: str) -> tuple[str, str]:
    """(body, flags) of ``/body/flags`` as aliasd stores it."""
    if len(pattern) >= 2 and pattern[0] == "/":
        end = pattern.rfind("/")
        if end > 0:
            return pattern[1:end], pattern[end + 1 :]
    return pattern, ""
