"""Parsing, normalising and validating mail addresses, domains and site names.

Everything aliasd stores or compares goes through here: lower case, IDN domains in
their ASCII (``xn--``) form, recipient-delimiter extensions stripped where asked."""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna
from publicsuffixlist import PublicSuffixList

MAX_LOCAL = 64
MAX_DOMAIN = 253
MAX_ADDRESS = 320

# Characters a local part may never contain here: whitespace and controls, the list
# separator Postfix uses in map results, quotes and the other RFC 5322 specials.
_BAD_LOCAL = re.compile(r"[\s\x00-\x1f\x7f,\"'<>()\[\]\\;:@`]")
_BAD_DOMAIN_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_HOSTLIKE = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")


class AddressError(ValueError):
    """Input that is not a usable address, domain or site; the message says why."""


@dataclass(frozen=True)
class Address:
    local: str  # normalised, extension removed
    domain: str  # normalised ASCII form
    extension: str | None = None

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


@functools.lru_cache(maxsize=4096)
def normalize_domain(text: str) -> str:
    """Lower-case ASCII form of a domain; Unicode (IDN) names become ``xn--`` labels.
    Cached: bulk imports and lookups see the same few domains over and over."""
    raw = (text or "").strip().rstrip(".")
    if not raw:
        raise AddressError("the domain is empty")
    if _BAD_DOMAIN_CHARS.search(raw):
        raise AddressError(f"the domain {raw!r} contains whitespace or control characters")
    try:
        ascii_form = raw.lower() if raw.isascii() else idna.encode(raw, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise AddressError(f"the domain {raw!r} is not a valid international name: {exc}") from exc
    ascii_form = ascii_form.lower()
    if len(ascii_form) > MAX_DOMAIN:
        raise AddressError(f"the domain {raw!r} is longer than {MAX_DOMAIN} characters")
    labels = ascii_form.split(".")
    if len(labels) < 2:
        raise AddressError(f"the domain {raw!r} needs at least two labels (like example.net)")
    for label in labels:
        if not _LABEL.match(label):
            raise AddressError(f"the domain {raw!r} has an invalid label {label!r}")
    return ascii_form


def validate_local_part(local: str) -> str:
    """Return the lower-cased local part or raise AddressError saying what is wrong."""
    if not local:
        raise AddressError("the part before @ is empty")
    bad = _BAD_LOCAL.search(local)
    if bad:
        char = bad.group()
        shown = {" ": "a space", "\t": "a tab", ",": "a comma", '"': "a quote", "'": "a quote"}
        what = shown.get(char) or (
            "a control character" if ord(char) < 32 or char == "\x7f" else repr(char)
        )
        if char.isspace() and char not in shown:
            what = "whitespace"
        raise AddressError(f"the part before @ must not contain {what}")
    if not local.isascii():
        raise AddressError("the part before @ must be plain ASCII")
    if len(local) > MAX_LOCAL:
        raise AddressError(f"the part before @ is longer than {MAX_LOCAL} characters")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise AddressError("the part before @ must not start or end with a dot or contain '..'")
    return local.lower()


def parse_address(text: str, delimiter: str = "+") -> Address:
    """Parse ``local[+ext]@domain``; the extension is split off when a delimiter is set."""
    raw = (text or "").strip()
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1]
    if "@" not in raw:
        raise AddressError(f"{text!r} is not an address (no @)")
    local, _, domain = raw.rpartition("@")
    local = validate_local_part(local)
    domain = normalize_domain(domain)
    extension = None
    if delimiter and delimiter in local:
        base, _, extension = local.partition(delimiter)
        if base:
            local = base
        else:
            extension = None
    address = Address(local, domain, extension)
    if len(str(address)) > MAX_ADDRESS:
        raise AddressError(f"the address is longer than {MAX_ADDRESS} characters")
    return address


def normalize_address(text: str, delimiter: str = "") -> str:
    """The canonical stored form; with a delimiter the extension is dropped too."""
    return str(parse_address(text, delimiter))


def looks_like_hostname(text: str) -> bool:
    return bool(_HOSTLIKE.match(text)) and len(text) <= MAX_DOMAIN


def site_from_input(text: str) -> str:
    """A site as users type it, a URL or host name, reduced to its host:
    ``https://www.GitHub.com/login`` → ``github.com``."""
    raw = (text or "").strip()
    if not raw:
        raise AddressError("the site is empty")
    if any(c.isspace() or ord(c) < 32 for c in raw):
        raise AddressError("the site must be a web address or host name without spaces")
    candidate = raw if "://" in raw else "//" + raw
    try:
        host = urlsplit(candidate).hostname or ""
    except ValueError as exc:
        raise AddressError(f"{raw!r} is not a web address or host name") from exc
    if not host:
        raise AddressError(f"{raw!r} is not a web address or host name")
    try:
        host = normalize_domain(host)
    except AddressError as exc:
        raise AddressError(f"{raw!r} is not a web address or host name: {exc}") from exc
    if host.startswith("www.") and host.count(".") >= 2:
        host = host[4:]
    if not looks_like_hostname(host):
        raise AddressError(f"{raw!r} is not a web address or host name")
    return host


def domain_of(address: str | None) -> str | None:
    """The normalised domain of an address, or None when there is none (``<>``)."""
    if not address or "@" not in address:
        return None
    try:
        return normalize_domain(address.rpartition("@")[2].strip().rstrip(">"))
    except AddressError:
        return None


def registrable_domain(domain: str | None) -> str | None:
    """The registrable domain (public suffix + one label) from the Public Suffix List:
    ``mail.dhl.de`` → ``dhl.de``, ``shop.co.uk`` → ``shop.co.uk``, ``me.github.io`` →
    ``me.github.io``. A name that is itself a public suffix (``co.uk``) or an IP literal
    is its own identity; input that is no domain at all gives None."""
    if not domain:
        return None
    raw = domain.strip().strip("[]").rstrip(".")
    try:
        return str(ipaddress.ip_address(raw.removeprefix("IPv6:").removeprefix("ipv6:")))
    except ValueError:
        pass
    try:
        name = normalize_domain(raw)
    except AddressError:
        return None
    return _public_suffixes().privatesuffix(name) or name


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # The package ships a dated snapshot of the list: no network at run time.
    return PublicSuffixList()


def load_public_suffixes() -> None:
    """Read the Public Suffix List now (about 0.1 s), not at the first lookup: a server
    that forks workers reads it once, before the fork, and no first message waits."""
    _public_suffixes()


# Values longer than this are parsed every time, never kept (a hostile header must not
# fill the memory).
_ADDRESSES_KEPT_UP_TO = 2000


def header_addresses(value: str) -> tuple[tuple[str, str], ...]:
    """The (display name, address) pairs of an address header's value, as
    ``email.utils.getaddresses`` reads them; () for one it cannot read. The mail path
    asks for the same From: several times per message (the block decision, the reply
    headers, DMARC, the event): parsed once, remembered for the next asks."""
    if len(value) > _ADDRESSES_KEPT_UP_TO:
        return _header_addresses(value)
    return _kept_header_addresses(value)


def _header_addresses(value: str) -> tuple[tuple[str, str], ...]:
    try:
        return tuple(email.utils.getaddresses([value]))
    except Exception:  # noqa: BLE001 - a garbled header simply holds no address
        return ()


_kept_header_addresses = functools.lru_cache(maxsize=4096)(_header_addresses)
