"""Postfix's delivery status notifications about forwarded mail name the alias, never the
owner's mailbox.

When the owner's provider refuses a forwarded copy, Postfix writes a DSN (RFC 3464) to
the original sender (through SRS) that names the real mailbox:
``<alice@real.example> (expanded from <shop.example@example.net>): host ... said: ...``
in its text, ``Final-Recipient: rfc822; alice@real.example`` in its report. Anyone could
unmask an alias by sending what the provider refuses.

The rule, for a message Postfix made itself with a null envelope sender, shaped as a DSN:
each ``<mailbox> (expanded from <address>)`` paragraph of its text, where the address is
one of aliasd's aliases and the mailbox one of that alias's destinations or its owner's
mailbox, gets the mailbox replaced by the address (and the now empty "expanded from"
dropped); the report's per-recipient blocks, in the same order, likewise; any other
place in the notification and the report, and the top-level headers, get the alias too
(:data:`HIDDEN` when one mailbox stands for two aliases of this DSN), case-insensitively.

Only Postfix's text names the pairs: the sender chose the address (its RCPT TO) but not
the text. ``Original-Recipient`` is the sender's own ``ORCPT=`` when given, so it is not
trusted; the returned message is left as it is, since it is the sender's own words (and
our headers, which never name the mailbox), and rewriting it would confirm a mailbox the
sender guessed there. For the same reason each block and paragraph shows its own alias,
so a bounce for two aliases of one owner does not tell that they share a mailbox.
Anything else (not a DSN, a malformed one, mail aliasd did not forward) is left alone.

Pure: the caller reads the aliases (:func:`alias_mailboxes`) and applies the edits.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.engine import Connection

from aliasd.core import events
from aliasd.models import Alias, User

HIDDEN = "undisclosed-recipient@invalid"  # RFC 2606: a name that can never be a mailbox

# Characters that continue an address on either side: a match inside a longer address
# (``xalice@real.example.org``) is another address and stays.
_BEFORE = rb"(?<![A-Za-z0-9.!#$%&'*+/=?^_`{|}~-])"
_AFTER = rb"(?![A-Za-z0-9-]|\.[A-Za-z0-9])"
_EXPANDED = re.compile(rb"<([^<>\s]+)>\s+\(expanded\s+from\s+<([^<>\s]+)>\)", re.I)
_FINAL = re.compile(rb"^Final-Recipient:\s*rfc822;\s*<?([^<>\s]+?)>?\s*$", re.I | re.M)
_RECIPIENT = re.compile(rb"<([^<>\s]+)>(?:\s+\(expanded\s+from\s+<([^<>\s]+)>\))?:", re.I)
_PARAGRAPH_END = re.compile(rb"(\r?\n[ \t]*\r?\n)")


@dataclass(frozen=True)
class Masking:
    """What to change: header values (name, occurrence from 1, new value) and the body
    (None: unchanged)."""

    headers: list[tuple[str, int, str]] = field(default_factory=list)
    body: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.headers) or self.body is not None


def is_dsn(sender: str, headers: Sequence[tuple[str, bytes]]) -> bool:
    """A null envelope sender and a multipart/report of report-type delivery-status."""
    if sender not in ("", "<>"):
        return False
    ctype = _content_type(headers)
    text = ctype.decode("latin-1").lower()
    return "multipart/report" in text and "delivery-status" in text


def _content_type(headers: Sequence[tuple[str, bytes]]) -> bytes:
    return next((v for n, v in headers if n.lower() == "content-type"), b"")


def expansions(message: bytes) -> list[tuple[str, str]]:
    """(mailbox, address the sender wrote), lower case, per ``(expanded from ...)`` of
    the DSN's notification text, in order; [] when the message is not a readable DSN."""
    try:
        parsed = email.message_from_bytes(message, policy=email.policy.compat32)
        if (parsed.get_content_type() != "multipart/report"
                or str(parsed.get_param("report-type", "")).lower() != "delivery-status"):
            return []
        parts = parsed.get_payload()
        if not isinstance(parts, list) or len(parts) < 2:
            return []
        if (parts[0].get_content_type() != "text/plain"
                or parts[1].get_content_type() != "message/delivery-status"):
            return []
        text = parts[0].get_payload(decode=True)
    except Exception:  # any parser fault: a malformed DSN passes as it is
        return []
    if not isinstance(text, bytes):
        return []
    return [(f.decode("latin-1").lower(), o.decode("latin-1").lower())
            for f, o in _EXPANDED.findall(text)]


def _address(text: str) -> bytes:
    return _BEFORE + re.escape(text.encode("utf-8")) + _AFTER


def _replace(data: bytes, mailbox: str, shown: str) -> bytes:
    return re.sub(_address(mailbox), shown.encode("utf-8").replace(b"\\", b"\\\\"), data,
                  flags=re.I)


def _mask_paragraph(paragraph: bytes, valid: set[tuple[str, str]],
                    own: tuple[str, str] | None, everywhere: Mapping[str, str]) -> bytes:
    """One paragraph of the notification, or block of the report whose recipient is
    ``own`` (the text's recipient in the same place)."""
    start = _EXPANDED.match(paragraph.lstrip())
    if start is not None:  # "<mailbox> (expanded from <alias>): why" names its own alias
        mailbox, alias = (g.decode("latin-1").lower() for g in start.groups())
        if (mailbox, alias) in valid:
            paragraph = _EXPANDED.sub(lambda m: b"<" + m.group(2) + b">", paragraph, count=1)
            paragraph = _replace(paragraph, mailbox, alias)
    elif own is not None and own in valid:
        paragraph = _replace(paragraph, *own)
    for mailbox, shown in everywhere.items():
        paragraph = _replace(paragraph, mailbox, shown)
    return paragraph


