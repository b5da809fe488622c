"""Who sent a message, as the block decision sees it: the envelope sender and the
header lines Postfix's header_checks would look at (From:, Reply-To:, ...)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from aliasd.core.addresses import AddressError, header_addresses, normalize_domain


def sender_domain_of(address: str | None) -> str | None:
    if not address:
        return None
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    domain = text.rpartition("@")[2]
    if not domain or domain.startswith("["):
        return None
    try:
        return normalize_domain(domain)
    except AddressError:
        return None


def sender_address_of(address: str | None) -> str | None:
    text = (address or "").strip().strip("<>").strip().lower()
    return text if "@" in text else None


@dataclass(frozen=True)
class Sender:
    """Who a message is from, as far as blocks care."""

    envelope: str = ""  # MAIL FROM without <>; "" for the null sender
    header_lines: tuple[str, ...] = ()  # logical "Name: value" lines, as header_checks sees them
    from_address: str | None = None  # the first address of From:

    @classmethod
    def of_message(cls, envelope: str, headers: Iterable[tuple[str, str | bytes]]) -> Sender:
        lines = []
        from_address = None
        for name, value in headers:
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            text = text.replace("\r\n", "\n").lstrip(" \t")
            lines.append(f"{name}: {text}")
            if from_address is None and name.lower() == "from":
                from_address = _first_address(text)
        return cls(envelope=envelope or "", header_lines=tuple(lines), from_address=from_address)

    @classmethod
    def of_raw_message(cls, envelope: str, raw: bytes) -> Sender:
        return cls.of_message(envelope, split_headers(raw))

    @classmethod
    def of_domain(cls, domain: str) -> Sender:
        """A sender known only by its domain (the report's rows): judged as the
        sender_access map judges MAIL FROM, plus per-user and per-alias domain blocks."""
        return cls(envelope="@" + domain)

    @property
    def envelope_domain(self) -> str | None:
        return sender_domain_of(self.envelope)

    @property
    def from_domain(self) -> str | None:
        return sender_domain_of(self.from_address)


def _first_address(text: str) -> str | None:
    for _name, addr in header_addresses(text):
        found = sender_address_of(addr)
        if found:
            return found
    return None


def split_headers(raw: bytes, limit: int = 1_000_000) -> list[tuple[str, bytes]]:
    """The header section of a raw message as (name, value) pairs, continuation lines
    kept (joined by a newline). Lines without a colon are skipped, as Postfix does not
    treat them as headers either."""
    head = raw[:limit]
    end = re.search(rb"\r?\n\r?\n", head)
    if end is not None:
        head = head[: end.start()]
    headers: list[tuple[str, bytes]] = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + b"\n" + line)
            continue
        name, colon, value = line.partition(b":")
        if colon and name and not name[-1:].isspace():
            headers.append((name.decode("latin-1"), value.lstrip(b" \t")))
    return headers
