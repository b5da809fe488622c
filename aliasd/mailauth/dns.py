"""Every DNS lookup aliasd makes (DKIM keys, SPF, DMARC, ``aliasd doctor``) goes through
one resolver: the system's, or the address in the ``dns_resolver`` setting
(``host`` or ``host:port``), which is how tests reach their own DNS server."""

from __future__ import annotations

import threading
from collections.abc import Callable

import dns.exception
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
        # Answers (and NXDOMAIN) are kept for their TTL: the same senders' SPF, DMARC and
        # DKIM records come round again and again.
        res.cache = dns.resolver.LRUCache(20_000)
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
    res = resolver_for(settings, timeout or settings.dns_timeout)
    try:
        answer = res.resolve(name, rtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, OSError) as exc:
        raise DnsTemporaryError(f"{rtype} {name}: {exc.__class__.__name__}: {exc}") from exc
    except dns.exception.DNSException as exc:
        raise DnsTemporaryError(f"{rtype} {name}: {exc}") from exc
    return list(answer.rrset) if answer.rrset is not None else []


def txt(settings: Settings, name: str, timeout: float | None = None) -> list[bytes]:
    """Each TXT record as one byte string (its character-strings joined)."""
    return [b"".join(r.strings) for r in query(settings, name, "TXT", timeout)]


class DkimDns:
    """dkimpy's ``dnsfunc``: the first TXT record at a name, or None. A lookup that got
    no answer raises dkimpy's DnsTimeoutError and is remembered, so the caller can
    report ``temperror`` instead of ``fail``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout = settings.dns_timeout
        self.temporary_failure: str | None = None
        self.missing = False  # a lookup found no record at all

    def __call__(self, name: bytes | str, timeout: float = DEFAULT_TIMEOUT) -> bytes | None:
        import dkim

        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        try:
            records = txt(self.settings, text, min(timeout, self.timeout))
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
