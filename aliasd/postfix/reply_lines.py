"""The main.cf line replies through reverse aliases need: Postfix's own Received: header
of the owner's reply names the owner's outgoing server and the reverse alias, and a
milter cannot remove it (smtpd does not show it to milters). The smtp client drops it on
the way out; a reply has one recipient, so smtpd wrote ``for <ra-…@…>`` into it."""

from __future__ import annotations

from aliasd.config import Settings
from aliasd.core.reverse_aliases import PREFIX
from aliasd.postfix.section import Section

RECEIVED_RULE = rf"/^Received:.*\sfor <{PREFIX}[0-9a-f]+@/ IGNORE"


def reply_header_checks() -> str:
    """An inline pcre table (Postfix 3.7+), so there is no file to keep."""
    return f"pcre:{{{{{RECEIVED_RULE}}}}}"


def reply_section(settings: Settings) -> Section:
    return Section(
        "aliasd replies (reverse aliases)",
        "Replies sent as an alias leave without the Received: line that names the owner's\n"
        "server. If you already have smtp_header_checks, add this rule to your table.",
        [f"smtp_header_checks = {reply_header_checks()}"],
    )
