"""The one-click headers added to forwarded mail. Headers only, never the body, so
the original DKIM signature still verifies; a header the signer covered even when
absent (DKIM "oversigning", ``h=`` naming it) is not added, since adding it would
break the signature."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from aliasd.config import Settings
from aliasd.core import oneclick
from aliasd.core.reply_headers import first_address

if TYPE_CHECKING:
    from aliasd.core.events import AliasTarget
    from aliasd.milter.processing import Envelope

HEADER_DISABLE = "X-Aliasd-Disable"
HEADER_BLOCK = "X-Aliasd-Block-Sender"
HEADERS = (HEADER_DISABLE, HEADER_BLOCK)
ONE_CLICK_POST = ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")


def _signed_names(envelope: Envelope) -> set[str]:
    names: set[str] = set()
    for name, value in envelope.headers:
        if name.lower() != "dkim-signature":
            continue
        text = re.sub(rb"\s+", b"", value).decode("ascii", "replace")
        match = re.search(r"(?:^|;)h=([^;]*)", text)
        if match:
            names.update(n.lower() for n in match.group(1).split(":"))
    return names


def headers_for(settings: Settings, envelope: Envelope,
                targets: list[AliasTarget]) -> list[tuple[str, str]]:
    if not settings.web_base_url or len(targets) != 1:
        return []  # one message to several aliases: a link would name only one
    target = targets[0]
    # The address too: a link must never act on another alias that got the number later.
    disable = oneclick.link(settings, oneclick.OneClick(oneclick.DISABLE, target.id,
                                                        address=target.address))
    out = [(HEADER_DISABLE, f"<{disable}>")]
    raw_from = envelope.first_header("From")
    author = first_address(raw_from.decode("utf-8", "replace")) if raw_from else None
    sender = oneclick.sender_to_block(author[1] if author else None, envelope.sender)
    if sender:
        block = oneclick.link(settings, oneclick.OneClick(oneclick.BLOCK, target.id, sender,
                                                          address=target.address))
        out.append((HEADER_BLOCK, f"<{block}>"))
    signed = _signed_names(envelope)
    if (envelope.first_header("List-Unsubscribe") is None
            and not signed & {"list-unsubscribe", "list-unsubscribe-post"}):
        # RFC 8058: a POST to this URL, with no further confirmation, disables the alias.
        out.append(("List-Unsubscribe", f"<{disable}>"))
        out.append(ONE_CLICK_POST)
    return out


def one_click_added(added: list[tuple[str, str]]) -> bool:
    """Whether ``added`` (a verdict's new headers) carries our RFC 8058 pair, which a
    DKIM signature must cover before a mail client offers one-click."""
    return ONE_CLICK_POST in added
