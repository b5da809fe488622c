"""Every DNS lookup aliasd makes (DKIM keys, SPF, DMARC, ``aliasd doctor``) goes through
one resolver: the system's, or the address in the ``dns_resolver`` setting
(``host`` or ``host:port``), which is how tests reach their own DNS server.

Answers are kept in one process-wide cache for their TTL: the same senders' SPF, DMARC
and DKIM records come round again and again, and a hit costs a dictionary lookup instead
of dnspython's resolution machinery. Negative answers (no such name, no record of the
type) are kept for the TTL their SOA gives (RFC 2308), and not at all without one."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from aliasd.config import Settings

DEFAULT_TIMEOUT = 5.0


class DnsTemporaryError(Exception):
    """The resolver did not answer (timeout, SERVFAIL, unreachable): try again later."""


def parse_resolver_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"`` → ("127.0.0.1", 5353); ``"::1"`` and ``"[::1]:53"`` work too."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest.lstrip(":") or 53)
        return host, port
    if text.count(":") == 1:
        host, _, port_text = text.partition(":")
        return host, int(port_text)
    return text, 53


# Bounds: answers are kept at most a day (RFC 2181 allows more; nothing we look up
# changes that rarely), negative ones at most 15 minutes, and the least recently used
# go first past MAX_ANSWERS (~2 KB each at worst: a 4096-bit DKIM key).
MAX_ANSWERS = 20_000
MAX_TTL = 86_400
MAX_NEGATIVE_TTL = 900


class AnswerCache:
    """(resolver, name, type) → records until their TTL runs out; size-bounded LRU,
    safe to share between threads."""

    def __init__(self, size: int = MAX_ANSWERS) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, str, str], tuple[float, list]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str], now: float) -> list | None:
        """The records (possibly []) while fresh, None when not cached."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: tuple[str, str, str], records: list, ttl: float, now: float) -> None:
        if ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (now + ttl, records)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


answers = AnswerCache()


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308 section 5: the SOA record's TTL, at most its MINIMUM field; no SOA in
    the authority section, no caching."""
    if response is None:
        return 0
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return min(rrset.ttl, rrset[0].minimum, MAX_NEGATIVE_TTL)
    return 0


def _positive_ttl(response: dns.message.Message) -> float:
    """The smallest TTL along the answer (a CNAME chain included)."""
    ttls = [rrset.ttl for rrset in response.answer]
    return min(min(ttls), MAX_TTL) if ttls else 0


_cache: dict[tuple[str, float], dns.resolver.Resolver] = {}
_cache_lock = threading.Lock()


def resolver_for(settings: Settings, timeout: float = DEFAULT_TIMEOUT) -> dns.resolver.Resolver:
    """A dnspython resolver for these settings (kept per address; resolvers are
    thread-safe for queries)."""
    key = (settings.dns_resolver, timeout)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        if settings.dns_resolver:
            host, port = parse_resolver_address(settings.dns_resolver)
            res = dns.resolver.Resolver(configure=False)
            res.nameservers = [host]
            res.port = port
        else:
            try:
                res = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                res = dns.resolver.Resolver(configure=False)
                res.nameservers = ["127.0.0.1"]
        res.cache = None  # answers are kept in ``answers``, with negative ones
        res.timeout = min(timeout, 2.0)
        res.lifetime = timeout
        # A test server or a local recursor answers both; without EDNS big TXT records
        # (2048-bit keys) come back truncated and are asked again over TCP.
        res.use_edns(0, 0, 1232)
        _cache[key] = res
        return res


def query(settings: Settings, name: str, rtype: str,
          timeout: float | None = None) -> list:  # fmt: skip
    """Records of one type; [] when the name or type does not exist. Raises
    DnsTemporaryError when no answer could be had."""
    key = (settings.dns_resolver, name.lower().rstrip("."), rtype.upper())
    now = time.monotonic()
    cached = answers.get(key, now)
    if cached is not None:
        return list(cached)
    res = resolver_for(settings, timeout or settings.dns_timeout)
    try:
        answer = res.resolve(name, rtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN as exc:
        try:
            response = exc.response(exc.kwargs["qnames"][0])
        except (KeyError, IndexError, TypeError):
            response = None
        answers.put(key, [], _negative_ttl(response), now)
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, OSError) as exc:
        raise DnsTemporaryError(f"{rtype} {name}: {exc.__class__.__name__}: {exc}") from exc
    except dns.exception.DNSException as exc:
        raise DnsTemporaryError(f"{rtype} {name}: {exc}") from exc
    if answer.rrset is None:
        answers.put(key, [], _negative_ttl(answer.response), now)
        return []
    records = list(answer.rrset)
    answers.put(key, records, _positive_ttl(answer.response), now)
    return list(records)


def txt(settings: Settings, name: str, timeout: float | None = None) -> list[bytes]:
    """Each TXT record as one byte string (its character-strings joined)."""
    return [b"".join(r.strings) for r in query(settings, name, "TXT", timeout)]


class DkimDns:
    """dkimpy's ``dnsfunc``: the first TXT record at a name, or None. A lookup that got
    no answer raises dkimpy's DnsTimeoutError and is remembered, so the caller can
    report ``temperror`` instead of ``fail``."""

    def __init__(self, settings: Settings, memo: dict | None = None) -> None:
        self.settings = settings
        self.timeout = settings.dns_timeout
        self.temporary_failure: str | None = None
        self.missing = False  # a lookup found no record at all
        # answers already had while checking this message (its ARC-Message-Signature
        # and ARC-Seal usually name the same key): asked once even with a TTL of 0
        self.memo = memo if memo is not None else {}

    def __call__(self, name: bytes | str, timeout: float = DEFAULT_TIMEOUT) -> bytes | None:
        import dkim

        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            records = self.memo.get(text)
            if records is None:
                records = txt(self.settings, text, min(timeout, self.timeout))
                self.memo[text] = records
        except DnsTemporaryError as exc:
            self.temporary_failure = str(exc)
            raise dkim.DnsTimeoutError(str(exc)) from exc
        except (ValueError, dns.name.NameTooLong, dns.name.LabelTooLong):
            return None
        self.missing = self.missing or not records
        return records[0] if records else None


def spf_lookup(settings: Settings) -> Callable[..., list]:
    """A lookup in pyspf's ``DNSLookup`` shape (name, qtype, strict, timeout) →
    [((name, qtype), value), ...] over our resolver."""
    import spf as pyspf

    def lookup(name, qtype, strict=True, timeout=None):  # noqa: ARG001 - pyspf's shape
        try:
            records = query(settings, name, qtype, min(timeout or 30, settings.dns_timeout))
        except DnsTemporaryError as exc:
            raise pyspf.TempError(f"DNS {exc}") from exc
        except (ValueError, dns.exception.DNSException):
            return []
        out = []
        for r in records:
            if qtype in ("TXT", "SPF"):
                value = list(r.strings)
            elif qtype in ("A", "AAAA"):
                value = r.address
            elif qtype == "MX":
                value = (r.preference, r.exchange.to_text(omit_final_dot=True))
            elif qtype == "PTR" or qtype == "CNAME":
                value = r.target.to_text(omit_final_dot=True)
            else:
                value = r.to_text()
            out.append(((name, qtype), value))
        return out

    return lookup
