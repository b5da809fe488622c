"""The reverse-alias steps of the mail path, both directions.

Outgoing: a message to a reverse alias is the owner replying (rewritten to come from the
alias and sent to the correspondent) or anyone else (refused, 550, counted). Postfix
resolves a live reverse alias to the alias's own destinations, so whatever happens
without this step (milter down) lands back in the owner's mailbox: never at the
correspondent, never bounced.

Forwarded: mail from a correspondent to one alias gets the correspondent's reverse alias
in Reply-To: (preserve) or From: (rewrite, DKIM-signed by aliasd).

Faults: a reply is never sent half-done. Database or DNS trouble answers 451."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aliasd.config import Settings
from aliasd.core import reverse_aliases
from aliasd.core.addresses import AddressError, domain_of, parse_address
from aliasd.core.reply_auth import may_send
from aliasd.core.reply_headers import (
    HeaderEdits,
    correspondent_of,
    first,
    forward_preserve,
    forward_rewrite,
    reply_edits,
    signature_covers_forward_edits,
)
from aliasd.db import Database
from aliasd.milter import owner_auth, reply_signing
from aliasd.milter.edits import ACCEPT, TEMPFAIL, MessageEdits
from aliasd.milter.recent import Recent
from aliasd.models import Alias

if TYPE_CHECKING:
    from aliasd.core.events import AliasTarget
    from aliasd.milter.processing import Envelope

log = logging.getLogger(__name__)

HEADER_REPLY = "X-Aliasd-Reply"  # marks a message aliasd already sent as an alias (loops)
_SIGNED = ("from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references",
           "reply-to", "mime-version", "content-type", "content-transfer-encoding")


@dataclass
class Transform:
    """Milter edits beyond the scanner's headers. ``exclusive``: a reply; every edit must
    apply or the message is deferred (a half-rewritten reply could reveal the owner)."""

    change_headers: list[tuple[str, int, str]] = field(default_factory=list)
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    insert_headers: list[tuple[str, str]] = field(default_factory=list)  # at the top
    new_sender: str | None = None
    remove_recipients: list[str] = field(default_factory=list)
    add_recipients: list[str] = field(default_factory=list)
    exclusive: bool = False
    # The reverse alias whose forwarded counter this message moves; counted with the
    # message's events (off the SMTP answer), not here.
    forwarded_reverse_id: int | None = None


@dataclass
class Outcome:
    """What the reply step decided: a refusal (status + reply) or a transform."""

    status: str = "accept"  # accept | reject | tempfail
    reply: tuple[str, str, str] | None = None
    transform: Transform | None = None


def _reject(code: str, xcode: str, text: str) -> Outcome:
    return Outcome("reject" if code.startswith("5") else "tempfail", (code, xcode, text))


def _final_message(headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"{n}: {v}".replace("\r\n", "\n").replace("\n", "\r\n") for n, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def _text_headers(raw: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    return [(n, v.decode("utf-8", "surrogateescape")) for n, v in raw]


class ReplyPath:
    def __init__(self, settings: Settings, database: Database, facts_ttl: float = 0.0) -> None:
        """``facts_ttl``: seconds a correspondent's existing reverse alias is remembered
        (the milter: as long as its alias lookups); 0 reads it for every message."""
        self.settings = settings
        self.database = database
        # (alias id, correspondent) → the facts of a correspondent with a named reverse alias
        self._known: Recent[tuple[int, str], reverse_aliases.ForwardFacts] = Recent(facts_ttl)

    # --- outgoing ----------------------------------------------------------------
    def _reverse_like(self, recipients: list[str]) -> bool:
        for rcpt in recipients:
            try:
                local = parse_address(rcpt, self.settings.recipient_delimiter).local
            except AddressError:
                continue
            if reverse_aliases.is_reverse_local(local):
                return True
        return False

    def _base(self, rcpt: str) -> str:
        """The address without its extension, as lookupd resolved it."""
        try:
            return str(parse_address(rcpt, self.settings.recipient_delimiter))
        except AddressError:
            return rcpt

    def outgoing(self, envelope: Envelope) -> Outcome | None:
        """None when no recipient is a reverse alias."""
        if not self._reverse_like(envelope.recipients):
            return None
        try:
            with self.database.session() as session:
                found = [(r, reverse_aliases.resolve(session, self._base(r),
                                                     self.settings.reply_mode))
                         for r in envelope.recipients]
                managed = reverse_aliases.managed_domains(session, self.settings.reply_domain)
        except Exception as exc:
            log.warning("reverse alias lookup failed: %s", exc)
            return _reject("451", "4.3.0", "Temporary lookup failure, try again later")
        targets = [(r, t) for r, t in found if t is not None]
        if not targets:
            return None  # not ours (Postfix refused unknown ones at RCPT already)
        rcpt, target = targets[0]
        if len(envelope.recipients) != 1:
            return _reject("550", "5.5.3", "A message to a reverse alias must have it as "
                           "its only recipient")
        headers = _text_headers(envelope.headers)
        facts = owner_auth.envelope_facts(envelope)
        decision = may_send(target, facts, self.settings.reply_trusted_networks)
        if not decision.allowed and decision.how.startswith("the owner's mail must"):
            try:  # DNS only when nothing else holds
                facts = owner_auth.with_dns_checks(self.settings, envelope, facts)
            except owner_auth.TemporaryFailure as exc:
                log.warning("sender authentication deferred: %s", exc)
                return _reject("451", "4.7.0", "Cannot check the sender's authentication "
                               "now, try again later")
            decision = may_send(target, facts, self.settings.reply_trusted_networks)
        if not decision.allowed:
            self._count(reverse_aliases.record_refused, target.id, envelope.sender)
            log.info("reverse alias %s refused mail from <%s>: %s", target.address,
                     envelope.sender, decision.how)
            return _reject("550", "5.7.1", f"{decision.how.capitalize()}")
        if first(headers, HEADER_REPLY) or domain_of(target.correspondent) in managed:
            return _reject("550", "5.4.6", "Mail loop: this message was already sent "
                           "through a reverse alias")
        if envelope.truncated:
            return _reject("552", "5.3.4", "A reply through a reverse alias may be at most "
                           f"{self.settings.max_scan_size} bytes")
        edits = reply_edits(
            headers, alias_address=target.alias_address, alias_name=target.alias_reply_name,
            correspondent=target.correspondent, correspondent_name=target.correspondent_name,
            owner_addresses=target.owner_addresses() | {envelope.sender.lower()},
        )
        edits.add.append((HEADER_REPLY, "sent"))
        final = edits.apply(headers)
        try:
            signature = self._sign(target.alias_domain, final, bytes(envelope.body))
        except Exception as exc:
            log.warning("DKIM signing for %s failed: %s", target.alias_domain, exc)
            return _reject("451", "4.3.0", "Cannot sign the message now, try again later")
        transform = Transform(
            change_headers=edits.change, add_headers=edits.add,
            insert_headers=signature,
            new_sender=target.alias_address, remove_recipients=[rcpt],
            add_recipients=[target.correspondent], exclusive=True,
        )
        self._count(reverse_aliases.record_sent, target.id)
        log.info("reply through %s sent as %s (%s)", target.address, target.alias_address,
                 decision.how)
        return Outcome(transform=transform)

    def _sign(self, domain: str, headers: list[tuple[str, str]], body: bytes
              ) -> list[tuple[str, str]]:
        present = {n.lower() for n, _ in headers}
        names = [h for h in _SIGNED if h in present]
        return reply_signing.sign(self.settings, domain, _final_message(headers, body), names)

    def _count(self, func, *args) -> None:
        try:
            with self.database.session() as session:
                func(session, *args)
        except Exception:  # the decision stands; only the counter misses it
            log.exception("could not count reverse alias use")

    # --- forwarded ----------------------------------------------------------------
    def _reverse_for(self, target: AliasTarget, correspondent: tuple[str, str]
                     ) -> tuple[int, str, str] | None:
        """(reverse alias id, its address, reply mode) for mail from ``correspondent``
        to ``target``, or None when it gets none. A correspondent with a reverse alias
        costs one query; a new one (or a first name for it) goes through
        :func:`reverse_aliases.for_correspondent`, which owns that rule."""
        name, address = correspondent
        key = (target.id, address.lower())
        facts = self._known.get(key)
        if facts is None:
            read_at = time.monotonic()
            with self.database.reading() as connection:  # a read, without a transaction
                facts = reverse_aliases.forward_facts(
                    connection, target.id, address, reply_domain=self.settings.reply_domain,
                    default_mode=self.settings.reply_mode)
            if facts is not None and facts.reverse_id is not None and facts.reverse_named:
                self._known.put(key, facts, read_at)
        if facts is None or address.lower() in facts.owner_addresses():
            return None  # the owner writing to their own alias: nobody to hide
        if facts.refused:
            return None
        # A disabled contact keeps its reverse alias in the message: answering it is then
        # refused (550 at RCPT), where without one the owner's mail program would answer
        # the correspondent straight from the owner's mailbox.
        if facts.reverse_id is not None and (facts.reverse_named or not name):
            assert facts.reverse_address is not None
            return facts.reverse_id, facts.reverse_address, facts.reply_mode
        with self.database.session() as session:
            alias = session.get(Alias, target.id)
            if alias is None:
                return None
            try:
                row = reverse_aliases.for_correspondent(
                    session, alias, address, name=name,
                    reply_domain=self.settings.reply_domain)
            except reverse_aliases.ReverseAliasRefused:
                return None
            return row.id, row.address, facts.reply_mode

    def forwarded(self, envelope: Envelope, target: AliasTarget, new_subject: str | None
                  ) -> Transform | None:
        """The reverse-alias edits of mail from a correspondent to one alias, or None."""
        headers = _text_headers(envelope.headers)
        correspondent = correspondent_of(headers)
        if correspondent is None or not envelope.sender:
            return None  # bounces and mail without an author have nobody to answer
        try:
            found = self._reverse_for(target, correspondent)
        except Exception as exc:
            log.warning("reverse alias for %s not made: %s", target.address, exc)
            return None
        if found is None:
            return None
        reverse_id, address, mode = found
        if mode == "preserve" and not signature_covers_forward_edits(headers):
            edits = forward_preserve(headers, address, correspondent)
            return Transform(change_headers=edits.change, add_headers=edits.add,
                             forwarded_reverse_id=reverse_id)
        # Rewrite mode, or preserve where a signature covers Reply-To: or a header
        # answered elsewhere (changing them would break it): From: becomes the reverse
        # alias, signed by aliasd.
        edits = forward_rewrite(headers, address, correspondent)
        signature: list[tuple[str, str]] = []
        if not envelope.truncated:
            final = edits.apply(headers)
            if new_subject is not None:
                final = [(n, new_subject if n.lower() == "subject" else v) for n, v in final]
            try:
                signature = self._sign(address.rpartition("@")[2], final, bytes(envelope.body))
            except Exception as exc:
                log.warning("DKIM signing of forwarded mail failed: %s", exc)
        if not signature and mode == "preserve":
            return None  # unsigned, a rewritten From: would fail DMARC: leave it as it is
        return Transform(change_headers=edits.change, add_headers=edits.add,
                         insert_headers=signature, forwarded_reverse_id=reverse_id)


def transformed_envelope(envelope: Envelope, transform: Transform | None) -> Envelope:
    """A copy of ``envelope`` whose headers carry ``transform``'s edits (what later steps,
    the ARC seal, must see); ``envelope`` itself when there is none."""
    if transform is None:
        return envelope
    edits = HeaderEdits(change=transform.change_headers, add=transform.add_headers)
    # apply_transform inserts each at the top in turn: the last one ends up first
    headers = [*reversed(transform.insert_headers),
               *edits.apply(_text_headers(envelope.headers))]
    return dataclasses.replace(
        envelope, headers=[(n, v.encode("utf-8", "surrogateescape")) for n, v in headers])


def apply_transform(edits: MessageEdits, transform: Transform, own_seen: dict[str, int]) -> str:
    """Apply a transform as milter edits. For a reply (exclusive), any failure defers the
    whole message; otherwise a failure leaves the message as it is."""
    try:
        if transform.exclusive:
            for name, count in own_seen.items():
                for index in range(count, 0, -1):
                    edits.change_header(name, index, "")
        for name, index, value in transform.change_headers:
            edits.change_header(name, index, value)
        for name, value in transform.add_headers:
            edits.add_header(name, value)
        for name, value in transform.insert_headers:
            edits.insert_header(0, name, value)
        if transform.new_sender:
            edits.change_sender(f"<{transform.new_sender}>")
        for rcpt in transform.remove_recipients:
            edits.delete_recipient(f"<{rcpt}>")
        for rcpt in transform.add_recipients:  # last: nothing is sent unless all else held
            edits.add_recipient(f"<{rcpt}>")
    except Exception:
        log.exception("could not apply reverse-alias edits")
        if transform.exclusive:
            edits.set_reply("451", "4.3.0", "Cannot rewrite the reply now, try again later")
            return TEMPFAIL
    return ACCEPT
