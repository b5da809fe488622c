"""Rendering the header_checks table aliasd writes: one ``/pattern/ REJECT "text"`` line
per enabled rule, in id order for stable diffs."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.orm import Session

from aliasd.core.blocking import list_rules, rule_lines

HEADER = (
    "# header_checks written by aliasd; do not edit: use 'aliasd blocklist' or the web page.",
    "# Each rule's reject text carries its stable id.",
)


def clean_text(text: str) -> str:
    """A reject text Postfix reads the way it is shown: printable ASCII, single spaces.
    Unicode blanks become spaces; other non-ASCII and control characters are dropped."""
    text = "".join(" " if c.isspace() else c for c in text or "")
    text = "".join(c for c in text if 32 <= ord(c) < 127)
    return " ".join(text.split())


def rule_line(pattern: str, reject_text: str) -> str:
    """``/pattern/ REJECT "text"``, the form mail admins know."""
    text = clean_text(reject_text)
    return f'{pattern} REJECT "{text}"' if text else f"{pattern} REJECT"


def render_table(lines: Iterable[tuple[int, str]]) -> str:
    """The whole file from (rule id, rule line) pairs, in id order."""
    out = list(HEADER) + [line for _id, line in sorted(lines)]
    return "\n".join(out) + "\n"


def enabled_rules(session: Session) -> list[tuple[int, str, str]]:
    """(id, pattern, reject text) of the enabled rules, in id order."""
    return rule_lines(list_rules(session, enabled_only=True))


def render_from_database(session: Session) -> str:
    return render_table((rid, rule_line(p, text)) for rid, p, text in enabled_rules(session))
