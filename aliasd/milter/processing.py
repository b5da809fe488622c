"""What the milter does with one message, without any milter protocol in sight:
look up the aliases, scan within the time budget, decide the headers and the SMTP
reply, record the events. The milter adapter (``aliasd.milter.adapter``) only
collects an :class:`Envelope` and applies the :class:`Verdict`.

Faults never lose mail: a database or scanner failure, or a scan that overruns
``settings.milter_timeout``, gives an "accept" verdict with an ``X-Aliasd-Scan:
skipped (reason)`` header.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import email.header
import email.utils
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aliasd.config import Settings
from aliasd.core import bounce_privacy, events
from aliasd.core.addresses import AddressError, domain_of, header_addresses, normalize_address
from aliasd.core.block_decision import (
    Block,
    BlockListCache,
    Sender,
    personal_block,
    server_block,
)
from aliasd.core.bounce_privacy import Masking
from aliasd.db import Database
from aliasd.mailauth.verify import AuthResults
from aliasd.milter import authstep, event_writer, learn_by_mail, review
from aliasd.milter.alias_cache import ALIAS_TTL, AliasCache
from aliasd.milter.oneclick_headers import HEADERS as ONECLICK_HEADERS
from aliasd.milter.replies import ReplyPath, Transform, transformed_envelope
from aliasd.models import utcnow
from aliasd.scanner.result import Action, ScanRequest, ScanResult
from aliasd.scanner.spf import SharedSpf

log = logging.getLogger(__name__)

T = TypeVar("T")

HEADER_ALIAS = "X-Aliasd-Alias"
HEADER_SCAN = "X-Aliasd-Scan"
HEADER_RESULT = "X-Spamd-Result"
HEADER_SPAM = "X-Spam"
# Headers aliasd vouches for: copies arriving from outside are removed so nobody can
# forge "not spam" (or a different alias) into a user's filters.
# Messages from this size on are processed one at a time per milter process.
BIG_MESSAGE = 512 * 1024
_LINE_END = re.compile(rb"\r?\n")
OWN_HEADERS = (HEADER_ALIAS, HEADER_SCAN, HEADER_RESULT, HEADER_SPAM, *ONECLICK_HEADERS)


@dataclass
class Envelope:
    """One message as the MTA showed it to the milter."""

    sender: str = ""  # MAIL FROM without <>; "" for the null sender
    recipients: list[str] = field(default_factory=list)  # original RCPT TO addresses
    client_addr: str | None = None
    client_name: str | None = None  # the MTA's name for the client ("unknown": none)
    helo: str | None = None
    auth_authen: str | None = None  # SMTP AUTH login ({auth_authen}), None without
    made_by_postfix: bool = False  # not from an SMTP client: a bounce, or sendmail
    queue_id: str | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)  # kept within the cap
    body: bytearray = field(default_factory=bytearray)  # kept within the cap
    size: int = 0  # full size seen (headers + body), even past the cap
    truncated: bool = False

    def raw_message(self) -> bytes:
        parts = []
        for name, value in self.headers:
            if b"\n" in value:  # folded: every line end becomes CRLF
                value = _LINE_END.sub(b"\r\n", value)
            parts.append(name.encode("ascii", "replace") + b": " + value + b"\r\n")
        parts.append(b"\r\n")
        parts.append(self.body)
        return b"".join(parts)

    def first_header(self, name: str) -> bytes | None:
        lname = name.lower()
        for hname, value in self.headers:
            if hname.lower() == lname:
                return value
        return None


@dataclass
class Verdict:
    """What to do with the message."""

    status: str = "accept"  # accept | reject | tempfail | quarantine (held, see review)
    reply: tuple[str, str, str] | None = None  # (code, enhanced code, text)
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    new_subject: str | None = None  # replaces (or adds) Subject:
    remove_recipients: list[str] = field(default_factory=list)  # RCPT TO addresses to drop
    blocks: dict[int, Block] = field(default_factory=dict)  # alias id → the block refusing it
    scanned: bool = True
    result: ScanResult | None = None
    event_ids: list[int] = field(default_factory=list)  # when written at once (no writer)
    events_recorded: int = 0  # events written, or queued for the writer
    auth: AuthResults | None = None  # SPF/DKIM/DMARC/ARC of the incoming message
    remove_headers: list[tuple[str, int]] = field(default_factory=list)  # (name, occurrence)
    transform: Transform | None = None  # reverse-alias edits (aliasd.milter.replies)
    masking: Masking | None = None  # a DSN's real mailboxes shown as aliases

    def header(self, name: str) -> list[str]:
        """The values of ``name`` this verdict adds, at the bottom or at the top."""
        added = list(self.add_headers)
        if self.transform is not None:
            added += self.transform.insert_headers
        return [v for n, v in added if n.lower() == name.lower()]


class _Skip(Exception):
    """The message passes unscanned; ``str(exc)`` is the reason put in the header."""


def decode_header_text(raw: bytes | None) -> str | None:
    """A header value as readable text (RFC 2047 decoded), never raising on junk."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace")
    with contextlib.suppress(Exception):  # malformed encoded words: keep the raw text
        text = str(email.header.make_header(email.header.decode_header(text)))
    return " ".join(text.split())


