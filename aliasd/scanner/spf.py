"""SPF check of the envelope sender with pyspf. DNS answers can be injected (tests run
without network) through a per-thread lookup function: pyspf resolves names through its
module-level ``DNSLookup``, which we route through a thread-local override."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import spf as pyspf

from aliasd.scanner.result import Symbol
from aliasd.scanner.rules import sym

# (name, qtype, strict, timeout) -> [((name, qtype), value), ...] as pyspf's DNSLookup
DnsLookup = Callable[..., list]

_default_lookup = pyspf.DNSLookup
_local = threading.local()


# pyspf checks domain names with a regex that is quadratic in the length of a label
# (``[0-9a-z]*[a-z][0-9a-z]*``: 0.6 s for 2,000 characters, 6 s for 8,000). A label is at
# most 63 characters and a name 253, so longer input is malformed anyway: names from the
# envelope are refused before pyspf sees them (RFC 7208 4.3: "none"), and a TXT record
# with an over-long term is dropped from the DNS answer (SPF records fit in ~450 bytes).
MAX_DOMAIN = 253
MAX_LABEL = 63
MAX_SPF_TERM = 512


def _text_of(value) -> bytes:
    if isinstance(value, list | tuple):
        return b"".join(v if isinstance(v, bytes) else str(v).encode() for v in value)
    return value if isinstance(value, bytes) else str(value).encode()


def _sane_answer(answer) -> bool:
    try:
        (_name, qtype), value = answer
    except (TypeError, ValueError):
        return True
    if qtype not in ("TXT", "SPF"):
        return True
    return all(len(term) <= MAX_SPF_TERM for term in _text_of(value).split())


def _dispatch(name, qtype, *args, **kwargs):
    lookup = getattr(_local, "lookup", None) or _default_lookup
    answers = lookup(name, qtype, *args, **kwargs)
    return [a for a in answers if _sane_answer(a)]


def valid_domain(domain: str) -> bool:
    """Length limits of a DNS name (RFC 1035): what pyspf may be given."""
    labels = domain.rstrip(".").split(".")
    return len(domain) <= MAX_DOMAIN and all(len(label) <= MAX_LABEL for label in labels)


pyspf.DNSLookup = _dispatch

_RESULT_SYMBOLS = {
    "pass": "R_SPF_ALLOW",
    "fail": "R_SPF_FAIL",
    "softfail": "R_SPF_SOFTFAIL",
    "neutral": "R_SPF_NEUTRAL",
    "none": "R_SPF_NA",
    "temperror": "R_SPF_DNSFAIL",
    "permerror": "R_SPF_PERMFAIL",
}


def zone_lookup(records: dict[tuple[str, str], list]) -> DnsLookup:
    """A resolver stub over fixed records: ``{("example.com", "TXT"): ["v=spf1 -all"],
    ("mx.example.com", "A"): ["192.0.2.1"]}``; anything else does not exist."""

    def lookup(name, qtype, *_args, **_kwargs):
        values = records.get((name.lower().rstrip("."), qtype), [])
        out = []
        for value in values:
            if qtype in ("TXT", "SPF") and isinstance(value, str):
                value = [value.encode()]
            out.append(((name, qtype), value))
        return out

    return lookup


def check_spf(
    client_addr: str | None,
    envelope_from: str,
    helo: str | None,
    *,
    lookup: DnsLookup | None = None,
    timeout: float = 5.0,
) -> Symbol | None:
    """One R_SPF_* symbol, or None when there is no client address to check."""
    if not client_addr:
        return None
    sender = envelope_from.strip("<>") if envelope_from else ""
    domain = sender.rpartition("@")[2] if "@" in sender else (helo or "")
    if not valid_domain(domain) or not valid_domain(helo or "unknown"):
        return sym("R_SPF_NA", domain[:60], "malformed domain name")
    _local.lookup = lookup
    try:
        result, explanation = pyspf.check2(
            i=client_addr, s=sender, h=helo or "unknown", timeout=timeout, querytime=timeout
        )
    except Exception as exc:  # noqa: BLE001 - a broken lookup is a DNS failure, not a crash
        result, explanation = "temperror", str(exc)
    finally:
        _local.lookup = None
    name = _RESULT_SYMBOLS.get(str(result).lower(), "R_SPF_PERMFAIL")
    return sym(name, domain, str(explanation)[:80]) if explanation else sym(name, domain)


@dataclass
class SharedSpf:
    """One message's SPF, evaluated once for everyone who asks: the mail-auth checks and
    the bundled scanner's R_SPF_* symbol ask the same question of the same resolver.
    Each caller gives its own timeout, as when it checked alone; another timeout is
    another evaluation (with the defaults both are 5 s). Thread-safe: the checks and
    the scan run in threads of their own, and the one asking second waits for the
    first one's answer instead of asking DNS again."""

    client_addr: str | None
    envelope_from: str
    helo: str | None
    lookup: DnsLookup | None = None
    _results: dict[float, Symbol | None] = field(default_factory=dict, repr=False)
    _locks: dict[float, threading.Lock] = field(default_factory=dict, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, timeout: float = 5.0) -> Symbol | None:
        with self._guard:
            lock = self._locks.setdefault(timeout, threading.Lock())
        with lock:
            if timeout not in self._results:
                self._results[timeout] = check_spf(self.client_addr, self.envelope_from,
                                                   self.helo, lookup=self.lookup,
                                                   timeout=timeout)  # fmt: skip
            return self._results[timeout]
