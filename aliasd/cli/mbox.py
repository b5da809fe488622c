"""Messages of an mbox file, split only at lines that are mbox separators.

Python's ``mailbox.mbox`` starts a new message at every line beginning with "From ", so
an unescaped body line such as "From the desk of ..." cuts a message in two (mboxcl2
writers and many exports leave such lines unescaped). As mutt does, a separator here is a
"From " line that also carries the delivery date: a month name, a time and a year."""

from __future__ import annotations

import re
from pathlib import Path

_MONTH = rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_SEPARATOR = re.compile(
    rb"From \S*[ \t]+"  # the envelope sender; "-" or empty where the writer had none
    rb"(?=.*\b" + _MONTH + rb"\b)"
    rb"(?=.*\b\d{1,2}:\d{2}(?::\d{2})?\b)"
    rb"(?=.*\b(?:19|20)\d{2}\b)"
)


def is_separator(line: bytes) -> bool:
    """True when ``line`` starts a message in an mbox file."""
    return line.startswith(b"From ") and _SEPARATOR.match(line) is not None


def starts_as_mbox(path: Path) -> bool:
    """True when the file's first line is an mbox separator."""
    try:
        with path.open("rb") as fh:
            return is_separator(fh.readline(1024))
    except OSError:
        return False


def message_spans(path: Path) -> list[tuple[int, int]]:
    """(start, stop) byte offsets of each message, its separator line excluded, and the
    blank line that ends it in the file too. Raises OSError when the file cannot be read."""
    spans: list[tuple[int, int]] = []
    start = -1
    pos = 0
    blank = 0  # length of the blank line just read, which belongs to the file, not the message
    with path.open("rb") as fh:
        for line in fh:
            if is_separator(line):
                if start >= 0:
                    spans.append((start, pos - blank))
                start = pos + len(line)
                blank = 0
            else:
                blank = len(line) if line in (b"\n", b"\r\n") else 0
            pos += len(line)
    if start >= 0:
        spans.append((start, pos - blank))
    return spans


def read_span(path: Path, span: tuple[int, int]) -> bytes:
    start, stop = span
    with path.open("rb") as fh:
        fh.seek(start)
        return fh.read(max(0, stop - start))
