"""The milter's Prometheus metrics: messages by action, scan and processing time,
events written, faults. :class:`MeasuredMailPath` observes MailPath's verdicts from
outside, so the mail path itself stays free of them."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

from aliasd.milter.processing import HEADER_SCAN, Envelope, MailPath, Verdict

MESSAGES = Counter(
    "aliasd_milter_messages",
    "Messages seen at end of data, by scanner action (no action, add header, rewrite "
    "subject, greylist, soft reject, reject), 'skipped' when they passed unscanned after a "
    "fault, 'not_alias' when no recipient is an alias.",
    ["action"],
)
SCAN_SECONDS = Histogram(
    "aliasd_milter_scan_seconds", "Time the scanner took per message.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PROCESS_SECONDS = Histogram(
    "aliasd_milter_process_seconds",
    "Time from end of data to the verdict (alias lookup, scan, event records).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
EVENTS = Counter(
    "aliasd_milter_events_written",
    "Mail events recorded (one per alias reached), counted when handed to the writer.",
)
EVENTS_LOST = Counter(
    "aliasd_milter_events_lost",
    "Mail events the writer could not commit (database down, queue full): the messages "
    "passed, only their statistics are missing.",
)
FAULTS = Counter(
    "aliasd_milter_faults",
    "Messages passed unscanned because of a fault, by kind (timeout, database, scanner, "
    "internal).",
    ["kind"],
)
FAULT_KINDS = ("timeout", "database", "scanner", "internal")
FORWARDED_AUTH = Counter(
    "aliasd_milter_forwarded_auth",
    "Messages forwarded to aliases, by the DMARC policy of their From: domain (reject, "
    "quarantine, none, or 'absent') and whether a DKIM signature verified on arrival "
    "(aliasd adds headers only, so one that verified here still verifies downstream).",
    ["dmarc_policy", "dkim"],
)


class TimedScanner:
    """The scanner, with each scan timed."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def scan(self, request):
        started = time.perf_counter()
        try:
            return self.inner.scan(request)
        finally:
            SCAN_SECONDS.observe(time.perf_counter() - started)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def skip_reason(verdict: Verdict) -> str | None:
    """The reason of 'X-Aliasd-Scan: skipped (reason)', when the message passed unscanned."""
    for value in verdict.header(HEADER_SCAN):
        if value.startswith("skipped (") and value.endswith(")"):
            return value[len("skipped ("):-1]
    return None


class MeasuredMailPath(MailPath):
    _timed: TimedScanner | None = None

    def scanner(self):
        inner = super().scanner()
        timed = self._timed
        if timed is None or timed.inner is not inner:
            timed = self._timed = TimedScanner(inner)
        return timed

    def _events_lost(self, count: int) -> None:
        EVENTS_LOST.inc(count)

    def process(self, envelope: Envelope) -> Verdict:
        started = time.perf_counter()
        try:
            verdict = super().process(envelope)
        except Exception:
            FAULTS.labels("internal").inc()
            raise
        PROCESS_SECONDS.observe(time.perf_counter() - started)
        reason = skip_reason(verdict)
        if verdict.result is not None:
            action = verdict.result.action.value
        elif reason is not None:
            action = "skipped"
            word = reason.split()[0] if reason.split() else ""
            FAULTS.labels(word if word in FAULT_KINDS else "internal").inc()
        else:
            action = "not_alias"
        MESSAGES.labels(action).inc()
        if verdict.events_recorded:
            EVENTS.inc(verdict.events_recorded)
        if verdict.auth is not None and verdict.status == "accept" and verdict.events_recorded:
            auth = verdict.auth
            FORWARDED_AUTH.labels(auth.dmarc.policy or "absent", auth.dkim_summary).inc()
        return verdict
