"""What the milter does with one message, without any milter protocol in sight:
look up the aliases, scan within the time budget, decide the headers and the SMTP
reply, record the events. The pymilter adapter (``aliasd.milter.adapter``) only
collects an :class:`Envelope` and applies the :class:`Verdict`.

Faults never lose mail: a database or scanner failure, or a scan that overruns
``settings.milter_timeout``, gives an "accept" verdict with an ``X-Aliasd-Scan:
skipped (reason)`` header.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import email.header
import email.utils
import logging
import re
import threading
from dataclasses import dataclass, field

from aliasd.config import Settings
from aliasd.core import events
from aliasd.core.addresses import AddressError, domain_of, normalize_address
from aliasd.db import Database
from aliasd.scanner.result import Action, ScanRequest, ScanResult

log = logging.getLogger(__name__)

HEADER_ALIAS = "X-Aliasd-Alias"
HEADER_SCAN = "X-Aliasd-Scan"
HEADER_RESULT = "X-Spamd-Result"
HEADER_SPAM = "X-Spam"
# Headers aliasd vouches for: copies arriving from outside are removed so nobody can
# forge "not spam" (or a different alias) into a user's filters.
OWN_HEADERS = (HEADER_ALIAS, HEADER_SCAN, HEADER_RESULT, HEADER_SPAM)


@dataclass
class Envelope:
    """One message as the MTA showed it to the milter."""

    sender: str = ""  # MAIL FROM without <>; "" for the null sender
    recipients: list[str] = field(default_factory=list)  # original RCPT TO addresses
    client_addr: str | None = None
    helo: str | None = None
    queue_id: str | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)  # kept within the cap
    body: bytearray = field(default_factory=bytearray)  # kept within the cap
    size: int = 0  # full size seen (headers + body), even past the cap
    truncated: bool = False

    def raw_message(self) -> bytes:
        parts = []
        for name, value in self.headers:
            value = re.sub(rb"\r?\n", b"\r\n", value)
            parts.append(name.encode("ascii", "replace") + b": " + value + b"\r\n")
        parts.append(b"\r\n")
        parts.append(bytes(self.body))
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

    status: str = "accept"  # accept | reject | tempfail
    reply: tuple[str, str, str] | None = None  # (code, enhanced code, text)
    add_headers: list[tuple[str, str]] = field(default_factory=list)
    new_subject: str | None = None  # replaces (or adds) Subject:
    scanned: bool = True
    result: ScanResult | None = None
    event_ids: list[int] = field(default_factory=list)

    def header(self, name: str) -> list[str]:
        return [v for n, v in self.add_headers if n.lower() == name.lower()]


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
    try:
        pairs = email.utils.getaddresses([raw.decode("utf-8", "replace")])
    except Exception:
        return None
    for _name, addr in pairs:
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

    def __init__(
        self,
        settings: Settings,
        database: Database,
        scanner=None,
        *,
        max_workers: int = 64,
    ) -> None:
        self.settings = settings
        self.database = database
        self._scanner = scanner
        self._scanner_lock = threading.Lock()
        # Scans run here so a slow scan can be abandoned at the deadline.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="aliasd-scan"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- the pieces ------------------------------------------------------------------
    def scanner(self):
        if self._scanner is None:
            with self._scanner_lock:
                if self._scanner is None:
                    from aliasd.scanner import build_scanner

                    self._scanner = build_scanner(self.settings, self.database)
        return self._scanner

    def _lookup(self, envelope: Envelope) -> list[events.AliasTarget]:
        try:
            with self.database.session() as session:
                return events.find_aliases(
                    session, envelope.recipients, self.settings.recipient_delimiter
                )
        except Exception as exc:
            log.warning("alias lookup failed: %s", exc)
            raise _Skip("database unavailable") from exc

    def _scan(self, envelope: Envelope, targets: list[events.AliasTarget]) -> ScanResult:
        try:
            scanner = self.scanner()
        except Exception as exc:
            log.warning("scanner unavailable: %s", exc)
            raise _Skip(f"scanner unavailable: {type(exc).__name__}") from exc
        request = ScanRequest(
            message=envelope.raw_message(),
            envelope_from=envelope.sender,
            recipients=list(envelope.recipients),
            client_addr=envelope.client_addr,
            helo=envelope.helo,
            queue_id=envelope.queue_id,
            alias_site=next((t.site for t in targets if t.site), None),
            truncated=envelope.truncated,
        )
        try:
            result = scanner.scan(request)
        except Exception as exc:
            log.warning("scan failed: %s", exc)
            raise _Skip(f"scanner error: {type(exc).__name__}") from exc
        if result.is_skipped:
            raise _Skip("scanner skipped the message")
        return result

    def _lookup_and_scan(
        self, envelope: Envelope, found: list[events.AliasTarget]
    ) -> ScanResult | None:
        # ``found`` is filled before scanning, so the caller knows the aliases (to name
        # them and record the event) even when the scan then fails or overruns.
        found.extend(self._lookup(envelope))
        if not found:
            return None
        return self._scan(envelope, found)

    # --- the whole message -----------------------------------------------------------
    def process(self, envelope: Envelope) -> Verdict:
        timeout = self.settings.milter_timeout
        skip_reason: str | None = None
        result: ScanResult | None = None
        found: list[events.AliasTarget] = []
        future = self._pool.submit(self._lookup_and_scan, envelope, found)
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

        if self._only_aliases(envelope, targets):
            verdict.add_headers.extend(self._alias_headers(targets))
        if targets:
            self._record(envelope, targets, verdict)
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

    def _only_aliases(self, envelope: Envelope, targets: list[events.AliasTarget]) -> bool:
        """True when every recipient is one of ``targets``: a recipient that is not an
        alias gets the same headers and must not learn the aliases (think Bcc)."""
        known = {t.address for t in targets}
        for rcpt in envelope.recipients:
            try:
                exact = normalize_address(rcpt)
                base = normalize_address(rcpt, self.settings.recipient_delimiter)
            except AddressError:
                return False
            if exact not in known and base not in known:
                return False
        return True

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
            outcome = events.Outcome(
                score=result.score,
                action=str(result.action),
                is_spam=result.is_spam,
                symbols=result.spamd_result_header().partition("; ")[2],
                rejected=verdict.status != "accept",
            )
        else:
            outcome = events.Outcome(score=0.0, action=events.ACTION_SKIPPED, is_spam=False)
        facts = events.MessageFacts(
            envelope_sender=envelope.sender,
            client_addr=envelope.client_addr,
            helo=envelope.helo,
            from_domain=from_domain(envelope.first_header("From")),
            subject=decode_header_text(envelope.first_header("Subject")),
            queue_id=envelope.queue_id,
            size=envelope.size,
        )
        try:
            verdict.event_ids = events.record_and_notify(
                self.database, self.settings, targets, facts, outcome
            )
        except Exception:  # the verdict stands; only the statistics miss this message
            log.exception("could not record mail events for queue id %s", envelope.queue_id)
