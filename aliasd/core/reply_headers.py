"""Header changes of the two directions through a reverse alias, as pure functions of
the message's header list (no milter, no database).

Forwarding (correspondent → alias → owner): the reverse alias goes into Reply-To:
(preserve mode) or From: (rewrite mode), and headers that would have the owner's mail
program answer elsewhere go. Replying (owner → reverse alias → correspondent): From:
becomes the alias, To: the correspondent, and every header that could reveal the owner
goes."""

from __future__ import annotations

import email.header
import email.utils
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from aliasd.core.addresses import header_addresses

Headers = Sequence[tuple[str, str]]

# Display names come from outside (a correspondent's From:) or from the user: anything
# that could end a header line or smuggle an address is refused before use.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")
MAX_NAME = 100

# Headers an owner's reply never keeps: the path it took, the owner's client and
# provider, the owner's own signatures and authentication results, other recipients.
_REPLY_DROP = {
    "received", "x-originating-ip", "x-forwarded-for", "x-forwarded-to", "return-path",
    "sender", "reply-to", "cc", "bcc", "dkim-signature", "arc-seal",
    "arc-message-signature", "arc-authentication-results", "authentication-results",
    "received-spf", "x-received", "x-google-smtp-source", "x-gm-message-state",
    "x-ms-exchange-organization-authas", "x-sender", "x-envelope-from",
    "disposition-notification-to", "return-receipt-to", "delivered-to", "x-original-to",
}
_MESSAGE_IDS = {"message-id", "in-reply-to", "references"}
# Written by the user (like the body): kept even when they name the owner; the README
# tells users that aliasd does not change what they wrote.
_CONTENT = {"subject", "mime-version", "content-type", "content-transfer-encoding",
            "content-language", "content-disposition", "date"}
_MSGID = re.compile(r"<([^<>@\s]+)@([^<>\s]+)>")


class HeaderInjection(ValueError):
    """A display name with line breaks or other control characters."""


def check_display_name(name: str | None) -> str | None:
    """The name as given (stripped), or None when empty; refuses control characters."""
    if name is None:
        return None
    if _CONTROL.search(name):
        raise HeaderInjection("a display name may not contain line breaks or control characters")
    name = " ".join(name.split())
    if len(name) > MAX_NAME:
        raise HeaderInjection(f"a display name is at most {MAX_NAME} characters")
    return name or None


def safe_name(name: str | None) -> str | None:
    """A display name from outside made harmless (controls dropped, shortened)."""
    if not name:
        return None
    return " ".join(_CONTROL.sub(" ", name).split())[:MAX_NAME] or None


def format_address(name: str | None, address: str) -> str:
    """``"Name" <address>`` quoted or RFC 2047 encoded as needed."""
    return email.utils.formataddr((safe_name(name) or "", address), charset="utf-8")


