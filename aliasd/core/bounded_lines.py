"""Reading imported files line by line in bounded memory.

A file may hold a line of a gigabyte (a broken export, or a hostile upload). Lines are
read in fixed-size chunks; one longer than the limit is never assembled: its first
bytes are kept to quote in the report and the rest is counted and dropped. Postfix's
own ``header_size_limit`` (102400 bytes) is the guide: cleanup never hands a longer
header to header_checks, and no virtual(5) entry needs more (an address is at most 254
bytes, so the limit leaves room for hundreds of destinations)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

MAX_LINE_BYTES = 102_400
QUOTE_CHARS = 100  # error messages quote at most this much of the offending text
_CHUNK = 64 * 1024


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` shortened for an error message: at most ``limit`` characters, control
    characters shown escaped, an ellipsis when cut."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


@dataclass(frozen=True)
class OverlongLine:
    """A line over the limit: skipped, reported with its number and first bytes."""

    number: int
    length: int  # bytes, without the newline
    head: bytes  # the first bytes, for the message
    limit: int = MAX_LINE_BYTES

    @property
    def reason(self) -> str:
        start = clip(self.head.decode("utf-8", "replace"))
        return (
            f"the line is {self.length} bytes long, over the limit of {self.limit} "
            f"(Postfix's header_size_limit); skipped: {start}"
        )


def read_lines(
    stream: BinaryIO, max_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes | OverlongLine]]:
    """Yield ``(line number, bytes without the newline)`` per physical line; an
    ``OverlongLine`` instead of the bytes for a line longer than ``max_bytes``. Only
    newline ends a line: a carriage return is an ordinary byte, as for Postfix."""
    number = 0
    buf = bytearray()
    overlong = -1  # the length so far of a line being dropped, or -1
    head = b""
    while chunk := stream.read(_CHUNK):
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            end = newline if newline >= 0 else len(chunk)
            if overlong >= 0:
                overlong += end - start
            else:
                buf += chunk[start:end]
                if len(buf) > max_bytes:
                    overlong, head = len(buf), bytes(buf[: QUOTE_CHARS * 4])
                    buf = bytearray()
            if newline < 0:
                break
            number += 1
            if overlong >= 0:
                yield number, OverlongLine(number, overlong, head, max_bytes)
            else:
                yield number, bytes(buf)
            buf, overlong, head = bytearray(), -1, b""
            start = newline + 1
    if buf or overlong >= 0:
        number += 1
        yield number, (OverlongLine(number, overlong, head, max_bytes) if overlong >= 0 else bytes(buf))


class TextLines:
    """The lines of a binary stream as text, for parsers that take ``Iterable[str]``:
    overlong lines become empty lines (line numbers stay right) and are kept in
    ``overlong``; undecodable bytes are kept as surrogates (``surrogateescape``) so
    the parser can report that one line; a UTF-8 byte-order mark is dropped."""

    def __init__(self, stream: BinaryIO, max_bytes: int = MAX_LINE_BYTES) -> None:
        self.stream = stream
        self.max_bytes = max_bytes
        self.overlong: list[OverlongLine] = []

    def __iter__(self) -> Iterator[str]:
        for number, data in read_lines(self.stream, self.max_bytes):
            if isinstance(data, OverlongLine):
                self.overlong.append(data)
                yield "\n"
                continue
            if number == 1 and data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            yield data.decode("utf-8", "surrogateescape") + "\n"
