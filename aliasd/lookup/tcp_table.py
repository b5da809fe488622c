"""The tcp_table protocol (Postfix ``tcp:`` tables), sans-IO.

Request: ``get <key>\\n``; reply ``200 <value>\\n`` (found), ``500 <text>\\n`` (not found)
or ``400 <text>\\n`` (temporary error). Keys and values are ``%XX``-encoded both ways for
``%``, whitespace and non-printable bytes. Postfix reads replies of at most 4096 bytes: a
value that does not fit is answered 400, never truncated."""

from __future__ import annotations

import re

from aliasd.core.decision import Decision, LookupOutcome

MAX_REPLY = 4096  # including the status code and the newline
MAX_REQUEST = 4096

NOTFOUND_REPLY = b"500 not found\n"

_HEX_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
# What Postfix's hex_quote() escapes: '%', space, controls, DEL and non-ASCII bytes.
_NEEDS_QUOTE = re.compile(rb"[\x00-\x20%\x7f-\xff]")


class TcpRequestError(ValueError):
    """A request line that is not ``get <key>`` or has a broken %XX escape."""


def quote(value: bytes) -> bytes:
    return _NEEDS_QUOTE.sub(lambda m: b"%%%02X" % m.group()[0], value)


def unquote(value: bytes) -> bytes:
    if b"%" not in value:
        return value
    # A '%' that is not part of a valid escape ("%4", "%zz") makes the key unreadable.
    if b"%" in _HEX_ESCAPE.sub(b"", value):
        raise TcpRequestError("broken %XX escape in request")
    return _HEX_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), value)


def parse_request(line: bytes) -> str:
    """``b"get a%40b\\n"`` (newline already removed) → ``"a@b"``."""
    if line.endswith(b"\r"):
        line = line[:-1]
    command, sep, key = line.partition(b" ")
    if command.lower() != b"get" or not sep:
        raise TcpRequestError("only 'get <key>' is supported")
    return unquote(key).decode("utf-8", "surrogateescape")


def _text(reason: str) -> bytes:
    return quote(" ".join(reason.split()).encode("utf-8", "replace")[:512]) or b"error"


def format_reply(decision: Decision) -> bytes:
    outcome = decision.outcome
    if outcome is LookupOutcome.NOTFOUND:
        return NOTFOUND_REPLY
    if outcome is LookupOutcome.FOUND:
        reply = b"200 " + quote(decision.value.encode("utf-8", "surrogateescape")) + b"\n"
        if len(reply) > MAX_REPLY:
            return b"400 value too long for a tcp_table reply\n"
        return reply
    # TEMP and PERM alike: tcp_table has no word for a permanent error.
    return error_reply(decision.value)


def error_reply(reason: str) -> bytes:
    return b"400 " + _text(reason) + b"\n"
