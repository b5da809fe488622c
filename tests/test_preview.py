"""The review pages' preview of a held message (aliasd.core.preview): the readable text,
decoded, sanitised and cut, the same whichever shortcut computes it."""

from __future__ import annotations

from aliasd.core.preview import text_preview

MIXED = (b"From: a@b.example\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
         b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\n'
         b"--XX\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
         b"<p>Hello</p><script>alert(1)</script><div>there &amp; here</div>\r\n"
         b"--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
         b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
         b"Gr=FC=DFe\tund\x07 Tsch=FCss\r\n\r\n\r\n\r\nEnde\r\n"
         b"--XX\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\n"
         b"not this\r\n--XX--\r\n")


def test_the_first_text_part_decoded_in_its_charset_without_control_characters():
    # CR and the bell go, the tab stays, three or more line ends become two
    assert text_preview(MIXED) == "Grüße\tund Tschüss\n\nEnde"
    assert text_preview(MIXED, limit=5) == "Grüße"


def test_html_alone_becomes_its_text_without_script():
    html_only = MIXED.replace(b"text/plain; charset=iso-8859-1", b"application/octet-stream")
    assert text_preview(html_only) == "Hello\nthere & here"


def test_a_long_text_is_cut_the_same_as_cleaned_whole():
    body = ("line\x00 of text\r\n" * 2000).encode()
    raw = b"Subject: long\r\nContent-Type: text/plain\r\n\r\n" + body
    assert text_preview(raw) == ("line of text\n" * 2000)[:2000]
    assert text_preview(raw, limit=30) == "line of text\nline of text\nline"