def mask(headers: Sequence[tuple[str, bytes]], body: bytes,
         pairs: Iterable[tuple[str, str]], *, truncated: bool = False) -> Masking:
    """The edits for a DSN whose text pairs ``pairs`` (mailbox, alias), already checked
    against the database. A body cut short (``truncated``: the milter keeps at most
    max_scan_size bytes) loses its returned message, which would come through unseen
    otherwise, and keeps the notification and the report."""
    valid = set(pairs)
    if not valid:
        return Masking()
    aliases_of: dict[str, set[str]] = {}
    for mailbox, alias in valid:
        aliases_of.setdefault(mailbox, set()).add(alias)
    everywhere = {m: next(iter(a)) if len(a) == 1 else HIDDEN for m, a in aliases_of.items()}
    changed: list[tuple[str, int, str]] = []
    seen: dict[str, int] = {}
    for name, value in headers:
        index = seen[name.lower()] = seen.get(name.lower(), 0) + 1
        masked = value
        for mailbox, shown in everywhere.items():
            masked = _replace(masked, mailbox, shown)
        if masked != value:
            changed.append((name, index, masked.decode("utf-8", "surrogateescape")))
    head, returned = _split_returned(headers, body)
    if truncated:
        returned = _closing(headers)
    pieces = _PARAGRAPH_END.split(head)
    # The report's per-recipient blocks follow the text's recipient paragraphs in order
    # (Postfix writes both from one log): block n belongs to recipient n.
    recipients = [(m.group(1).decode("latin-1").lower(),
                   (m.group(2) or m.group(1)).decode("latin-1").lower())
                  for m in (_RECIPIENT.match(p.lstrip()) for p in pieces[::2]) if m]
    block = 0
    for index in range(0, len(pieces), 2):  # odd indexes are the blank lines between
        own = None
        if _FINAL.search(pieces[index]):
            own = recipients[block] if block < len(recipients) else None
            if own is not None and _FINAL.search(pieces[index]).group(1).lower() != \
                    own[0].encode("latin-1"):
                own = None  # not the recipient expected here: only the general rule
            block += 1
        pieces[index] = _mask_paragraph(pieces[index], valid, own, everywhere)
    new_body = b"".join(pieces) + returned
    return Masking(changed, new_body if new_body != body else None)


def _boundary(headers: Sequence[tuple[str, bytes]]) -> bytes | None:
    found = re.search(rb'boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))', _content_type(headers), re.I)
    return (found.group(1) or found.group(2)) if found else None


def _split_returned(headers: Sequence[tuple[str, bytes]], body: bytes) -> tuple[bytes, bytes]:
    """(notification and report, the third part onwards: the returned message)."""
    boundary = _boundary(headers)
    if boundary is None:
        return body, b""
    delimiter = b"\n--" + boundary
    cut, start = -1, 0
    for _ in range(3):
        cut = body.find(delimiter, start)
        if cut < 0:
            return body, b""
        start = cut + len(delimiter)
    if body[cut - 1:cut] == b"\r":
        cut -= 1
    return body[:cut], body[cut:]


def _closing(headers: Sequence[tuple[str, bytes]]) -> bytes:
    boundary = _boundary(headers)
    return b"\r\n--" + boundary + b"--\r\n" if boundary else b""


def alias_mailboxes(connection: Connection, addresses: Iterable[str],
                    delimiter: str) -> dict[str, set[str]]:
    """Each address that is an alias (exact, or without its extension) → its
    destinations and its owner's mailbox, lower case."""
    candidates = {address: pair for address in set(addresses)
                  for pair in events.alias_candidates([address], delimiter)}
    wanted = sorted({a for pair in candidates.values() for a in pair})
    if not wanted:
        return {}
    rows = connection.execute(
        select(Alias.address, Alias.destinations, User.mailbox)
        .join(User, Alias.owner_id == User.id)
        .where(Alias.address.in_(wanted))
    ).all()
    by_alias = {address: {m.lower() for m in [mailbox, *dests.split(",")] if m}
                for address, dests, mailbox in rows}
    found: dict[str, set[str]] = {}
    for address, (exact, base) in candidates.items():
        mailboxes = by_alias.get(exact) or by_alias.get(base)
        if mailboxes:
            found[address] = mailboxes
    return found


def hide_mailboxes(sender: str, headers: Sequence[tuple[str, bytes]], body: bytes,
                   lookup: Callable[[list[str]], Mapping[str, Iterable[str]]],
                   *, truncated: bool = False) -> Masking:
    """The whole rule for one message Postfix made; ``lookup`` is
    :func:`alias_mailboxes` bound to a connection and the recipient delimiter (only
    called for a DSN that names an expansion)."""
    if not is_dsn(sender, headers):
        return Masking()
    raw = b"".join(n.encode("ascii", "replace") + b": " + v + b"\r\n" for n, v in headers)
    head, _returned = _split_returned(headers, body)
    found = expansions(raw + b"\r\n" + head + _closing(headers))
    if not found:
        return Masking()
    mailboxes = lookup(sorted({alias for _, alias in found}))
    pairs = [(mailbox, alias) for mailbox, alias in found
             if mailbox != alias and mailbox in {m.lower() for m in mailboxes.get(alias, ())}]
    return mask(headers, body, pairs, truncated=truncated)
