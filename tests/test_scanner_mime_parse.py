"""The scanner's MIME parse reads every message exactly as the standard library's
parser does (the same headers, payloads, defects and structure), whatever the input:
ordinary mail, broken mail and the hostile corpus (as far as the scanner reads it)."""

from __future__ import annotations

import functools
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

import pytest

from aliasd.scanner import filerules
from aliasd.scanner.message import parse_input, parse_message, parse_mime
from tests.harness.hostile_mail import hostile_corpus

MAIL = Path(__file__).parent / "data" / "mail"

EDGE_CASES = {
    "LF": b"From: a@b.example\nSubject: hi\n\nbody line 1\nline 2\n",
    "CRLF": b"From: a@b.example\r\nSubject: hi\r\n\r\nbody\r\n\r\nmore\r\n",
    "mixed line ends": b"From: a@b.example\r\nSubject: hi\n\r\nbody\n\nafter\n",
    "bare CR blank line": b"From: a@b.example\r\rSubject: x\n\nbody\n",
    "no body": b"From: a@b.example\nSubject: hi\n",
    "empty body": b"From: a@b.example\n\n",
    "no headers": b"\nonly a body\n",
    "mbox From line": b"From sender@example.org Mon Jan  1 00:00:00 2024\nFrom: a@b.example\n\nbody\n",
    "continuation line first": b"  folded\nFrom: a@b.example\n\nbody\n",
    "not a header line": b"From: a@b.example\nthis is not a header\nSubject: x\n\nbody\n",
    "folded header": b"Subject: one\n two\n\tthree\nFrom: a@b.example\n\nbody\n",
    "8-bit header and body": "Subject: caf\u00e9\nFrom: a@b.example\n\nna\u00efve \u00fcber\n".encode(),
    "latin-1 bytes": b"Subject: \xe9t\xe9\nFrom: a@b.example\n\n\xff\xfe body\n",
    "multipart": (b"MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=XX\n\n"
                  b"preamble\n--XX\nContent-Type: text/plain\n\nplain\n--XX\nContent-Type: text/html\n\n"
                  b"<p>html</p>\n--XX--\nepilogue\n"),
    "multipart without boundary": b"Content-Type: multipart/mixed\n\nbody\n",
    "message/rfc822": (b"Content-Type: message/rfc822\n\nFrom: inner@b.example\nSubject: inner\n\ninner body\n"),
    "text with a blank line in the headers' place": b"Content-Type: text/plain\n\n\n\nbody after blank lines\n",
    "header without a colon after a blank": b"From: a@b.example\n\nX-Not: a header\n",
    "NUL bytes": b"From: a@b.example\nSubject: \x00x\n\nbo\x00dy\n",
}


def fingerprint(msg: Message) -> list:
    """What the scanner reads of a message, part by part."""
    out = []
    for part in msg.walk():
        out.append((
            part.get_unixfrom(),
            list(part.raw_items()),
            [type(d).__name__ for d in part.defects],
            part.is_multipart(),
            None if part.is_multipart() else part.get_payload(),
            part.preamble,
            part.epilogue,
            part.get_content_type(),
        ))
    return out


@functools.cache
def samples() -> dict[str, bytes]:
    found = {f"edge: {k}": v for k, v in EDGE_CASES.items()}
    found.update({f"mail: {p.name}": p.read_bytes() for p in sorted(MAIL.glob("*.eml"))})
    found.update({f"hostile: {k}": v for k, v in hostile_corpus().items()})
    return found


@pytest.mark.parametrize("name", sorted(samples()))
def test_the_parse_is_the_standard_librarys(name):
    raw = parse_input(samples()[name])  # the prefix the scanner parses (MIME bombs cut)
    assert fingerprint(parse_mime(raw)) == fingerprint(BytesParser(policy=compat32).parsebytes(raw))


def test_a_message_with_crlf_line_ends_reads_as_the_same_message_with_lf():
    """Mail through the milter ends its lines in CRLF, stored mail in LF: the scanner reads
    the same parts, text, markup and links either way (as SpamAssassin squashes CRLF), and
    keeps the raw message as it came."""
    messages = [
        (b"From: a@b.example\nSubject: hi\nMIME-Version: 1.0\n"
         b"Content-Type: multipart/alternative; boundary=XX\n\n--XX\nContent-Type: text/plain\n\n"
         b"Dear Friend,\n\nsee http://shop.example/a\n--XX\nContent-Type: text/html\n\n"
         b"<p>x</p>\n<a href=\"http://shop.example/b\"><img src=a.gif></a>\nab12cd34ef56gh78ij90kl12mn34\n"
         b"--XX--\n"),
        b"From: a@b.example\nSubject: hi\nContent-Type: text/html\n\n<b>one</b>\n<i>two</i>$\n",
        *(path.read_bytes().replace(b"\r\n", b"\n") for path in sorted(MAIL.glob("*.eml"))[:10]),
    ]
    for lf in messages:
        crlf = lf.replace(b"\n", b"\r\n")
        a, b = parse_message(lf), parse_message(crlf)
        assert b.raw == crlf
        assert (a.text, a.text_plain, a.html_raw, a.html_raw_len, a.url_hosts, a.url_paths, a.subject) == (
            b.text, b.text_plain, b.html_raw, b.html_raw_len, b.url_hosts, b.url_paths, b.subject)
        texts_a, texts_b = filerules.texts(a), filerules.texts(b)
        assert {k: v for k, v in texts_a.items() if k != "full"} == {k: v for k, v in texts_b.items() if k != "full"}