def from_domain(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    for _name, addr in header_addresses(raw.decode("utf-8", "replace")):
        domain = domain_of(addr)
        if domain:
            return domain
    return None


def _header_safe(text: str, limit: int = 200) -> str:
    text = "".join(c if c.isprintable() and c.isascii() else "?" for c in text)
    return text[:limit]


def _fold(value: str) -> str:
    # rspamd folds X-Spamd-Result after each symbol; keeps lines short for MUAs.
    return value.replace("; ", ";\n\t")


class MailPath:
    """Shared by every milter connection of one process (thread-safe)."""

    # An alias deleted or created on the web applies to mail within this (seconds).
    alias_ttl: float = ALIAS_TTL

    def __init__(
        self,
        settings: Settings,
        database: Database,
        scanner=None,
        *,
        max_workers: int = 64,
        background_events: bool = False,
    ) -> None:
        self.settings = settings
        self.database = database
        self._scanner = scanner
        self._scanner_lock = threading.Lock()
        # A reverse alias disabled on the web applies to mail within alias_ttl, too.
        self.replies = ReplyPath(settings, database, facts_ttl=self.alias_ttl)
        # Blocks added on the web apply to the next message within a couple of seconds.
        self._blocklist = BlockListCache(database, ttl=2.0,
                                         max_staleness=max(settings.lookup_max_staleness, 30.0))
        # The milter records events in a writer thread (batched commits, off the SMTP
        # answer), started with the first message so each milter process has its own;
        # without one (tests, tools) each message is written before process returns.
        self._background_events = background_events
        self._per_process: dict[str, Any] = {}  # see per_process
        self._per_process_lock = threading.Lock()
        self._big_turn = threading.Lock()
        # Scans run here so a slow scan can be abandoned at the deadline.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="aliasd-scan"
        )

    def close(self) -> None:
        """Stop: events still queued are written first."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        for kept in list(self._per_process.values()):
            if hasattr(kept, "close"):
                kept.close()

    def flush_events(self, timeout: float = 10.0) -> bool:
        """Wait until the events of every message processed so far are committed."""
        writer = self._per_process.get("events")
        return writer.flush(timeout) if writer is not None else True

    def per_process(self, name: str, make: Callable[[], T]) -> T:
        """The object ``name`` of this milter process, made by ``make`` on first use:
        writer threads, caches. Closed (when it has ``close``) with the mail path, and
        made anew in a forked worker, since threads do not survive a fork."""
        kept = self._per_process.get(name)
        if kept is None:
            with self._per_process_lock:
                kept = self._per_process.get(name)
                if kept is None:
                    kept = self._per_process[name] = make()
        return kept

    def after_fork(self) -> None:
        """In a freshly forked milter process: threads do not survive a fork, so the
        pools and the writer start anew, and no database connection is shared."""
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._pool._max_workers, thread_name_prefix="aliasd-scan")
        self._per_process = {}
        self._per_process_lock = threading.Lock()
        self._scanner_lock = threading.Lock()
        self._big_turn = threading.Lock()

    def _event_writer(self) -> event_writer.EventWriter | None:
        if not self._background_events:
            return None
        return self.per_process("events", lambda: event_writer.EventWriter(
            self.database, self.settings, on_lost=self._events_lost))

    def _events_lost(self, count: int) -> None:
        """Events that never reached the database (hook for metrics)."""

    # --- the pieces ------------------------------------------------------------------
    def scanner(self):
        if self._scanner is None:
            with self._scanner_lock:
                if self._scanner is None:
                    from aliasd.scanner import build_scanner

                    self._scanner = build_scanner(self.settings, self.database)
        return self._scanner

    def aliases(self) -> AliasCache:
        """This process's alias lookup (answers kept ``ALIAS_TTL`` seconds)."""
        return self.per_process("aliases", lambda: AliasCache(self.alias_ttl))

    def _lookup(self, envelope: Envelope) -> list[events.AliasTarget]:
        try:
            return self.aliases().find(self.database, envelope.recipients,
                                       self.settings.recipient_delimiter)
        except Exception as exc:
            log.warning("alias lookup failed: %s", exc)
            raise _Skip("database unavailable") from exc

    def _scan(self, envelope: Envelope, targets: list[events.AliasTarget],
              raw: bytes | None = None, spf: SharedSpf | None = None) -> ScanResult:
        try:
            scanner = self.scanner()
        except Exception as exc:
            log.warning("scanner unavailable: %s", exc)
            raise _Skip(f"scanner unavailable: {type(exc).__name__}") from exc
        request = ScanRequest(
            message=raw if raw is not None else envelope.raw_message(),
            envelope_from=envelope.sender,
            recipients=list(envelope.recipients),
            client_addr=envelope.client_addr,
            client_name=envelope.client_name,
            helo=envelope.helo,
            queue_id=envelope.queue_id,
            alias_site=next((t.site for t in targets if t.site), None),
            truncated=envelope.truncated,
            owner_id=targets[0].owner_id if len({t.owner_id for t in targets}) == 1 else None,
            spf=spf,
        )
        try:
            result = scanner.scan(request)
        except Exception as exc:
            log.warning("scan failed: %s", exc)
            raise _Skip(f"scanner error: {type(exc).__name__}") from exc
        if result.is_skipped:
            raise _Skip("scanner skipped the message")
        return result

    def _blocks(self, envelope: Envelope, targets: list[events.AliasTarget]) -> dict[int, Block]:
        """Each alias recipient's block of this sender, if any (core decides)."""
        try:
            blocklist = self._blocklist.get()
        except Exception as exc:  # never refuse mail on a guess
            log.warning("block list unavailable: %s", exc)
            raise _Skip("block list unavailable") from exc
        sender = Sender.of_message(envelope.sender, envelope.headers)
        server = server_block(blocklist, sender)  # the same for every recipient: judged once
        decided = {}
        for target in targets:
            block = server or personal_block(blocklist, sender, owner_id=target.owner_id,
                                             alias_id=target.id)
            if block is not None:
                decided[target.id] = block
        return decided

    def _lookup_and_scan(
        self, envelope: Envelope, found: list[events.AliasTarget], blocks: dict[int, Block],
        raw: bytes | None = None, spf: SharedSpf | None = None,
    ) -> ScanResult | None:
        # ``found`` and ``blocks`` are filled before scanning, so the caller knows the
        # aliases (to name them and record the event) and the blocks even when the scan
        # then fails or overruns.
        found.extend(self._lookup(envelope))
        if not found:
            return None
        blocks.update(self._blocks(envelope, found))
        return self._scan(envelope, found, raw, spf)

    # --- the whole message -----------------------------------------------------------
    def process(self, envelope: Envelope) -> Verdict:
        if envelope.size < BIG_MESSAGE:
            return self._process(envelope)
        # Large messages take turns: their parsing, hashing and signing hold the GIL,
        # and several at once would starve every small message of this process. The
        # wait is bounded so a queue of them never outlasts Postfix's patience.
        got = self._big_turn.acquire(timeout=self.settings.milter_timeout / 2)
        try:
            return self._process(envelope)
        finally:
            if got:
                self._big_turn.release()

    def _process(self, envelope: Envelope) -> Verdict:
        if envelope.made_by_postfix:
            # Mail no SMTP client sent reaches the milter only for Postfix's own bounces
            # (non_smtpd_milters): a released message that pickup requeues, and mail of
            # the sendmail command, pass untouched, as before the milter saw them; a
            # released message scanned again could be held again.
            verdict = Verdict(scanned=False)
            if envelope.sender == "":
                verdict.masking = self._hidden_mailboxes(envelope)
            return verdict
        return self._process_message(envelope)

    def _hidden_mailboxes(self, envelope: Envelope) -> Masking | None:
        """Postfix's own delivery status notification about mail aliasd forwarded names
        the alias, not the mailbox (it reaches the milter through non_smtpd_milters).
        Only Postfix's: one arriving over SMTP could be forged to ask whether a guessed
        address is an alias's mailbox. Trouble leaves the DSN as it is: a bounce is
        never lost."""
        def lookup(addresses: list[str]) -> dict[str, set[str]]:
            with self.database.reading() as connection:
                return bounce_privacy.alias_mailboxes(connection, addresses,
                                                      self.settings.recipient_delimiter)
        try:
            masking = bounce_privacy.hide_mailboxes(envelope.sender, envelope.headers,
                                                    bytes(envelope.body), lookup,
                                                    truncated=envelope.truncated)
        except Exception:
            log.exception("queue id %s: could not hide the mailboxes in a DSN",
                          envelope.queue_id)
            return None
        return masking or None

    def _process_message(self, envelope: Envelope) -> Verdict:
        outgoing = self.replies.outgoing(envelope)  # the owner writing as an alias
        if outgoing is not None:
            return Verdict(status=outgoing.status, reply=outgoing.reply, scanned=False,
                           transform=outgoing.transform)
        learning = learn_by_mail.handle(self, envelope)  # spam@ / ham@ of our domains
        if learning is not None:
            return learning
        timeout = self.settings.milter_timeout
        skip_reason: str | None = None
        result: ScanResult | None = None
        found: list[events.AliasTarget] = []
        blocks: dict[int, Block] = {}
        raw = envelope.raw_message()  # made once: checks, scan and review share it
        spf = authstep.shared_spf(self.settings, envelope)  # evaluated once for both
        auth_future = authstep.start(self.settings, envelope, raw, spf)
        future = self._pool.submit(self._lookup_and_scan, envelope, found, blocks, raw, spf)
        try:
            result = future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            skip_reason = f"timeout after {timeout:g}s"
            log.warning("queue id %s: %s", envelope.queue_id, skip_reason)
        except _Skip as exc:
            skip_reason = str(exc)
        except Exception as exc:  # never let a bug bounce mail
            log.exception("milter processing failed")
            skip_reason = f"internal error: {type(exc).__name__}"
        targets = list(found)

        verdict = Verdict()
        if skip_reason is not None:
            verdict.scanned = False
            verdict.add_headers.append((HEADER_SCAN, f"skipped ({_header_safe(skip_reason)})"))
        elif not targets:
            # Not addressed to any alias (outbound or postmaster mail): not ours to judge.
            verdict.scanned = False
            return verdict
        else:
            assert result is not None
            verdict.result = result
            self._apply_result(verdict, envelope, result)
        verdict.blocks = dict(blocks)
        if verdict.blocks:
            self._apply_blocks(verdict, envelope, targets)

        if self._only_aliases(envelope, targets):
            verdict.add_headers.extend(self._alias_headers(targets))
            review.before_record(self, verdict, envelope, targets)
            if verdict.status == "accept" and len(targets) == 1 and not verdict.blocks:
                verdict.transform = self.replies.forwarded(envelope, targets[0],
                                                           verdict.new_subject)
        # Sealed as it will leave: with the reverse alias in Reply-To:/From: already.
        sealed = transformed_envelope(envelope, verdict.transform)
        verdict.auth = authstep.finish(self.settings, auth_future, sealed, verdict, targets)
        if targets:
            self._record(envelope, targets, verdict)
            review.after_record(self, verdict, envelope, targets, raw)
        return verdict

    def _apply_result(self, verdict: Verdict, envelope: Envelope, result: ScanResult) -> None:
        settings = self.settings
        verdict.add_headers.append((HEADER_RESULT, _fold(result.spamd_result_header())))
        if result.is_spam:
            verdict.add_headers.append((HEADER_SPAM, "Yes"))
        if envelope.truncated:
            limit = settings.max_scan_size
            verdict.add_headers.append(
                (HEADER_SCAN, f"truncated (scanned the first {limit} of {envelope.size} bytes)")
            )
        action = result.action
        if action == Action.REJECT:
            verdict.status = "reject"
            verdict.reply = (
                "550",
                "5.7.1",
                f"Message rejected as spam (score {result.score:.2f} / "
                f"{result.required_score:.2f})",
            )
        elif action == Action.SOFT_REJECT:
            verdict.status = "tempfail"
            verdict.reply = ("451", "4.7.1", "Message deferred by the spam filter; try again later")
        elif action == Action.REWRITE_SUBJECT:
            # Prefix the raw value: RFC 2047 encoded words stay encoded and valid.
            raw = envelope.first_header("Subject") or b""
            subject = raw.decode("utf-8", "replace").strip()
            prefix = settings.subject_prefix
            if not subject.startswith(prefix):
                verdict.new_subject = f"{prefix} {subject}".strip()

    def _apply_blocks(self, verdict: Verdict, envelope: Envelope,
                      targets: list[events.AliasTarget]) -> None:
        """A block is a decision, not a score: a server-wide rule refuses the message
        whatever the scanner said. A recipient's own block refuses it for that alias:
        the whole message (550) when every recipient has blocked the sender, otherwise
        only the blocking aliases' copies are dropped and the others still get it."""
        blocks = verdict.blocks
        server = next((b for b in blocks.values() if b.server_wide), None)
        if server is not None or (len(blocks) == len(targets)
                                  and self._only_aliases(envelope, targets)):
            block = server or next(iter(blocks.values()))
            verdict.status = "reject"
            verdict.reply = ("550", "5.7.1", _header_safe(block.reject_text, 400))
            verdict.new_subject = None
            if server is not None:  # it refuses the message for every recipient
                verdict.blocks = {t.id: server for t in targets}
            return
        blocked_addresses = {t.address for t in targets if t.id in blocks}
        for rcpt in envelope.recipients:
            if self._alias_of(rcpt, blocked_addresses):
                verdict.remove_recipients.append(rcpt)

    def _alias_of(self, rcpt: str, addresses: set[str]) -> bool:
        try:
            exact = normalize_address(rcpt)
            base = normalize_address(rcpt, self.settings.recipient_delimiter)
        except AddressError:
            return False
        return exact in addresses or base in addresses

    def _only_aliases(self, envelope: Envelope, targets: list[events.AliasTarget]) -> bool:
        """True when every recipient is one of ``targets``: a recipient that is not an
        alias gets the same headers and must not learn the aliases (think Bcc)."""
        known = {t.address for t in targets}
        return all(self._alias_of(rcpt, known) for rcpt in envelope.recipients)

    def _alias_headers(self, targets: list[events.AliasTarget]) -> list[tuple[str, str]]:
        # One message reaches every recipient with the same headers; naming one owner's
        # aliases to another owner would leak them (think Bcc), so only name them when
        # all belong to one owner.
        if len({t.owner_id for t in targets}) != 1:
            return []
        return [
            (HEADER_ALIAS, f"{t.address} (site {t.site})" if t.site else t.address)
            for t in targets
        ]

    def _record(self, envelope: Envelope, targets: list[events.AliasTarget], verdict: Verdict) -> None:
        result = verdict.result
        if result is not None:
            outcome = events.AppliedVerdict(
                score=result.score,
                action=str(Action.REJECT) if verdict.status == "reject"
                else review.QUARANTINE if verdict.status == review.QUARANTINE
                else str(result.action),
                is_spam=result.is_spam,
                symbols=result.spamd_result_header().partition("; ")[2],
                rejected=verdict.status in ("reject", "tempfail"),
                held=verdict.status == review.QUARANTINE,
            )
        elif verdict.status == "reject":  # refused by a block while the scan was skipped
            outcome = events.AppliedVerdict(score=0.0, action=str(Action.REJECT), is_spam=False,
                                     rejected=True)
        else:
            outcome = events.AppliedVerdict(score=0.0, action=events.ACTION_SKIPPED, is_spam=False)
        facts = events.MessageFacts(
            envelope_sender=envelope.sender,
            client_addr=envelope.client_addr,
            helo=envelope.helo,
            from_domain=from_domain(envelope.first_header("From")),
            subject=decode_header_text(envelope.first_header("Subject")),
            queue_id=envelope.queue_id,
            size=envelope.size,
            at=utcnow(),  # when it arrived, not when the writer got to it
            **authstep.event_facts(verdict.auth),
        )
        # Aliases whose owner blocked the sender: recorded as refused, with the block named.
        kept = tuple(t for t in targets if t.id not in verdict.blocks)
        by_block: dict[Block, list[events.AliasTarget]] = {}
        for target in targets:
            if target.id in verdict.blocks:
                by_block.setdefault(verdict.blocks[target.id], []).append(target)
        parts: list[tuple[tuple[events.AliasTarget, ...], events.AppliedVerdict]] = []
        if kept:
            parts.append((kept, outcome))
        for block, blocked_targets in by_block.items():
            refused = dataclasses.replace(
                outcome, action=str(Action.REJECT), rejected=True,
                symbols="; ".join(filter(None, [
                    outcome.symbols, f"SENDER_BLOCKED(0.00)[{block.scope} {block.id}]"])),
            )  # fmt: skip
            parts.append((tuple(blocked_targets), refused))
        record = event_writer.Record(
            parts=tuple(parts), facts=facts, queue_id=envelope.queue_id,
            block_hits=tuple(sorted({b.id for b in verdict.blocks.values() if not b.server_wide})),
            forwarded_reverse_id=verdict.transform.forwarded_reverse_id
            if verdict.transform is not None and verdict.status == "accept" else None,
        )
        writer = self._event_writer()
        if writer is not None:  # off the SMTP answer: committed in batches
            if writer.submit(record):
                verdict.events_recorded = record.event_count
            return
        try:
            verdict.event_ids = event_writer.write_records(self.database, self.settings, [record])
            verdict.events_recorded = len(verdict.event_ids)
        except Exception:  # the verdict stands; only the statistics miss this message
            log.exception("could not record mail events for queue id %s", envelope.queue_id)
