"""The socketmap protocol (Postfix ``socketmap:`` tables), sans-IO.

Request: netstring ``<name> <key>``. Reply: netstring ``OK <value>``, ``NOTFOUND ``,
``TEMP <reason>`` or ``PERM <reason>``. Postfix refuses a bare ``OK`` and replies longer
than 100000 bytes; a value that does not fit is answered TEMP, never truncated."""

from __future__ import annotations

from aliasd.core.decision import Decision, LookupOutcome
from aliasd.lookup.netstring import encode

MAX_REPLY = 100_000  # Postfix's socketmap_max_reply default
MAX_REQUEST = 100_000

NOTFOUND_REPLY = encode(b"NOTFOUND ")


class SocketmapRequestError(ValueError):
    """A request payload without ``name key`` structure."""


def parse_request(payload: bytes) -> tuple[str, str]:
    """``b"virtual a@b"`` → ``("virtual", "a@b")``. The key may contain spaces."""
    name, sep, key = payload.partition(b" ")
    if not sep or not name:
        raise SocketmapRequestError("socketmap request is not '<name> <key>'")
    # Keys from SMTPUTF8 clients may be any bytes; undecodable ones simply do not match.
    return name.decode("ascii", "replace"), key.decode("utf-8", "surrogateescape")


def _clean(reason: str) -> bytes:
    text = " ".join(reason.split()) or "error"
    return text.encode("utf-8", "replace")[:512]


def format_reply(decision: Decision) -> bytes:
    """The full netstring for a decision, within Postfix's reply limit."""
    outcome = decision.outcome
    if outcome is LookupOutcome.NOTFOUND:
        return NOTFOUND_REPLY
    if outcome is LookupOutcome.FOUND:
        body = b"OK " + decision.value.encode("utf-8", "surrogateescape")
        if len(body) > MAX_REPLY:
            body = b"TEMP value too long for a socketmap reply"
        return encode(body)
    word = b"TEMP " if outcome is LookupOutcome.TEMP else b"PERM "
    return encode(word + _clean(decision.value))


def error_reply(reason: str) -> bytes:
    """Answer to a request we could not parse (before the connection is closed)."""
    return encode(b"PERM " + _clean(reason))