def decode(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # malformed encoded words: the raw text
        return value


def first_address(value: str | None) -> tuple[str, str] | None:
    """(display name, address) of the first address in a header value."""
    if not value:
        return None
    for name, address in header_addresses(value):
        if "@" in address:
            return decode(name), address
    return None


def first(headers: Headers, name: str) -> str | None:
    lname = name.lower()
    return next((v for n, v in headers if n.lower() == lname), None)


# --- forwarding --------------------------------------------------------------------
def correspondent_of(headers: Headers) -> tuple[str, str] | None:
    """Who a reply goes to: Reply-To:'s first address when there is one, else From:'s."""
    return first_address(first(headers, "Reply-To")) or first_address(first(headers, "From"))


# Headers naming an address the owner's mail program (or server) writes to, from the
# owner's mailbox, past the reverse alias: read-receipt requests, and the reply targets
# some programs use instead of or besides Reply-To: (nmh, mutt, Thunderbird, notmuch,
# Gnus). Forwarded mail drops them.
ANSWERED_ELSEWHERE = (
    "disposition-notification-to", "return-receipt-to", "x-confirm-reading-to",
    "mail-reply-to", "mail-followup-to", "mail-copies-to",
)


def signature_covers_forward_edits(headers: Headers) -> bool:
    """Whether a DKIM signature covers Reply-To: (signed, or oversigned to forbid
    adding one), or a header of ``ANSWERED_ELSEWHERE`` the message carries: then adding
    or changing Reply-To:, or dropping that header, breaks that signature."""
    present = {n.lower() for n, _ in headers}
    changed = {"reply-to", *(h for h in ANSWERED_ELSEWHERE if h in present)}
    for name, value in headers:
        if name.lower() != "dkim-signature":
            continue
        tags = dict(
            (k.strip().lower(), v) for k, _, v in
            (part.partition("=") for part in re.sub(r"\s+", "", value).split(";"))
        )
        signed = tags.get("h", "").lower().split(":")
        if changed.intersection(signed):
            return True
    return False


def sender_label(name: str | None, address: str) -> str:
    """``Name (sender at example.com)``: who wrote, readable, not a usable address."""
    local, _, domain = address.partition("@")
    label = f"{local} at {domain}"
    name = safe_name(name)
    return f"{name} ({label})" if name and name.lower() != address.lower() else label


@dataclass
class HeaderEdits:
    """Changes in milter terms: ``change`` (name, occurrence from 1, new value; "" deletes),
    ``add`` appended headers, ``sender`` a new envelope sender."""

    change: list[tuple[str, int, str]] = field(default_factory=list)
    add: list[tuple[str, str]] = field(default_factory=list)

    def apply(self, headers: Headers) -> list[tuple[str, str]]:
        """The header list after the edits, as the receiver will see it."""
        out: list[tuple[str, str] | None] = list(headers)
        seen: dict[str, list[int]] = {}
        for i, (name, _value) in enumerate(headers):
            seen.setdefault(name.lower(), []).append(i)
        for name, occurrence, value in self.change:
            positions = seen.get(name.lower(), [])
            if occurrence <= len(positions):
                i = positions[occurrence - 1]
                out[i] = (headers[i][0], value) if value else None
            elif value:
                out.append((name, value))
        return [h for h in out if h is not None] + list(self.add)


def _set(edits: HeaderEdits, headers: Headers, name: str, value: str) -> None:
    """Replace the first ``name`` header, delete the others; add it when missing."""
    count = sum(1 for n, _ in headers if n.lower() == name.lower())
    if count == 0:
        edits.add.append((name, value))
        return
    edits.change.append((name, 1, value))
    for occurrence in range(count, 1, -1):
        edits.change.append((name, occurrence, ""))


def _drop_all(edits: HeaderEdits, headers: Headers, name: str) -> None:
    """Delete every ``name`` header (from the last, so numbering holds)."""
    count = sum(1 for n, _ in headers if n.lower() == name.lower())
    for occurrence in range(count, 0, -1):
        edits.change.append((name, occurrence, ""))


def _drop_answered_elsewhere(edits: HeaderEdits, headers: Headers) -> None:
    for name in ANSWERED_ELSEWHERE:
        _drop_all(edits, headers, name)


def forward_preserve(headers: Headers, reverse_address: str, correspondent: tuple[str, str]
                     ) -> HeaderEdits:
    edits = HeaderEdits()
    name, address = correspondent
    _set(edits, headers, "Reply-To", format_address(sender_label(name, address), reverse_address))
    _drop_answered_elsewhere(edits, headers)
    return edits


def forward_rewrite(headers: Headers, reverse_address: str, correspondent: tuple[str, str]
                    ) -> HeaderEdits:
    """From: the reverse alias, showing who wrote; Reply-To: goes (the correspondent is
    the one behind the reverse alias already)."""
    edits = HeaderEdits()
    author = first_address(first(headers, "From")) or correspondent
    _set(edits, headers, "From", format_address(sender_label(*author), reverse_address))
    _drop_all(edits, headers, "Reply-To")
    _drop_answered_elsewhere(edits, headers)
    return edits


# --- replying ----------------------------------------------------------------------
def _reveals(value: str, needles: Iterable[str]) -> bool:
    text = decode(value).lower()
    raw = value.lower()
    return any(n in text or n in raw for n in needles)


def _on_domain(host: str, domains: set[str]) -> bool:
    """Whether ``host`` is one of ``domains`` or a host under one (laptop.real.example)."""
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def map_message_ids(value: str, owner_domains: set[str], alias_domain: str) -> str:
    """Message ids on the owner's domain, or on a host name under it (mail programs and
    the owner's own server write their host name), moved to the alias domain (same local
    part, so the ids in References: of later replies map the same way and threads hold)."""
    def swap(m: re.Match[str]) -> str:
        local, domain = m.group(1), m.group(2)
        if _on_domain(domain, owner_domains):
            return f"<{local}@{alias_domain}>"
        return m.group(0)

    return _MSGID.sub(swap, value)


def reply_edits(
    headers: Headers,
    *,
    alias_address: str,
    alias_name: str | None,
    correspondent: str,
    correspondent_name: str | None,
    owner_addresses: set[str],
) -> HeaderEdits:
    """The owner's reply made to come from the alias: From:/To: rewritten, every header
    naming the owner or their mailbox domain removed, Message-ID kept (or, when it names
    the owner's domain, moved to the alias domain)."""
    owner_addresses = {a.lower() for a in owner_addresses}
    owner_domains = {a.rpartition("@")[2] for a in owner_addresses}
    needles = owner_addresses | owner_domains
    alias_domain = alias_address.rpartition("@")[2]
    edits = HeaderEdits()
    occurrences: dict[str, int] = {}
    for name, value in headers:
        lname = name.lower()
        occurrences[lname] = occurrences.get(lname, 0) + 1
        occurrence = occurrences[lname]
        if lname in ("from", "to"):
            continue  # set below
        if lname in _REPLY_DROP or lname.startswith(("arc-", "x-aliasd-")):
            edits.change.append((name, occurrence, ""))
        elif lname in _MESSAGE_IDS:
            mapped = map_message_ids(value, owner_domains, alias_domain)
            if mapped != value:
                edits.change.append((name, occurrence, mapped))
        elif lname not in _CONTENT and _reveals(value, needles):
            edits.change.append((name, occurrence, ""))
    _set(edits, headers, "From", format_address(alias_name, alias_address))
    _set(edits, headers, "To", format_address(correspondent_name, correspondent))
    # Deletions from the last occurrence, so numbering holds while they are applied.
    edits.change.sort(key=lambda c: (c[0].lower(), -c[1]))
    return edits
