"""The main.cf line replies through reverse aliases need: Postfix's own Received: header
of the owner's reply names the owner's outgoing server and the reverse alias, and a
milter cannot remove it (smtpd does not show it to milters). The smtp client drops it on
the way out; a reply has one recipient, so smtpd wrote ``for <ra-…@…>`` into it, with
the extension the owner may have added (``ra-…+note@…``, resolved like the bare one)."""

from __future__ import annotations

import re

from aliasd.config import Settings
from aliasd.core.reverse_aliases import PREFIX
from aliasd.postfix.section import Section


def received_rule(delimiter: str) -> str:
    """The pcre rule dropping smtpd's Received: of a reply: ``for <ra-HEX@`` or, with
    ``recipient_delimiter`` set, ``for <ra-HEX+anything@``."""
    extension = rf"(?:{re.escape(delimiter)}[^@>]*)?" if delimiter else ""
    return rf"/^Received:.*\sfor <{PREFIX}[0-9a-f]+{extension}@/ IGNORE"


def reply_header_checks(settings: Settings) -> str:
    """An inline pcre table (Postfix 3.7+), so there is no file to keep."""
    return f"pcre:{{{{{received_rule(settings.recipient_delimiter)}}}}}"


def reply_section(settings: Settings) -> Section:
    return Section(
        "aliasd replies (reverse aliases)",
        "Replies sent as an alias leave without the Received: line that names the owner's\n"
        "server. If you already have smtp_header_checks, add this rule to your table.",
        [f"smtp_header_checks = {reply_header_checks(settings)}"],
    )
